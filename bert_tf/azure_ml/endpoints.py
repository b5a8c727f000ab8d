"""`submit.py deploy`: a bert_tf export served on an Azure ML managed online endpoint
(ManagedOnlineEndpoint + ManagedOnlineDeployment running azure/scoring/score.py).

The model is a folder export_model.py wrote (SavedModel + serving_info.json), uploaded as the
deployment's model; the code is azure/scoring/ (score.py: init()/run() for Azure's inference
server); the environment is Azure's Ubuntu base image plus a conda file with TensorFlow,
tensorflow-text and azureml-inference-server-http. Everything is checked before the SDK is
imported: the export, the names Azure accepts, the instance type and whether the model fits in
its memory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

from bert_tf.azure_ml import REPO
from bert_tf.errors import UsageError

SCORING_DIR = REPO / "azure" / "scoring"
BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
TF_VERSION = "2.18.1"  # the version the export was written and tested with
SERVER = "azureml-inference-server-http==1.5.1"

# Managed online endpoint instance types (learn.microsoft.com/azure/machine-learning/
# reference-managed-online-endpoints-vm-sku-list) and their memory in GiB (the Azure VM size
# pages). GPU types get TensorFlow with CUDA.
INSTANCE_MEMORY_GIB = {
    "Standard_DS1_v2": 3.5, "Standard_DS2_v2": 7, "Standard_DS3_v2": 14, "Standard_DS4_v2": 28,
    "Standard_DS5_v2": 56,
    "Standard_F2s_v2": 4, "Standard_F4s_v2": 8, "Standard_F8s_v2": 16, "Standard_F16s_v2": 32,
    "Standard_F32s_v2": 64, "Standard_F48s_v2": 96, "Standard_F64s_v2": 128,
    "Standard_F72s_v2": 144,
    "Standard_D2as_v4": 8, "Standard_D4as_v4": 16, "Standard_D8as_v4": 32,
    "Standard_D16as_v4": 64, "Standard_D32as_v4": 128,
    "Standard_E2s_v3": 16, "Standard_E4s_v3": 32, "Standard_E8s_v3": 64, "Standard_E16s_v3": 128,
    "Standard_E32s_v3": 256,
    "Standard_NC4as_T4_v3": 28, "Standard_NC8as_T4_v3": 56, "Standard_NC16as_T4_v3": 110,
    "Standard_NC64as_T4_v3": 440,
    "Standard_NC24ads_A100_v4": 220, "Standard_NC48ads_A100_v4": 440,
    "Standard_NC96ads_A100_v4": 880,
}
GPU_PREFIX = "standard_n"

# What a worker needs besides the weights: TensorFlow and the server (~1 GiB), and for the
# weights, the loaded variables plus the copies restoring makes and a batch's activations.
RUNTIME_GIB = 1.0
WEIGHT_COPIES = 4
SYSTEM_GIB = 1.0  # what the node's OS and Azure's agents keep

_ENDPOINT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]")
_DEPLOYMENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]")


@dataclasses.dataclass
class DeployPlan:
    """A deployment, checked: what `entities` builds."""
    model_dir: Path
    info: dict
    weights_bytes: int
    endpoint_name: str
    deployment_name: str
    instance_type: str
    instance_count: int
    request_timeout_ms: int

    @property
    def gpu(self) -> bool:
        return self.instance_type.lower().startswith(GPU_PREFIX)

    def describe(self) -> list[str]:
        what = self.info.get("task_name") or self.info.get("model")
        labels = self.info.get("labels")
        return [f"model: {self.model_dir} ({what}{', labels ' + ', '.join(labels) if labels else ''}"
                f"; {self.weights_bytes / 2**20:.0f} MiB of weights)",
                f"endpoint {self.endpoint_name}, deployment {self.deployment_name}: "
                f"{self.instance_count} x {self.instance_type} "
                f"({INSTANCE_MEMORY_GIB.get(self.instance_type, '?')} GiB each, "
                f"{required_gib(self.weights_bytes):.1f} GiB needed)",
                f"scoring script: {SCORING_DIR / 'score.py'}; image {BASE_IMAGE} + TensorFlow "
                f"{TF_VERSION}{' with CUDA' if self.gpu else ' (CPU)'}"] + self._chains_note()

    def _chains_note(self) -> list[str]:
        chains = self.info.get("parallel_chains") or 1
        if self.gpu and chains > 1:
            return [f"note: the export is cut into {chains} parallel chains for CPU cores; on a "
                    "GPU one chain is faster (export_model.py --parallel_chains=1)"]
        return []


def required_gib(weights_bytes: int) -> float:
    """Memory one worker needs for a model of `weights_bytes` (an estimate: RUNTIME_GIB plus
    WEIGHT_COPIES times the weights)."""
    return RUNTIME_GIB + WEIGHT_COPIES * weights_bytes / 2**30


def check_model(path: str | None) -> tuple[Path, dict, int]:
    """--model: a bert_tf SavedModel export -> (folder, serving_info, weight bytes)."""
    if not path:
        raise UsageError("--model is required: the folder export_model.py (or a run's "
                         "--export=saved_model) wrote")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UsageError(f"--model {path}: no such folder (export a run first: python "
                         "export_model.py --model_dir=OUTPUT_DIR --export_dir=...)")
    info_file = folder / "serving_info.json"
    if not (folder / "saved_model.pb").is_file() or not info_file.is_file():
        raise UsageError(f"--model {path}: not a bert_tf SavedModel export (needs saved_model.pb "
                         "and serving_info.json; an ONNX export is not served by this script)")
    try:
        info = json.loads(info_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"--model {path}: serving_info.json is not valid JSON ({e}): export "
                         "the model again") from None
    weights = sum(f.stat().st_size for f in (folder / "variables").glob("*") if f.is_file())
    return folder.resolve(), info, weights


def check_instance(instance_type: str, weights_bytes: int) -> str:
    """The instance type, spelled as Azure lists it; UsageError when unknown or too small."""
    by_key = {name.lower(): name for name in INSTANCE_MEMORY_GIB}
    name = by_key.get(instance_type.strip().lower())
    if name is None:
        raise UsageError(f"--instance_type {instance_type}: not a managed online endpoint "
                         f"instance type this tool knows ({', '.join(INSTANCE_MEMORY_GIB)})")
    need, have = required_gib(weights_bytes), INSTANCE_MEMORY_GIB[name] - SYSTEM_GIB
    if need > have:
        bigger = next((n for n, gib in sorted(INSTANCE_MEMORY_GIB.items(), key=lambda x: x[1])
                       if gib - SYSTEM_GIB >= need and not n.lower().startswith(GPU_PREFIX)),
                      "none of the CPU types: the model is too big for one instance")
        raise UsageError(f"--instance_type {name}: {INSTANCE_MEMORY_GIB[name]:g} GiB is too little "
                         f"for this model ({weights_bytes / 2**20:.0f} MiB of weights need about "
                         f"{need:.1f} GiB besides the {SYSTEM_GIB:g} GiB the node keeps): use "
                         f"{bigger} or larger")
    return name


def plan_deployment(args) -> DeployPlan:
    folder, info, weights = check_model(args.model)
    if not _ENDPOINT_NAME.fullmatch(args.endpoint_name or ""):
        raise UsageError(f"--endpoint_name {args.endpoint_name!r}: 3 to 32 letters, digits and "
                         "hyphens, starting with a letter (unique in the Azure region)")
    if not _DEPLOYMENT_NAME.fullmatch(args.deployment_name or ""):
        raise UsageError(f"--deployment_name {args.deployment_name!r}: 3 to 32 letters, digits "
                         "and hyphens, starting with a letter")
    if args.instance_count < 1:
        raise UsageError(f"--instance_count {args.instance_count}: give 1 or more (Azure "
                         "recommends 3 for production)")
    if not 1000 <= args.request_timeout_ms <= 180000:
        raise UsageError(f"--request_timeout_ms {args.request_timeout_ms}: Azure allows 1000 "
                         "to 180000")
    return DeployPlan(folder, info, weights, args.endpoint_name, args.deployment_name,
                      check_instance(args.instance_type, weights), args.instance_count,
                      args.request_timeout_ms)


def route_traffic(traffic: dict, deployment: str, percent: int) -> dict:
    """The endpoint's traffic with `percent` to `deployment` and the rest shared by the other
    deployments in their present proportions (Azure wants a total of 100). UsageError when
    less than 100 is asked and no other deployment takes the rest."""
    others = {name: share for name, share in traffic.items() if name != deployment and share}
    if percent == 100 or (not others and percent == 0):
        return {deployment: percent} if percent else {}
    if not others:
        raise UsageError(f"--traffic {percent}: no other deployment of the endpoint takes the "
                         f"other {100 - percent}%: deploy with --traffic 100 first")
    rest, total = 100 - percent, sum(others.values())
    out = {name: rest * share // total for name, share in others.items()}
    first = next(iter(out))
    out[first] += rest - sum(out.values())  # the rounding
    out[deployment] = percent
    return out


def conda_environment(gpu: bool) -> dict:
    # tensorflow (not tensorflow-cpu): tensorflow-text depends on it, and both would install.
    tensorflow = f"tensorflow[and-cuda]=={TF_VERSION}" if gpu else f"tensorflow=={TF_VERSION}"
    return {"name": "bert-tf-serving", "channels": ["conda-forge"],
            "dependencies": ["python=3.11", "pip", {"pip": [
                tensorflow, f"tensorflow-text=={TF_VERSION}", SERVER]}]}


def entities(plan: DeployPlan, code_path: str | os.PathLike | None = None):
    """(ManagedOnlineEndpoint, ManagedOnlineDeployment) of the plan. code_path: where the
    deployment's YAML will say azure/scoring is (relative to the YAML's folder), else the
    absolute path."""
    from azure.ai.ml.entities import (CodeConfiguration, Environment, ManagedOnlineDeployment,
                                      ManagedOnlineEndpoint, Model, OnlineRequestSettings)

    endpoint = ManagedOnlineEndpoint(
        name=plan.endpoint_name, auth_mode="key",
        description="bert_tf model served with azure/scoring/score.py",
        tags={"bert_tf_task": str(plan.info.get("task_name") or plan.info.get("model"))})
    deployment = ManagedOnlineDeployment(
        name=plan.deployment_name, endpoint_name=plan.endpoint_name,
        model=Model(path=str(plan.model_dir), type="custom_model",
                    name=f"{plan.endpoint_name}-model",
                    description=json.dumps({k: plan.info.get(k) for k in
                                            ("task_name", "labels", "max_seq_length")})),
        code_configuration=CodeConfiguration(code=str(code_path or SCORING_DIR),
                                             scoring_script="score.py"),
        environment=Environment(image=BASE_IMAGE, conda_file=conda_environment(plan.gpu),
                                name="bert-tf-serving"),
        instance_type=plan.instance_type, instance_count=plan.instance_count,
        request_settings=OnlineRequestSettings(request_timeout_ms=plan.request_timeout_ms),
        environment_variables={"TF_CPP_MIN_LOG_LEVEL": "2"})
    return endpoint, deployment


def endpoint_yaml(endpoint) -> str:
    """The endpoint's YAML (ManagedOnlineEndpoint.dump writes no file: its dict is dumped)."""
    import yaml

    return yaml.safe_dump(json.loads(json.dumps(endpoint._to_dict())), sort_keys=False)


def deployment_yaml(deployment) -> str:
    import io

    buffer = io.StringIO()
    deployment.dump(buffer)
    return buffer.getvalue()
