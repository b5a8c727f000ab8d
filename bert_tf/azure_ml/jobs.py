"""Command and sweep jobs: built with the SDK from a `JobPlan`, written as the YAML a dry run
shows (and `az ml job create --file` takes), read back by the SDK's loaders."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import tempfile
from pathlib import Path

from bert_tf.errors import UsageError
from bert_tf.azure_ml import ENVIRONMENT_DIR, REPO
from bert_tf.azure_ml.script_flags import flag_words, shell_word


SCHEMAS = {
    "command": "https://azuremlschemas.azureedge.net/latest/commandJob.schema.json",
    "sweep": "https://azuremlschemas.azureedge.net/latest/sweepJob.schema.json",
    "amlcompute": "https://azuremlschemas.azureedge.net/latest/amlCompute.schema.json",
}


SWEEP_TAG = "bert_tf.sweep"


@dataclasses.dataclass
class JobPlan:
    """Everything a job needs, checked, before the SDK is imported."""
    script: str
    flags: list  # [(name, value)] as the job runs them
    inputs: dict  # {name: JobInput}
    compute: str
    instance_count: int
    gpus: int | None
    vm_size: str | None
    experiment_name: str
    display_name: str
    tags: dict
    # A datastore folder for the job's output_dir (train --output_path): a resubmission with
    # the same path finds the checkpoints of a preempted run and resumes. None: a fresh folder.
    output_path: str | None = None

    def command(self, extra_words: tuple = ()) -> str:
        words = ["python", self.script, "--use_horovod",
                 *(shell_word(w) for w in flag_words(self.flags)), *extra_words,
                 "--output_dir=${{outputs.output_dir}}"]
        return " ".join(words)


def _sdk_inputs(plan: JobPlan) -> dict:
    from azure.ai.ml import Input

    return {name: Input(type=i.type, path=i.path) for name, i in plan.inputs.items()}


def _trial_parts(plan: JobPlan) -> dict:
    from azure.ai.ml import MpiDistribution
    from azure.ai.ml.entities import BuildContext, Environment, JobResourceConfiguration

    return dict(
        code=str(REPO),
        environment=Environment(build=BuildContext(path=str(ENVIRONMENT_DIR))),
        distribution=MpiDistribution(process_count_per_instance=plan.gpus),
        resources=JobResourceConfiguration(instance_count=plan.instance_count),
    )


_DATASTORE_URI = re.compile(r"azureml://datastores/[^/]+/paths/.+")


def check_output_path(value: str | None) -> str | None:
    """train --output_path: a datastore folder URI, or None. Raises UsageError."""
    if value is None:
        return None
    if not _DATASTORE_URI.fullmatch(value):
        raise UsageError(f"--output_path={value}: give a datastore folder, "
                         "azureml://datastores/NAME/paths/PATH (e.g. "
                         "azureml://datastores/workspaceblobstore/paths/bert/phase1/)")
    return value


def build_command_job(plan: JobPlan):
    """The azure.ai.ml CommandJob of a plan (built directly: the command() builder's dump is not
    something load_job reads back). It is dumped (job_yaml), never submitted as it is:
    jobs.create_or_update refuses a CommandJob ("Non supported job type"), so a submission sends
    its YAML read back (loaded_back), a Command."""
    from azure.ai.ml import Output
    from azure.ai.ml.entities import CommandJob

    output = (Output(type="uri_folder", path=plan.output_path, mode="rw_mount")
              if plan.output_path else Output(type="uri_folder"))
    return CommandJob(
        command=plan.command(), compute=plan.compute, inputs=_sdk_inputs(plan),
        outputs={"output_dir": output},
        experiment_name=plan.experiment_name, display_name=plan.display_name, tags=plan.tags,
        **_trial_parts(plan))


def search_space(spec) -> dict:
    """bert_tf.sweeps Params -> azure.ai.ml.sweep expressions. LogUniform takes the NATURAL LOGS
    of the bounds (Param.log_bounds); the file holds the rates themselves."""
    from azure.ai.ml.sweep import Choice, LogUniform, Uniform

    out = {}
    for name, param in spec.space.items():
        if param.type == "loguniform":
            low, high = param.log_bounds()
            out[name] = LogUniform(min_value=low, max_value=high)
        elif param.type == "uniform":
            out[name] = Uniform(min_value=param.low, max_value=param.high)
        else:
            out[name] = Choice(values=list(param.values))
    return out


def build_sweep_job(plan: JobPlan, spec):
    """The azure.ai.ml SweepJob of a plan and a checked search-space file: the trial is the
    plan's command job with --NAME=${{search_space.NAME}} for every search-space flag."""
    from azure.ai.ml import Output
    from azure.ai.ml.entities import CommandJob
    from azure.ai.ml.sweep import (BanditPolicy, GridSamplingAlgorithm, Objective,
                                   RandomSamplingAlgorithm, SweepJob, SweepJobLimits)

    trial = CommandJob(command=plan.command(tuple(
        f"--{name}=${{{{search_space.{name}}}}}" for name in spec.space)), **_trial_parts(plan))
    early = None
    if spec.bandit is not None:
        slack = ({"slack_factor": spec.bandit.slack_factor} if spec.bandit.slack_factor is not None
                 else {"slack_amount": spec.bandit.slack_amount})
        early = BanditPolicy(evaluation_interval=spec.bandit.evaluation_interval,
                             delay_evaluation=spec.bandit.delay_evaluation, **slack)
    seconds = (lambda minutes: None if minutes is None else int(round(minutes * 60)))
    return SweepJob(
        trial=trial, compute=plan.compute, inputs=_sdk_inputs(plan),
        outputs={"output_dir": Output(type="uri_folder")},
        search_space=search_space(spec),
        sampling_algorithm=(GridSamplingAlgorithm() if spec.sampling == "grid"
                            else RandomSamplingAlgorithm(seed=spec.seed)),
        objective=Objective(goal=spec.goal, primary_metric=spec.primary_metric),
        early_termination=early,
        limits=SweepJobLimits(max_total_trials=spec.max_total_trials,
                              max_concurrent_trials=spec.max_concurrent_trials,
                              timeout=seconds(spec.timeout_minutes),
                              trial_timeout=seconds(spec.trial_timeout_minutes)),
        experiment_name=plan.experiment_name, display_name=plan.display_name, tags=plan.tags)


def _posix_rel(path, start: Path) -> str:
    try:
        return Path(os.path.relpath(path, start)).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(path).as_posix()


def job_yaml(entity, yaml_path: Path, kind: str, plan: JobPlan | None = None) -> str:
    """The YAML of a job or compute entity, as load_job / load_compute and `az ml ... create
    --file` read it, with local paths relative to the YAML's folder. The SDK's dump writes local
    paths absolute, and local inputs as `azureml:/abs/path` (which would read back as a data asset
    id): they are rewritten here from the plan."""
    import yaml

    buf = io.StringIO()
    entity.dump(buf)
    data = yaml.safe_load(buf.getvalue())
    base = yaml_path.resolve().parent
    if plan is not None:
        node = data["trial"] if kind == "sweep" else data
        node["code"] = _posix_rel(REPO, base)
        node["environment"] = {"build": {"path": _posix_rel(ENVIRONMENT_DIR, base)}}
        for name, job_input in plan.inputs.items():
            data["inputs"][name]["path"] = (_posix_rel(job_input.path, base) if job_input.local
                                            else job_input.path)
    policy = data.get("early_termination") or {}
    for key in ("slack_factor", "slack_amount"):  # the SDK writes the unused one as 0.0
        if policy.get(key) == 0:
            del policy[key]
    for node in (data, data.get("trial") or {}):
        for key in ("tags", "properties", "parameters", "environment_variables", "inputs"):
            if node.get(key) == {}:
                del node[key]
        if isinstance(node.get("resources"), dict) and node["resources"].get("properties") == {}:
            del node["resources"]["properties"]
    header = (f"# Written by azure/submit.py --dry-run"
              f"{' (local paths relative to this file)' if plan else ''}.\n"
              f"# Submit: az ml {'compute' if kind == 'amlcompute' else 'job'} create --file "
              f"{yaml_path.name}\n")
    return header + yaml.safe_dump({"$schema": SCHEMAS[kind], **data}, sort_keys=False,
                                   width=100)


def write_file(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_dry_run_path(value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_dir():
        raise UsageError(f"--dry-run {value} is a folder: give the YAML file to write")
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise UsageError(f"--dry-run {value}: give a .yaml path")
    return path


@contextlib.contextmanager
def loaded_back(entity, kind: str, plan: JobPlan):
    """The job as `az ml job create --file` would send it: its --dry-run YAML (job_yaml, local
    paths relative to the file) written in a temporary folder and read back with load_job, which
    gives the types JobOperations.create_or_update accepts (a Command or a SweepJob; the
    CommandJob built here is refused as "Non supported job type"). The folder lives until the
    block ends: the code and the image's build context are found from it when submitting."""
    from azure.ai.ml import load_job

    with tempfile.TemporaryDirectory(prefix="bert_tf_azure_") as folder:
        path = Path(folder) / "job.yaml"
        write_file(path, job_yaml(entity, path, kind, plan))
        yield load_job(str(path))
