"""azure/submit.py deploy: a bert_tf export on an Azure ML managed online endpoint. The dry
run's YAML is read back by the SDK's own loaders; creation is checked against a fake client;
bad input is one line, exit 2. No test reaches the network (the sockets of azure/submit.py's
tests refuse here too). The scoring script itself: tests/test_scoring.py."""

import types
from pathlib import Path

import pytest

from bert_tf import azure_ml
from bert_tf.azure_ml import cli
from tests.conftest import REPO
from tests.test_azure_submit import (FAKE_SUBSCRIPTION, _network_refused,  # noqa: F401
                                     no_network, run, sitecustomize_dir)


def fake_export(folder: Path, weight_bytes: int = 90_000_000, task="MRPC", **info) -> Path:
    """The files deploy reads of an export (serving_info.json, saved_model.pb, variables/),
    the weights a sparse file of the given size."""
    import json

    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"\0")
    with open(folder / "variables" / "variables.data-00000-of-00001", "wb") as f:
        f.truncate(weight_bytes)
    (folder / "serving_info.json").write_text(json.dumps({
        "model": "classifier", "task_name": task, "labels": ["0", "1"], "pair_task": True,
        "max_seq_length": 128, "do_lower_case": True, **info}))
    return folder


def test_deploy_dry_run_yaml_loads_back_with_the_sdk(tmp_path, capsys, monkeypatch):
    from azure.ai.ml import load_online_deployment, load_online_endpoint

    export = fake_export(tmp_path / "export")
    out = tmp_path / "yaml"
    status = cli.main(["deploy", "--model", str(export), "--endpoint_name", "mrpc-bert",
                       "--deployment_name", "green", "--instance_type", "standard_f4s_v2",
                       "--instance_count", "2", "--request_timeout_ms", "9000",
                       "--dry-run", str(out)])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "nothing created" in printed and "2 x Standard_F4s_v2 (8 GiB each" in printed
    elsewhere = tmp_path / "elsewhere"  # loading does not depend on the working folder
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    endpoint = load_online_endpoint(str(out / "endpoint.yml"))
    deployment = load_online_deployment(str(out / "deployment.yml"))
    assert endpoint.name == "mrpc-bert" and endpoint.auth_mode == "key"
    assert endpoint.tags == {"bert_tf_task": "MRPC"}
    assert (deployment.name, deployment.endpoint_name) == ("green", "mrpc-bert")
    assert deployment.instance_type == "Standard_F4s_v2" and deployment.instance_count == 2
    assert deployment.request_settings.request_timeout_ms == 9000
    assert Path(deployment.model.path) == export.resolve()
    code = Path(deployment.base_path) / deployment.code_configuration.code
    assert code.resolve() == (REPO / "azure" / "scoring").resolve()
    assert deployment.code_configuration.scoring_script == "score.py"
    assert (code / "score.py").is_file()
    assert deployment.environment.image.startswith("mcr.microsoft.com/azureml/")
    pip = deployment.environment.conda_file["dependencies"][-1]["pip"]
    assert "tensorflow==2.18.1" in pip and "tensorflow-text==2.18.1" in pip
    assert any(p.startswith("azureml-inference-server-http") for p in pip)


def test_deploy_on_a_gpu_instance_gets_tensorflow_with_cuda(tmp_path, capsys):
    """CUDA TensorFlow on a GPU instance, and a note when the export is cut into chains for
    CPU cores (none for a CPU instance)."""
    from azure.ai.ml import load_online_deployment

    out = tmp_path / "yaml"
    export = fake_export(tmp_path / "e", parallel_chains=2)
    assert cli.main(["deploy", "--model", str(export), "--endpoint_name",
                     "ner-bert", "--instance_type", "Standard_NC4as_T4_v3",
                     "--dry-run", str(out)]) == 0
    pip = load_online_deployment(str(out / "deployment.yml")).environment.conda_file[
        "dependencies"][-1]["pip"]
    assert "tensorflow[and-cuda]==2.18.1" in pip
    assert "2 parallel chains for CPU cores" in capsys.readouterr().out
    assert cli.main(["deploy", "--model", str(export), "--endpoint_name", "ner-bert",
                     "--instance_type", "Standard_F4s_v2", "--dry-run", str(tmp_path / "c")]) == 0
    assert "parallel chains" not in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    ([], "--model is required"),
    (["--model", "{tmp}/none"], "no such folder"),
    (["--model", "{tmp}"], "not a bert_tf SavedModel export"),
    (["--model", "{big}", "--instance_type", "Standard_DS1_v2"],
     "3.5 GiB is too little for this model (3052 MiB of weights need about 12.9 GiB"),
    (["--model", "{export}", "--instance_type", "Standard_Z9"], "not a managed online endpoint "
     "instance type"),
    (["--model", "{export}", "--endpoint_name", "9lives"], "--endpoint_name '9lives'"),
    (["--model", "{export}", "--instance_count", "0"], "--instance_count 0"),
    (["--model", "{export}", "--traffic", "120"], "--traffic 120"),
])
def test_deploy_bad_input_is_one_line_exit_2(tmp_path, capsys, args, message):
    export, big = fake_export(tmp_path / "export"), fake_export(tmp_path / "big", 3_200_000_000)
    argv = ["deploy", "--endpoint_name", "mrpc-bert", "--dry-run", str(tmp_path / "y")]
    if "--endpoint_name" in args:
        argv = ["deploy", "--dry-run", str(tmp_path / "y")]
    status = cli.main(argv + [a.format(tmp=tmp_path, export=export, big=big) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "y").exists()


def test_deploy_too_small_names_a_type_that_fits(tmp_path, capsys):
    big = fake_export(tmp_path / "big", 3_200_000_000)
    assert cli.main(["deploy", "--model", str(big), "--endpoint_name", "big-bert",
                     "--instance_type", "Standard_DS2_v2", "--dry-run", str(tmp_path / "y")]) == 2
    suggestion = capsys.readouterr().err.split("use ")[-1].split()[0]
    assert cli.main(["deploy", "--model", str(big), "--endpoint_name", "big-bert",
                     "--instance_type", suggestion, "--dry-run", str(tmp_path / "y")]) == 0


class _Poller:
    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


class _FakeEndpoints:
    def __init__(self):
        self.sent, self.stored = [], None

    def begin_create_or_update(self, endpoint):
        self.sent.append(endpoint)
        self.stored = endpoint
        endpoint._scoring_uri = f"https://{endpoint.name}.westeurope.inference.ml.azure.com/score"
        return _Poller(endpoint)

    def get(self, name):
        assert self.stored is not None and self.stored.name == name
        return self.stored


class _FakeDeployments:
    def __init__(self):
        self.sent = []

    def begin_create_or_update(self, deployment):
        self.sent.append(deployment)
        return _Poller(deployment)


def test_deploy_creates_the_endpoint_then_the_deployment_then_routes_traffic(
        tmp_path, capsys, monkeypatch):
    for key, value in zip(azure_ml.workspace.WORKSPACE_ENV, (FAKE_SUBSCRIPTION, "rg", "ws")):
        monkeypatch.setenv(key, value)
    client = types.SimpleNamespace(online_endpoints=_FakeEndpoints(),
                                   online_deployments=_FakeDeployments())
    monkeypatch.setattr(azure_ml.commands, "make_client", lambda workspace: client)
    export = fake_export(tmp_path / "export")
    assert cli.main(["deploy", "--model", str(export), "--endpoint_name", "mrpc-bert"]) == 0
    out = capsys.readouterr().out
    first, last = client.online_endpoints.sent[0], client.online_endpoints.sent[-1]
    assert first.name == "mrpc-bert" and last.traffic == {"blue": 100}
    (deployment,) = client.online_deployments.sent
    assert deployment.endpoint_name == "mrpc-bert" and deployment.instance_type == \
        "Standard_DS3_v2"
    assert Path(deployment.code_configuration.code) == REPO / "azure" / "scoring"
    assert Path(deployment.model.path) == export.resolve()
    assert "serves deployment blue (100% of traffic)" in out and "scoring URI: https://" in out
    assert FAKE_SUBSCRIPTION not in out


def test_traffic_is_shared_so_it_adds_up_to_100():
    from bert_tf.azure_ml.endpoints import route_traffic
    from bert_tf.errors import UsageError

    assert route_traffic({}, "blue", 100) == {"blue": 100}
    assert route_traffic({"blue": 100}, "green", 100) == {"green": 100}
    assert route_traffic({"blue": 100}, "green", 20) == {"blue": 80, "green": 20}
    split = route_traffic({"blue": 60, "green": 40}, "red", 10)
    assert split["red"] == 10 and sum(split.values()) == 100 and split["blue"] > split["green"]
    with pytest.raises(UsageError, match="no other deployment"):
        route_traffic({}, "blue", 30)
