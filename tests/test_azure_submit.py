"""azure/submit.py, offline: the YAML of --dry-run read back by the SDK's own loaders
(load_job / load_compute), every bad input as one line and exit 2 with nothing written, no
secret in what is printed or written, and the sweep download read from a local SQLite MLflow
store shaped like an Azure sweep's children.

No test may reach the network: sockets refuse to connect in this process (and, through a
sitecustomize, in every subprocess started here), and a connection attempt fails the test."""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, shared

import bert_tf.azure_ml.cli  # noqa: F401  (loads every module: azure_ml.sizes, ...)
from bert_tf import azure_ml
from bert_tf.errors import UsageError

SUBMIT = REPO / "azure" / "submit.py"
SWEEP = REPO / "configs" / "sweeps" / "mrpc_lr.yaml"
FAKE_SUBSCRIPTION = "0f1e2d3c-4b5a-4978-8a9b-0c1d2e3f4a5b"
A100_8 = "Standard_ND96amsr_A100_v4"

# Loaded into every subprocess (PYTHONPATH): the same refusal as the fixture below.
_SITECUSTOMIZE = '''
import socket, sys
def _refuse(*args, **kwargs):
    address = args[1] if len(args) > 1 else (args[0] if args else kwargs)
    sys.stderr.write(f"NETWORK ATTEMPT {address!r}\\n")
    raise OSError("network access from a test of azure/submit.py")
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
'''


@pytest.fixture(scope="module", autouse=True)
def _network_refused():
    """Sockets refuse to connect for the whole module; the attempts are recorded."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if args else kwargs)
        raise OSError("network access from a test of azure/submit.py")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket.socket, "connect_ex", refuse)
        mp.setattr(socket, "create_connection", refuse)
        yield attempts


@pytest.fixture(autouse=True)
def no_network(_network_refused):
    """Every test: any connection attempt (Azure, a token endpoint, anything) fails it."""
    yield
    attempts, _network_refused[:] = list(_network_refused), []
    assert not attempts, f"the test tried to connect: {attempts}"


@pytest.fixture(scope="module")
def submit():
    """azure/submit.py as a module (it is a script in a folder that is not a package)."""
    spec = importlib.util.spec_from_file_location("bert_tf_azure_submit", SUBMIT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sdk():
    """The SDK's loaders, imported once."""
    from azure.ai.ml import MpiDistribution, load_compute, load_job

    return types.SimpleNamespace(load_job=load_job, load_compute=load_compute,
                                 MpiDistribution=MpiDistribution)


@pytest.fixture(scope="module")
def sitecustomize_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("no_network")
    (folder / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    return folder


@pytest.fixture
def run(sitecustomize_dir, tmp_path):
    """Run `python azure/submit.py ARGS` as a user would, in tmp_path, without network and
    without any workspace settings of this machine."""

    def _run(*args, env=None):
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith(("AZURE", "AZUREML", "MLFLOW", "MSI_", "IDENTITY_"))}
        clean.update(PYTHONPATH=os.pathsep.join([str(sitecustomize_dir), str(REPO)]),
                     TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
        return subprocess.run([sys.executable, str(SUBMIT), *args], cwd=tmp_path, env=clean,
                              capture_output=True, text=True, timeout=120)

    return _run


def test_sockets_refuse_here_and_in_subprocesses(sitecustomize_dir, _network_refused):
    with pytest.raises(OSError):
        socket.create_connection(("management.azure.com", 443), timeout=1)
    assert _network_refused  # recorded: the fixture would fail a test that did this
    _network_refused.clear()
    proc = subprocess.run(
        [sys.executable, "-c", "import socket; socket.create_connection(('login.microsoftonline."
         "com', 443), timeout=1)"], env=dict(os.environ, PYTHONPATH=str(sitecustomize_dir)),
        capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "NETWORK ATTEMPT" in proc.stderr


# -- train --dry-run ---------------------------------------------------------------------------

@pytest.mark.parametrize("gpu_args,processes", [
    (["--vm_size", A100_8], 8),
    (["--vm_size", "standard_nc96ads_a100_v4"], 4),  # any case
    (["--vm_size", "Standard_NC4as_T4_v3"], 1),
    (["--gpus_per_node", "2"], 2),  # a size the table does not know
    (["--vm_size", "Standard_NC99future_v9", "--gpus_per_node", "3"], 3),
])
def test_train_dry_run_yaml_loads_back(submit, sdk, tmp_path, capsys, gpu_args, processes):
    data = tmp_path / "glue" / "MRPC"
    data.mkdir(parents=True)
    (data / "train.tsv").write_text("x\n")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n")
    out = tmp_path / "jobs" / "job.yaml"
    checkpoint = ("azureml://datastores/workspaceblobstore/paths/models/"
                  "uncased_L-12_H-768_A-12/bert_model.ckpt")
    status = submit.main([
        "train", "--compute", "gpu-a100", "--instance_count", "2", *gpu_args,
        "--script", "run_classifier.py", "--experiment_name", "mrpc", "--dry-run", str(out),
        "--", "--task=MRPC", "--do_train", "--do_eval", "--data_dir", str(data),
        f"--init_checkpoint={checkpoint}", f"--vocab_file={vocab}", "--learning_rate=5e-5",
        "--train_batch_size=32", "--nodo_lower_case"])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert f"wrote {out}" in printed.out and "nothing submitted" in printed.out

    raw = yaml.safe_load(out.read_text())
    job = sdk.load_job(str(out))
    assert job.type == "command"
    assert isinstance(job.distribution, sdk.MpiDistribution)
    assert job.distribution.process_count_per_instance == processes
    assert job.resources.instance_count == 2
    assert job.compute == "gpu-a100"
    assert job.experiment_name == "mrpc"

    command = job.command
    assert command.startswith("python run_classifier.py --use_horovod ")
    assert "horovodrun" not in command and "mpirun" not in command
    for word in ("--task=MRPC", "--do_train", "--do_eval", "--learning_rate=5e-5",
                 "--train_batch_size=32", "--nodo_lower_case",
                 "--data_dir=${{inputs.data_dir}}",
                 "--init_checkpoint=${{inputs.init_checkpoint}}/bert_model.ckpt",
                 "--vocab_file=${{inputs.vocab_file}}"):
        assert f" {word} " in f" {command} ", word
    assert command.endswith(" --output_dir=${{outputs.output_dir}}")

    # local paths: relative to the YAML's folder, and they exist from there
    base = out.parent
    assert not os.path.isabs(raw["code"]) and (base / raw["code"]).resolve() == REPO
    build = raw["environment"]["build"]["path"]
    assert not os.path.isabs(build)
    assert (base / build).resolve() == REPO / "azure" / "environment"
    assert (base / build / "Dockerfile").is_file()
    assert (base / job.environment.build.path).resolve() == REPO / "azure" / "environment"

    inputs = raw["inputs"]
    assert inputs["data_dir"]["type"] == "uri_folder"
    assert not os.path.isabs(inputs["data_dir"]["path"])
    assert (base / inputs["data_dir"]["path"]).resolve() == data
    assert inputs["vocab_file"]["type"] == "uri_file"
    assert (base / inputs["vocab_file"]["path"]).resolve() == vocab
    assert inputs["init_checkpoint"] == {
        "type": "uri_folder", "path": checkpoint.rsplit("/", 1)[0]}
    assert {name: job.inputs[name].type for name in job.inputs} == {
        "data_dir": "uri_folder", "vocab_file": "uri_file", "init_checkpoint": "uri_folder"}
    assert raw["outputs"] == {"output_dir": {"type": "uri_folder"}}
    assert list(job.outputs) == ["output_dir"]


def test_train_dry_run_pretraining_records_and_named_inputs(submit, sdk, tmp_path, capsys):
    """A glob of records becomes its folder plus the pattern (quoted from the shell); an input
    given with --inputs is referred to from a flag."""
    records = tmp_path / "records"
    records.mkdir()
    for i in range(2):
        (records / f"train.tfrecord-{i:05d}").write_bytes(b"")
    out = tmp_path / "pretrain.yaml"
    status = submit.main([
        "train", "--compute", "gpu-h100", "--instance_count", "4", "--vm_size",
        "Standard_ND96isr_H100_v5", "--script", "run_pretraining.py", "--dry-run", str(out),
        "--inputs", "configs=azureml://datastores/blob/paths/bert/configs/",
        "--", f"--input_file={records}/train.tfrecord-*", "--do_train",
        "--bert_config_file=${{inputs.configs}}/bert_large_config.json",
        "--eval_input_file=azureml://datastores/blob/paths/heldout/heldout.tfrecord",
        "--global_batch_size=65536", "--optimizer=lamb"])
    assert status == 0, capsys.readouterr().err
    job = sdk.load_job(str(out))
    raw = yaml.safe_load(out.read_text())
    assert job.distribution.process_count_per_instance == 8
    assert job.resources.instance_count == 4
    assert "'--input_file=${{inputs.input_file}}/train.tfrecord-*'" in job.command
    assert "--bert_config_file=${{inputs.configs}}/bert_large_config.json" in job.command
    assert "--eval_input_file=${{inputs.eval_input_file}}" in job.command
    assert (out.parent / raw["inputs"]["input_file"]["path"]).resolve() == records
    assert raw["inputs"]["input_file"]["type"] == "uri_folder"
    assert raw["inputs"]["eval_input_file"] == {
        "type": "uri_file", "path": "azureml://datastores/blob/paths/heldout/heldout.tfrecord"}
    assert raw["inputs"]["configs"] == {
        "type": "uri_folder", "path": "azureml://datastores/blob/paths/bert/configs/"}


def test_flag_files_travel_with_the_code_and_are_checked(submit, tmp_path, monkeypatch):
    pairs = azure_ml.script_flags.parse_script_flags("run_pretraining.py", [
        f"--flagfile={REPO / 'configs' / 'pretraining' / 'bert_base_phase1.flags'}", "--do_train"])
    assert pairs == [("flagfile", "configs/pretraining/bert_base_phase1.flags"),
                     ("do_train", None)]
    # a flag file of this repository (tmp_path stands in for it) is read and checked too
    monkeypatch.setattr(azure_ml.script_flags, "REPO", tmp_path)
    with pytest.raises(UsageError, match="--output_dir is set by submit.py"):
        azure_ml.script_flags.parse_script_flags("run_classifier.py", [
            f"--flagfile={_flag_file(tmp_path, '--task=MRPC', '--output_dir=out')}"])
    with pytest.raises(UsageError, match="from a --flagfile"):
        azure_ml.script_flags.parse_script_flags("run_classifier.py", [
            f"--flagfile={_flag_file(tmp_path, '--data_dir=/elsewhere/MRPC')}"])


@pytest.mark.parametrize("flag,value,kind,want_type,want_value,want_path", [
    ("init_checkpoint", "bert-base-uncased", "checkpoint", None, "bert-base-uncased", None),
    ("init_checkpoint", "azureml://datastores/b/paths/hf/bert-base", "checkpoint", "uri_folder",
     "${{inputs.init_checkpoint}}", "azureml://datastores/b/paths/hf/bert-base"),
    ("init_checkpoint", "azureml://datastores/b/paths/m/model.safetensors", "checkpoint",
     "uri_file", "${{inputs.init_checkpoint}}", "azureml://datastores/b/paths/m/model.safetensors"),
    ("init_checkpoint", "azureml://datastores/b/paths/run/ckpt-1000", "checkpoint", "uri_folder",
     "${{inputs.init_checkpoint}}/ckpt-1000", "azureml://datastores/b/paths/run"),
    ("data_dir", "azureml:glue_mrpc:1", "folder", "uri_folder", "${{inputs.data_dir}}",
     "azureml:glue_mrpc:1"),
    ("input_file", "azureml://datastores/b/paths/seq128/a.tfrecord,"
     "azureml://datastores/b/paths/seq128/b.tfrecord", "files", "uri_folder",
     "${{inputs.input_file}}/a.tfrecord,${{inputs.input_file}}/b.tfrecord",
     "azureml://datastores/b/paths/seq128"),
])
def test_data_flags_become_inputs(submit, flag, value, kind, want_type, want_value, want_path):
    job_input, new_value = azure_ml.inputs.resolve_data_flag(flag, value, kind)
    assert new_value == want_value
    if want_type is None:
        assert job_input is None
    else:
        assert (job_input.type, job_input.path, job_input.local) == (want_type, want_path, False)


def test_local_checkpoint_prefix_uploads_its_folder(submit, tmp_path):
    (tmp_path / "bert_model.ckpt.index").write_bytes(b"")
    job_input, value = azure_ml.inputs.resolve_data_flag(
        "init_checkpoint", str(tmp_path / "bert_model.ckpt"), "checkpoint")
    assert (job_input.type, job_input.path, job_input.local) == ("uri_folder", str(tmp_path), True)
    assert value == "${{inputs.init_checkpoint}}/bert_model.ckpt"


def test_shell_words_keep_placeholders_and_quote_the_rest(submit):
    assert azure_ml.script_flags.shell_word("--data_dir=${{inputs.data_dir}}") == "--data_dir=${{inputs.data_dir}}"
    assert azure_ml.script_flags.shell_word("--task=MRPC") == "--task=MRPC"
    assert azure_ml.script_flags.shell_word("--experiment_name=my run") == "'--experiment_name=my run'"
    assert azure_ml.script_flags.shell_word("--input_file=${{inputs.x}}/a-*") == "'--input_file=${{inputs.x}}/a-*'"


# -- sweep --dry-run ---------------------------------------------------------------------------

def test_sweep_dry_run_yaml_loads_back(submit, sdk, tmp_path, capsys):
    from azure.ai.ml.sweep import BanditPolicy, Choice, LogUniform, RandomSamplingAlgorithm

    out = tmp_path / "sweep.yaml"
    status = submit.main(["sweep", "--compute", "gpu-a100", "--instance_count", "2",
                          "--vm_size", A100_8, "--sweep", str(SWEEP), "--dry-run", str(out),
                          "--", "--seed=7", "--warmup_proportion", "0.06"])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert f"wrote {out}" in printed.out and "natural logs" in printed.out

    job = sdk.load_job(str(out))
    raw = yaml.safe_load(out.read_text())
    assert job.type == "sweep" and job.compute == "gpu-a100"

    rate = job.search_space["learning_rate"]
    assert isinstance(rate, LogUniform)
    assert rate.min_value == pytest.approx(math.log(1e-5), abs=1e-12)
    assert rate.max_value == pytest.approx(math.log(1e-4), abs=1e-12)
    assert rate.min_value < 0  # logarithms, not the rates (1e-5 as a bound is a rate of ~1)
    assert isinstance(job.search_space["train_batch_size"], Choice)
    assert list(job.search_space["train_batch_size"].values) == [16, 32]
    assert isinstance(job.search_space["num_train_epochs"], Choice)
    assert list(job.search_space["num_train_epochs"].values) == [2, 3, 4]

    assert isinstance(job.sampling_algorithm, RandomSamplingAlgorithm)
    assert job.sampling_algorithm.seed == 42
    policy = job.early_termination
    assert isinstance(policy, BanditPolicy)
    assert (policy.slack_factor, policy.evaluation_interval, policy.delay_evaluation) == (0.1, 1, 2)
    assert "slack_amount" not in raw["early_termination"]
    assert (job.objective.goal, job.objective.primary_metric) == ("maximize", "eval/eval_accuracy")
    limits = job.limits
    assert (limits.max_total_trials, limits.max_concurrent_trials) == (24, 4)
    assert (limits.timeout, limits.trial_timeout) == (720 * 60, 90 * 60)

    trial = job.trial
    assert trial.distribution.process_count_per_instance == 8
    assert trial.resources.instance_count == 2
    command = trial.command
    assert command.startswith("python run_classifier.py --use_horovod ")
    for word in ("--learning_rate=${{search_space.learning_rate}}",
                 "--train_batch_size=${{search_space.train_batch_size}}",
                 "--num_train_epochs=${{search_space.num_train_epochs}}",
                 "--task=MRPC", "--init_checkpoint=bert-base-uncased", "--do_train", "--do_eval",
                 "--eval_every_steps=50", "--dtype=bf16", "--seed=7",
                 "--warmup_proportion=0.06"):
        assert f" {word} " in f" {command} ", word
    assert command.endswith(" --output_dir=${{outputs.output_dir}}")
    assert raw["outputs"] == {"output_dir": {"type": "uri_folder"}}
    assert (out.parent / raw["trial"]["code"]).resolve() == REPO
    assert (out.parent / raw["trial"]["environment"]["build"]["path"] / "Dockerfile").is_file()
    assert job.tags["bert_tf.sweep"] == "configs/sweeps/mrpc_lr.yaml"


def test_compute_dry_run_yaml_loads_back(submit, sdk, tmp_path, capsys):
    out = tmp_path / "cluster.yaml"
    status = submit.main(["compute", "--name", "gpu-a100", "--vm_size", A100_8, "--min_nodes", "0",
                          "--max_nodes", "4", "--low_priority", "--idle_seconds", "900",
                          "--dry-run", str(out)])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert "8 MPI worker(s) per node" in printed.out
    compute = sdk.load_compute(str(out))
    assert (compute.name, compute.size, compute.tier) == ("gpu-a100", A100_8, "low_priority")
    assert (compute.min_instances, compute.max_instances) == (0, 4)
    assert compute.idle_time_before_scale_down == 900


# -- VM sizes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("size,gpus,model", [
    ("Standard_NC24ads_A100_v4", 1, "A100"), ("Standard_NC48ads_A100_v4", 2, "A100"),
    ("Standard_NC96ads_A100_v4", 4, "A100"), ("Standard_ND96asr_v4", 8, "A100 40GB"),
    ("Standard_ND96amsr_A100_v4", 8, "A100 80GB"), ("Standard_ND96isr_H100_v5", 8, "H100"),
    ("Standard_NC40ads_H100_v5", 1, "H100"), ("Standard_NC4as_T4_v3", 1, "T4"),
    ("Standard_NC64as_T4_v3", 4, "T4"), ("Standard_D4s_v3", 0, ""),
    ("Standard_E16s_v5", 0, ""),  # not in the table: not an N-series size, so no GPUs
])
def test_vm_size_table(submit, size, gpus, model):
    info = azure_ml.sizes.vm_size_info(size)
    assert info.gpus == gpus and model in info.gpu
    if gpus:
        assert azure_ml.sizes.gpus_per_node(size, None) == gpus
    else:
        with pytest.raises(UsageError, match="no GPUs"):
            azure_ml.sizes.gpus_per_node(size, None)


@pytest.mark.parametrize("size,replacement", [
    ("Standard_NC24s_v3", "Standard_NC96ads_A100_v4"),
    ("Standard_NC6s_v3", "Standard_NC24ads_A100_v4"),
    ("standard_nc12s_v3", "Standard_NC48ads_A100_v4"),
])
def test_retired_ncv3_sizes_name_a_replacement(submit, size, replacement):
    with pytest.raises(UsageError, match="retired") as e:
        azure_ml.sizes.gpus_per_node(size, None)
    assert replacement in str(e.value) and "V100" in str(e.value)


def test_gpus_per_node_rules(submit):
    assert azure_ml.sizes.vm_size_info("Standard_NC99future_v9") is None
    with pytest.raises(UsageError, match="--gpus_per_node"):
        azure_ml.sizes.gpus_per_node("Standard_NC99future_v9", None)
    assert azure_ml.sizes.gpus_per_node(A100_8, 4) == 4  # fewer workers than GPUs: allowed
    with pytest.raises(UsageError, match="8 x A100"):
        azure_ml.sizes.gpus_per_node(A100_8, 16)
    assert azure_ml.sizes.gpus_per_node(None, None) is None


# -- bad input: one line, exit 2, nothing written ----------------------------------------------

def _sweep_file(tmp_path, **overrides) -> str:
    spec = yaml.safe_load(SWEEP.read_text())
    for key, value in overrides.items():
        node = spec
        *parents, last = key.split(".")
        for parent in parents:
            node = node[parent]
        node[last] = value
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _flag_file(folder, *lines) -> str:
    path = folder / "extra.flags"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


TRAIN = ["train", "--compute", "gpu", "--instance_count", "1", "--vm_size", A100_8,
         "--script", "run_classifier.py"]
SWEEP_ARGS = ["sweep", "--compute", "gpu", "--instance_count", "1", "--vm_size", A100_8]
WORK = ["--", "--task=MRPC", "--do_train"]  # script flags the script itself accepts

BAD = {
    "unknown script": (lambda t: ["train", "--compute", "gpu", "--instance_count", "1",
                                  "--vm_size", A100_8, "--script", "run_glue.py"],
                       "not one of run_classifier.py"),
    "unknown flag": (lambda t: TRAIN + ["--", "--learnin_rate=1e-5"], "learnin_rate"),
    "unknown flag with a value": (lambda t: TRAIN + ["--", "--no_such_flag", "3"],
                                  "unknown flag --no_such_flag"),
    "badly typed flag": (lambda t: TRAIN + ["--", "--learning_rate=fast"], "learning_rate"),
    "flag outside its enum": (lambda t: TRAIN + ["--", "--dtype=fp8"], "dtype"),
    "not a flag": (lambda t: TRAIN + ["--", "MRPC"], "is not a flag"),
    "--use_horovod given": (lambda t: TRAIN + ["--", "--use_horovod"], "--use_horovod is set"),
    "--output_dir given": (lambda t: TRAIN + ["--", "--output_dir=out"], "--output_dir is set"),
    "missing local data": (lambda t: TRAIN + WORK + ["--data_dir=no/such/folder"],
                           "no such file or folder"),
    "cpu vm size": (lambda t: TRAIN[:5] + ["--vm_size", "Standard_D4s_v3"] + TRAIN[7:] + WORK,
                    "Standard_D4s_v3 has no GPUs"),
    "retired vm size": (lambda t: TRAIN[:5] + ["--vm_size", "Standard_NC24s_v3"] + TRAIN[7:]
                        + WORK,
                        "retired"),
    "unknown gpu size": (lambda t: TRAIN[:5] + ["--vm_size", "Standard_NC99future_v9"]
                         + TRAIN[7:] + WORK,
                         "--gpus_per_node"),
    "instance_count 0": (lambda t: TRAIN[:4] + ["0"] + TRAIN[5:] + WORK, "--instance_count 0"),
    "instance_count not a number": (lambda t: TRAIN[:4] + ["two"] + TRAIN[5:],
                                    "argument --instance_count: invalid int value: 'two'"),
    "missing --compute": (lambda t: ["train", "--instance_count", "1", "--script",
                                     "run_classifier.py"], "--compute"),
    "empty range": (lambda t: SWEEP_ARGS + ["--sweep", _sweep_file(
        t, **{"search_space.learning_rate": {"type": "uniform", "min_value": 0.1,
                                             "max_value": 0.1}})], "empty or reversed"),
    "reversed log range": (lambda t: SWEEP_ARGS + ["--sweep", _sweep_file(
        t, **{"search_space.learning_rate": {"type": "loguniform", "min_value": 1e-4,
                                             "max_value": 1e-5}})], "empty or reversed"),
    "non-positive log bound": (lambda t: SWEEP_ARGS + ["--sweep", _sweep_file(
        t, **{"search_space.learning_rate": {"type": "loguniform", "min_value": -11.5,
                                             "max_value": -9.2}})], "must be positive"),
    "metric never logged": (lambda t: SWEEP_ARGS + ["--sweep", _sweep_file(
        t, primary_metric="eval/eval_f2")], "never logs"),
    "unknown flag in the sweep file": (lambda t: SWEEP_ARGS + ["--sweep", _sweep_file(
        t, **{"flags.tsk": "MRPC"})], "no flag --tsk"),
    "unknown flag after -- of a sweep": (
        lambda t: SWEEP_ARGS + ["--sweep", str(SWEEP), "--", "--lerning_rate=1"], "lerning_rate"),
    "flag file outside the repository": (
        lambda t: TRAIN + ["--", f"--flagfile={_flag_file(t, '--task=MRPC')}"],
        "a flag file must sit in the repository"),
    "missing sweep file": (lambda t: SWEEP_ARGS + ["--sweep", "no/such.yaml"], "no such file"),
    # what the script itself refuses at start-up (bert_tf.sweeps.check_script_args)
    "unknown task": (lambda t: TRAIN + ["--", "--task=MRPX", "--do_train"],
                     "unknown task 'MRPX'"),
    "negative learning rate": (lambda t: TRAIN + ["--", "--task=MRPC", "--do_train",
                                                  "--learning_rate=-1"], "must be positive"),
    "--eval_every_steps without --do_eval": (
        lambda t: TRAIN + ["--", "--task=MRPC", "--eval_every_steps=10", "--do_train"],
        "--eval_every_steps=10"),
    "nothing to do": (lambda t: TRAIN + ["--", "--task=MRPC"], "nothing to do"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_nothing_written(run, tmp_path, case):
    make_args, expected = BAD[case]
    target = tmp_path / "out" / "job.yaml"
    args = make_args(tmp_path)
    cut = args.index("--") if "--" in args else len(args)
    proc = run(*args[:cut], "--dry-run", str(target), *args[cut:])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("submit.py: error: "), proc.stderr
    assert expected in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not target.exists() and not target.parent.exists()


@pytest.mark.parametrize("args", [
    ["status", "sweep_abc"],
    ["stream", "sweep_abc"],
    TRAIN + WORK,  # a real submission: needs a workspace
    ["compute", "--name", "gpu", "--vm_size", A100_8, "--max_nodes", "2"],
])
def test_missing_workspace_config_is_one_line(run, tmp_path, args):
    assert not any((p / "config.json").exists() or (p / ".azureml" / "config.json").exists()
                   for p in (tmp_path, *tmp_path.parents)), "a workspace config above tmp_path"
    proc = run(*args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("submit.py: error: no Azure ML workspace configured: pass --config")
    assert "AZURE_SUBSCRIPTION_ID" in lines[0] and "Traceback" not in proc.stderr


def test_incomplete_workspace_environment_names_what_is_missing(run):
    proc = run("status", "job1", env={"AZURE_SUBSCRIPTION_ID": FAKE_SUBSCRIPTION})
    assert proc.returncode == 2
    assert "AZURE_RESOURCE_GROUP, AZUREML_WORKSPACE_NAME not set" in proc.stderr
    assert FAKE_SUBSCRIPTION not in proc.stderr + proc.stdout


@pytest.mark.parametrize("args,what", [
    (["status", "job1"], "reading job job1"),
    # a submission without --vm_size first asks the workspace for the cluster's size
    (SWEEP_ARGS[:5] + ["--sweep", str(SWEEP)], "reading cluster gpu"),
])
def test_no_credential_is_one_line(run, tmp_path, args, what):
    """A workspace config but no credential: DefaultAzureCredential's dozen lines of warnings
    stay silent; the failure is one redacted line, exit 1. Its only connection attempt is the
    managed-identity probe of the link-local IMDS address, refused here like any other."""
    (tmp_path / "config.json").write_text(json.dumps({
        "subscription_id": FAKE_SUBSCRIPTION, "resource_group": "rg", "workspace_name": "ws"}))
    proc = run(*args)
    lines = proc.stderr.strip().splitlines()
    attempts = [line for line in lines if line.startswith("NETWORK ATTEMPT")]
    assert all("169.254.169.254" in line for line in attempts), attempts
    lines = [line for line in lines if line not in attempts]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"submit.py: error: {what}: ClientAuthenticationError: no Azure "
                               "credential"), lines[0]
    assert "DefaultAzureCredential failed" in lines[0]
    assert FAKE_SUBSCRIPTION not in proc.stdout + proc.stderr and not proc.stdout


# -- secrets -----------------------------------------------------------------------------------

def test_dry_run_writes_and_prints_no_subscription_id(run, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "subscription_id": FAKE_SUBSCRIPTION, "resource_group": "rg", "workspace_name": "ws"}))
    env = {"AZURE_SUBSCRIPTION_ID": FAKE_SUBSCRIPTION, "AZURE_RESOURCE_GROUP": "rg",
           "AZUREML_WORKSPACE_NAME": "ws"}
    job, sweep = tmp_path / "job.yaml", tmp_path / "sweep.yaml"
    procs = [run(*TRAIN, "--dry-run", str(job), "--", "--task=MRPC", "--do_train", env=env),
             run(*SWEEP_ARGS, "--sweep", str(SWEEP), "--dry-run", str(sweep), env=env)]
    for proc in procs:
        assert proc.returncode == 0, proc.stderr
        assert "wrote" in proc.stdout
        assert FAKE_SUBSCRIPTION not in proc.stdout + proc.stderr
    for path in (job, sweep):
        assert FAKE_SUBSCRIPTION not in path.read_text()
        assert "subscriptions" not in path.read_text()


def test_dry_run_constructs_no_client_or_credential(submit, tmp_path, monkeypatch, capsys):
    import azure.ai.ml
    import azure.identity

    def forbidden(*args, **kwargs):
        raise AssertionError("a dry run constructed an Azure client or credential")

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", forbidden)
    monkeypatch.setattr(azure.ai.ml, "MLClient", forbidden)
    monkeypatch.setattr(azure_ml.commands, "make_client", forbidden)
    assert submit.main([*TRAIN, "--dry-run", str(tmp_path / "j.yaml"), "--", "--task=MRPC",
                        "--do_train"]) == 0
    assert submit.main([*SWEEP_ARGS, "--sweep", str(SWEEP), "--dry-run",
                        str(tmp_path / "s.yaml")]) == 0
    assert submit.main(["compute", "--name", "c", "--vm_size", A100_8, "--max_nodes", "1",
                        "--dry-run", str(tmp_path / "c.yaml")]) == 0
    capsys.readouterr()


class _FakeJobs:
    """jobs operations of a workspace whose answers carry the subscription id, as Azure's do."""

    def __init__(self, fail: bool):
        self.fail = fail

    def get(self, name):
        if self.fail:
            raise RuntimeError(
                f"(UserError) Job {name} not found in /subscriptions/{FAKE_SUBSCRIPTION}/"
                "resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws\n"
                "Code: UserError\nAuthorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")
        return types.SimpleNamespace(
            name=name, status="Running", type="sweep", experiment_name="bert_tf",
            compute=f"/subscriptions/{FAKE_SUBSCRIPTION}/resourceGroups/rg/providers/"
                    "Microsoft.MachineLearningServices/workspaces/ws/computes/gpu-a100")

    def list(self, parent_job_name):
        return [types.SimpleNamespace(status=s) for s in ("Completed", "Completed", "Canceled")]

    def stream(self, name):
        print(f"RunId: {name}\nWeb View: https://ml.azure.com/runs/{name}?wsid=/subscriptions/"
              f"{FAKE_SUBSCRIPTION}/resourcegroups/rg/workspaces/ws&tid=t")


@pytest.mark.parametrize("fail", [True, False])
def test_azure_answers_are_redacted(submit, monkeypatch, capsys, fail):
    for key, value in zip(azure_ml.workspace.WORKSPACE_ENV, (FAKE_SUBSCRIPTION, "rg", "ws")):
        monkeypatch.setenv(key, value)
    client = types.SimpleNamespace(jobs=_FakeJobs(fail))
    monkeypatch.setattr(azure_ml.commands, "make_client", lambda workspace: client)
    status = submit.main(["status", "sweep_abc"])
    out = capsys.readouterr()
    assert FAKE_SUBSCRIPTION not in out.out + out.err and "eyJ" not in out.out + out.err
    if fail:
        assert status == 1
        lines = out.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("submit.py: error: reading job sweep_abc")
        assert "not found" in lines[0] and "<redacted>" in lines[0]
    else:
        assert status == 0
        assert "sweep_abc: Running (sweep job, experiment bert_tf, compute gpu-a100)" in out.out
        assert "trials: 1 Canceled, 2 Completed" in out.out
        assert submit.main(["stream", "sweep_abc"]) == 0
        streamed = capsys.readouterr().out
        assert "Web View: https://ml.azure.com/runs/sweep_abc?wsid=/subscriptions/" in streamed
        assert FAKE_SUBSCRIPTION not in streamed


class _StopBeforeSending(Exception):
    """Raised where JobOperations.create_or_update would send its request."""


@pytest.fixture
def sdk_jobs(monkeypatch):
    """The SDK's real JobOperations (an MLClient for a fake workspace) with its network edges cut:
    assets (code, environment, compute) resolve to made-up ARM ids instead of being uploaded or
    looked up, hashing the code folder is skipped (it walks the whole repository, .venv too),
    the REST request is replaced by _StopBeforeSending, and any token request fails the test.
    Everything else of create_or_update runs as it does for a user: its job type check ("Non
    supported job type"), validation, and the conversion to the REST body."""
    import azure.ai.ml.entities._assets._artifacts.code as code_module
    from azure.ai.ml import MLClient

    tokens, resolved, bodies = [], [], []

    class NoCredential:
        def get_token(self, *args, **kwargs):
            tokens.append(args)
            raise AssertionError("a test requested an Azure token")

        get_token_info = get_token

    arm = (f"/subscriptions/{FAKE_SUBSCRIPTION}/resourceGroups/rg/providers/"
           "Microsoft.MachineLearningServices/workspaces/ws")

    def resolve(asset, azureml_type, **kwargs):
        resolved.append((azureml_type, asset))
        if azureml_type == "codes":
            return f"{arm}/codes/c/versions/1"
        if azureml_type == "environments":
            return f"{arm}/environments/e/versions/1"
        return f"{arm}/computes/{asset}"

    def send(rest_job_resource, **kwargs):
        bodies.append(rest_job_resource)
        raise _StopBeforeSending()

    monkeypatch.setattr(code_module, "get_content_hash", lambda path, ignore_file=None: "0" * 64)
    jobs = MLClient(NoCredential(), FAKE_SUBSCRIPTION, "rg", "ws").jobs
    monkeypatch.setattr(jobs._orchestrators, "get_asset_arm_id", resolve)
    monkeypatch.setattr(jobs, "_create_or_update_with_different_version_api", send)
    yield types.SimpleNamespace(jobs=jobs, tokens=tokens, resolved=resolved, bodies=bodies)
    assert not tokens, "a test requested an Azure token"


def test_submission_sends_what_the_dry_run_writes(submit, sdk, sdk_jobs, tmp_path, monkeypatch,
                                                  capsys):
    """Without --vm_size/--gpus_per_node a submission asks the cluster for its size; the job goes
    through the SDK's own JobOperations.create_or_update up to the request (its type check
    refused the CommandJob submit.py used to send), and it is the job --dry-run writes: the
    same YAML read back with load_job (fake workspace, no network, no token)."""
    from azure.ai.ml.entities import AmlCompute, Command
    from azure.ai.ml.sweep import SweepJob

    for key, value in zip(azure_ml.workspace.WORKSPACE_ENV, (FAKE_SUBSCRIPTION, "rg", "ws")):
        monkeypatch.setenv(key, value)
    sent = []

    def create_or_update(job):
        sent.append(job)
        # the paths of the YAML read back are relative to its temporary folder: alive here
        code = job.trial.code if isinstance(job, SweepJob) else job.code
        assert os.path.samefile(os.path.join(job._base_path, code), REPO)
        with pytest.raises(_StopBeforeSending):
            sdk_jobs.jobs.create_or_update(job)
        return types.SimpleNamespace(name=f"job_{len(sent)}", status="Starting")

    def begin_create_or_update(compute):
        sent.append(compute)
        return types.SimpleNamespace(result=lambda: compute)

    client = types.SimpleNamespace(
        jobs=types.SimpleNamespace(create_or_update=create_or_update),
        compute=types.SimpleNamespace(get=lambda name: types.SimpleNamespace(size=A100_8),
                                      begin_create_or_update=begin_create_or_update))
    monkeypatch.setattr(azure_ml.commands, "make_client", lambda workspace: client)
    train = ["train", "--compute", "gpu-a100", "--instance_count", "2", "--script",
             "run_classifier.py"]
    flags = ["--", "--task=MRPC", "--do_train", "--learning_rate=3e-5"]
    sweep = ["sweep", "--compute", "gpu-a100", "--instance_count", "1", "--sweep", str(SWEEP)]
    assert submit.main(train + flags) == 0
    assert submit.main(sweep) == 0
    assert submit.main(["compute", "--name", "gpu-a100", "--vm_size", A100_8, "--max_nodes",
                        "2"]) == 0
    printed = capsys.readouterr()
    assert "submitted command job job_1" in printed.out and "stream job_1" in printed.out
    assert "download job_2" in printed.out and "cluster gpu-a100 ready" in printed.out
    assert FAKE_SUBSCRIPTION not in printed.out + printed.err
    job, sweep_job, compute = sent
    assert type(job) is Command and type(sweep_job) is SweepJob

    # the SDK took them whole: the code folder and the image's build context are this
    # repository's, and the REST bodies are a Command and a Sweep job on 8 MPI workers per node
    assert [b.properties.job_type for b in sdk_jobs.bodies] == ["Command", "Sweep"]
    for body in sdk_jobs.bodies:
        properties = body.properties
        distribution = (properties.trial if properties.job_type == "Sweep"
                        else properties).distribution
        assert distribution.process_count_per_instance == 8  # from the cluster's size
    codes = [Path(a.path).resolve() for t, a in sdk_jobs.resolved if t == "codes"]
    builds = [Path(a.path).resolve() for t, a in sdk_jobs.resolved if t == "environments"]
    assert codes == [REPO, REPO] and builds == [REPO / "azure" / "environment"] * 2
    assert job.distribution.process_count_per_instance == 8
    assert job.resources.instance_count == 2 and job.compute.endswith("/computes/gpu-a100")
    assert sweep_job.trial.distribution.process_count_per_instance == 8

    # the same job as the dry run's YAML (apart from where its relative paths start)
    out = tmp_path / "job.yaml"
    assert submit.main(train + ["--vm_size", A100_8, "--dry-run", str(out)] + flags) == 0
    capsys.readouterr()
    dry = sdk.load_job(str(out))
    assert type(dry) is type(job)
    assert (dry.command, dry.experiment_name, dry.display_name, dry.tags) == (
        job.command, job.experiment_name, job.display_name, job.tags)

    assert isinstance(compute, AmlCompute) and compute.size == A100_8
    assert (compute.min_instances, compute.max_instances, compute.tier) == (0, 2, "dedicated")


def test_the_sdk_refuses_the_built_command_job(submit, sdk_jobs):
    """Why submissions go through load_job: the SDK's create_or_update refuses the CommandJob
    entity build_command_job makes (what submit.py used to send)."""
    plan = azure_ml.jobs.JobPlan(script="run_classifier.py", flags=[("task", "MRPC")], inputs={},
                          compute="gpu", instance_count=1, gpus=1, vm_size=None,
                          experiment_name="x", display_name="x", tags={})
    with pytest.raises(Exception, match="Non supported job type"):
        sdk_jobs.jobs.create_or_update(azure_ml.jobs.build_command_job(plan))


def test_azure_logging_never_debug(submit):
    import logging

    logging.getLogger("azure").setLevel(logging.DEBUG)
    logging.getLogger("azure.identity").setLevel(logging.DEBUG)
    azure_ml.workspace.quiet_azure_logging()
    assert not logging.getLogger("azure.core.pipeline.policies.http_logging_policy").isEnabledFor(
        logging.DEBUG)
    assert not logging.getLogger("azure.identity").isEnabledFor(logging.DEBUG)
    # DefaultAzureCredential's failure warnings (a dozen lines) stay silent; the exception says it
    for name in ("azure.identity._credentials.chained", "azure.core.pipeline", "msal"):
        assert not logging.getLogger(name).isEnabledFor(logging.WARNING), name
        assert logging.getLogger(name).isEnabledFor(logging.ERROR), name


# -- download: a sweep's trials from MLflow ----------------------------------------------------

SWEEP_JOB = "calm_river_0x1y2z"


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory):
    """A local SQLite MLflow store holding what Azure ML's store holds for a sweep: a parent run
    and its trials tagged mlflow.parentRunId, named <sweep>_<n>, with the flags as params and
    train/loss and eval/eval_accuracy by step; plus a run of another sweep."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("bert_tf",
                                          artifact_location=(folder / "artifacts").as_uri())
    # Azure ML's MLflow run id of a job is the job's name; a local store makes its own ids, so
    # the children carry the job name as their parent id, as they do in the workspace's store.
    client.create_run(experiment, run_name=SWEEP_JOB)

    def trial(number, status, lr, batch, accuracy, parent_id=SWEEP_JOB, repeat_last=None):
        run = client.create_run(experiment, run_name=f"{SWEEP_JOB}_{number}",
                                tags={"mlflow.parentRunId": parent_id})
        metrics = [Metric("train/loss", 1.0 - 0.1 * i, 1000 + i, 10 * i) for i in range(4)]
        metrics += [Metric("eval/eval_accuracy", a, 2000 + i, 50 * (i + 1))
                    for i, a in enumerate(accuracy)]
        if repeat_last is not None:  # the same step logged again later (a resumed trial)
            metrics.append(Metric("eval/eval_accuracy", repeat_last, 9000, 50 * len(accuracy)))
        client.log_batch(run.info.run_id, metrics=metrics, params=[
            Param("learning_rate", repr(lr)), Param("train_batch_size", str(batch)),
            Param("num_train_epochs", "3.0"), Param("task_name", "MRPC")])
        if status != "RUNNING":
            client.set_terminated(run.info.run_id, status)

    trial(2, "FINISHED", 2e-05, 32, [0.70, 0.81], repeat_last=0.83)
    trial(0, "KILLED", 9e-05, 16, [0.60, 0.62])  # stopped by the bandit policy
    trial(1, "FAILED", 3e-05, 16, [])
    trial(3, "RUNNING", 5e-05, 32, [0.75])
    trial(0, "FINISHED", 1e-05, 16, [0.9], parent_id="another_sweep")
    return uri


def test_read_trials_from_mlflow_store(submit, sweep_store):
    from bert_tf import sweeps

    spec = sweeps.load(str(SWEEP))
    trials = azure_ml.trials.read_trials(sweep_store, SWEEP_JOB, spec, experiment_name="bert_tf")
    assert [t["number"] for t in trials] == [0, 1, 2, 3]
    assert [t["state"] for t in trials] == ["PRUNED", "FAIL", "COMPLETE", "RUNNING"]
    assert [t["value"] for t in trials] == [0.62, None, 0.83, 0.75]
    assert trials[2]["params"] == {"learning_rate": 2e-05, "train_batch_size": 32,
                                   "num_train_epochs": 3}
    assert isinstance(trials[2]["params"]["train_batch_size"], int)
    loss = [(0, 1.0), (10, 0.9), (20, 0.8), (30, 0.7)]
    assert all([(s, round(v, 9)) for s, v in t["loss_curve"]] == loss for t in trials)
    assert trials[2]["metric_curve"] == [(50, 0.70), (100, 0.83)]
    assert trials[0]["metric_curve"] == [(50, 0.60), (100, 0.62)]
    assert trials[1]["metric_curve"] == []
    # without the experiment name: every experiment is searched, the same trials come back
    assert azure_ml.trials.read_trials(sweep_store, SWEEP_JOB, spec) == trials


def fake_mlflow_workspace(monkeypatch, job, tracking_uri):
    """A workspace (its ids in the environment, a client the commands get) whose one job is
    `job` and whose MLflow store is `tracking_uri`: what `download` reads, offline."""
    for key, value in zip(azure_ml.workspace.WORKSPACE_ENV, (FAKE_SUBSCRIPTION, "rg", "ws")):
        monkeypatch.setenv(key, value)
    client = types.SimpleNamespace(
        workspace_name="ws", jobs=types.SimpleNamespace(get=lambda name: job),
        workspaces=types.SimpleNamespace(
            get=lambda name: types.SimpleNamespace(mlflow_tracking_uri=tracking_uri)))
    monkeypatch.setattr(azure_ml.commands, "make_client", lambda workspace: client)
    monkeypatch.setattr(azure_ml.commands, "require_azureml_mlflow", lambda: None)


def test_download_writes_trials_json_and_the_report(submit, sweep_store, tmp_path, monkeypatch,
                                                     capsys):
    """download end to end against a fake workspace whose MLflow store is the SQLite one."""
    from bert_tf.sweeps.report import TrialRecord

    fake_mlflow_workspace(monkeypatch, types.SimpleNamespace(
        name=SWEEP_JOB, type="sweep", experiment_name="bert_tf",
        tags={"bert_tf.sweep": "configs/sweeps/mrpc_lr.yaml"},
        objective=types.SimpleNamespace(primary_metric="eval/eval_accuracy")), sweep_store)
    out = tmp_path / "report"
    status = submit.main(["download", SWEEP_JOB, "--output_dir", str(out)])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert "4 trial(s)" in printed.out and FAKE_SUBSCRIPTION not in printed.out + printed.err
    rows = json.loads((out / "trials.json").read_text())
    assert [r["state"] for r in rows] == ["PRUNED", "FAIL", "COMPLETE", "RUNNING"]
    assert [TrialRecord(**r).number for r in rows] == [0, 1, 2, 3]
    for name in ("loss_curves.png", "metric_vs_lr.png", "trials.md", "trials.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name


def test_download_of_a_command_job_is_refused(submit, monkeypatch, tmp_path, capsys):
    for key, value in zip(azure_ml.workspace.WORKSPACE_ENV, (FAKE_SUBSCRIPTION, "rg", "ws")):
        monkeypatch.setenv(key, value)
    job = types.SimpleNamespace(name="j", type="command", tags={})
    client = types.SimpleNamespace(jobs=types.SimpleNamespace(get=lambda name: job))
    monkeypatch.setattr(azure_ml.commands, "make_client", lambda workspace: client)
    monkeypatch.setattr(azure_ml.commands, "require_azureml_mlflow", lambda: None)
    assert submit.main(["download", "j", "--output_dir", str(tmp_path / "r")]) == 2
    assert "not a sweep" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# -- what the job uploads and runs in ----------------------------------------------------------

def _install_requires() -> list[str]:
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return [ast.literal_eval(elt) for elt in node.value.elts]
    raise AssertionError("no install_requires in setup.py")


def _name(requirement: str) -> str:
    import re

    return re.split(r"[\[<>=!~ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_pins_the_repository_requirements():
    env = REPO / "azure" / "environment"
    lines = [line.split("#")[0].strip() for line in (env / "requirements.txt").read_text()
             .splitlines()]
    pins = {_name(line): line for line in lines if line}
    missing = [r for r in _install_requires() if _name(r) not in pins]
    assert not missing, f"azure/environment/requirements.txt lacks {missing}"
    assert all("==" in line for line in pins.values()), pins
    assert pins["tensorflow"].startswith("tensorflow[and-cuda]==2.18.")
    assert pins["tensorflow-text"].endswith("==2.18.1")
    major, minor = pins["azureml-mlflow"].split("==")[1].split(".")[:2]
    assert (int(major), int(minor)) >= (1, 62)
    assert "mlflow" in pins
    dockerfile = (env / "Dockerfile").read_text()
    assert dockerfile.count("\nFROM ") == 1 and "FROM nvidia/cuda:12.5" in dockerfile
    for needle in ("horovod==0.28.1", "HOROVOD_GPU_OPERATIONS=NCCL", "HOROVOD_WITH_MPI=1",
                   "HOROVOD_WITH_TENSORFLOW=1", "--no-build-isolation", "requirements.txt",
                   "openmpi"):
        assert needle in dockerfile, needle


def test_amlignore_keeps_the_code_and_drops_the_rest():
    from azure.ai.ml._utils._asset_utils import get_ignore_file

    ignore = get_ignore_file(REPO)
    assert ignore.exists() and ignore.base_path == REPO
    for kept in ("run_classifier.py", "bert_tf/flags.py", "configs/sweeps/mrpc_lr.yaml",
                 "azure/submit.py"):
        assert not ignore.is_file_excluded(REPO / kept), kept
    for dropped in (".venv/bin/python", ".git/config", "output/mrpc/ckpt-1.index",
                    "bert_tf/__pycache__/x.pyc", "config.json", ".azureml/config.json",
                    "mlruns/0/meta.yaml"):
        assert ignore.is_file_excluded(REPO / dropped), dropped


def test_train_output_path_is_a_read_write_datastore_folder(submit, sdk, tmp_path, capsys):
    """--output_path: the job's output_dir on a fixed datastore folder, mounted read-write, so
    a resubmitted preempted run finds its checkpoints; anything but a datastore URI is one
    line."""
    out = tmp_path / "job.yaml"
    uri = "azureml://datastores/workspaceblobstore/paths/bert/phase1/"
    status = submit.main([
        "train", "--compute", "gpu-a100", "--instance_count", "1", "--vm_size",
        "Standard_ND96amsr_A100_v4", "--script", "run_pretraining.py", "--dry-run", str(out),
        "--output_path", uri, "--",
        "--input_file=azureml://datastores/blob/paths/seq128/", "--do_train"])
    assert status == 0, capsys.readouterr().err
    raw = yaml.safe_load(out.read_text())
    assert raw["outputs"]["output_dir"] == {"type": "uri_folder", "path": uri,
                                            "mode": "rw_mount"}
    job = sdk.load_job(str(out))
    assert job.outputs["output_dir"].path == uri and job.outputs["output_dir"].mode == "rw_mount"
    with pytest.raises(UsageError, match="--output_path=/tmp/x: give a datastore folder"):
        azure_ml.jobs.check_output_path("/tmp/x")


# -- SQuAD ------------------------------------------------------------------------------------------

def test_train_dry_run_run_squad_with_squad_files_as_inputs(submit, sdk, tmp_path, capsys):
    """run_squad.py as a job: the local SQuAD files are uploaded as uri_file inputs and the
    command points at them; Google's flags pass through checked."""
    train = shared("squad", "slices", "train-v2.0-first10articles.json")
    dev = shared("squad", "slices", "dev-v2.0-first5articles.json")
    out = tmp_path / "squad.yaml"
    status = submit.main([
        "train", "--compute", "gpu-a100x1", "--instance_count", "1", "--vm_size",
        "Standard_NC24ads_A100_v4", "--script", "run_squad.py", "--dry-run", str(out), "--",
        "--init_checkpoint=bert-base-uncased", "--do_train", f"--train_file={train}",
        "--do_predict", f"--predict_file={dev}", "--version_2_with_negative",
        "--train_batch_size=24", "--learning_rate=3e-5", "--num_train_epochs=2.0",
        "--max_seq_length=384", "--doc_stride=128"])
    assert status == 0, capsys.readouterr().err
    job = sdk.load_job(str(out))
    raw = yaml.safe_load(out.read_text())
    assert job.command.startswith("python run_squad.py ")
    for word in ("--train_file=${{inputs.train_file}}", "--predict_file=${{inputs.predict_file}}",
                 "--version_2_with_negative", "--doc_stride=128"):
        assert f" {word} " in f" {job.command} ", word
    for flag, path in (("train_file", train), ("predict_file", dev)):
        assert raw["inputs"][flag]["type"] == "uri_file"
        assert (out.parent / raw["inputs"][flag]["path"]).resolve() == path.resolve()

    status = submit.main(["train", "--compute", "c", "--instance_count", "1", "--vm_size",
                          "Standard_NC24ads_A100_v4",
                          "--script", "run_squad.py", "--dry-run", str(tmp_path / "bad.yaml"),
                          "--", "--init_checkpoint=bert-base-uncased", "--do_train",
                          f"--train_file={train}", "--doc_stride=0"])
    assert status == 2 and "--doc_stride=0" in capsys.readouterr().err  # the script's check
    assert not (tmp_path / "bad.yaml").exists()


def test_squad_sweep_dry_run_yaml_loads_back(submit, sdk, tmp_path, capsys):
    from azure.ai.ml.sweep import LogUniform

    out = tmp_path / "sweep.yaml"
    status = submit.main(["sweep", "--compute", "gpu-a100x1", "--instance_count", "1",
                          "--vm_size", "Standard_NC24ads_A100_v4", "--sweep",
                          str(REPO / "configs" / "sweeps" / "squad_lr.yaml"), "--dry-run",
                          str(out)])
    assert status == 0, capsys.readouterr().err
    job = sdk.load_job(str(out))
    raw = yaml.safe_load(out.read_text())
    assert (job.objective.goal, job.objective.primary_metric) == ("maximize", "eval/f1")
    assert isinstance(job.search_space["learning_rate"], LogUniform)
    assert job.trial.command.startswith("python run_squad.py ")
    assert raw["inputs"]["train_file"] == {
        "type": "uri_file",
        "path": "https://rajpurkar.github.io/SQuAD-explorer/dataset/train-v1.1.json"}
    assert "--predict_file=${{inputs.predict_file}}" in job.trial.command


# -- glue: the GLUE table's grid as one sweep per task -------------------------------------------

def _glue_data(root: Path, tasks) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        (root / task).symlink_to(shared("glue", task))
    return root


GLUE = ["glue", "--compute", "gpu", "--vm_size", "Standard_NC24ads_A100_v4",
        "--init_checkpoint=bert-base-uncased", "--trials_at_once=4"]


def test_glue_dry_run_writes_one_grid_sweep_per_task(submit, sdk, tmp_path, capsys):
    """The same grid files the local `python -m bert_tf.glue` runs, each as a sweep job with
    grid sampling over learning rates x seeds, read back by load_job."""
    from azure.ai.ml.sweep import Choice, GridSamplingAlgorithm

    data = _glue_data(tmp_path / "glue", ["MRPC", "SST-2"])
    out, jobs = tmp_path / "out", tmp_path / "jobs"
    status = submit.main(GLUE + [f"--data_dir={data}", f"--output_dir={out}", "--seeds=3",
                                 "--dry-run", str(jobs), "--", "--dtype=bf16"])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert "SST-2, MRPC; 12 runs in 2 grid sweep(s)" in printed.out
    assert sorted(p.name for p in jobs.iterdir()) == ["glue_MRPC.sweep.yaml",
                                                       "glue_SST-2.sweep.yaml", "specs"]
    for task, seeds, metric in (("MRPC", [1, 2, 3], "eval/eval_f1"),
                                ("SST-2", [1], "eval/eval_accuracy")):
        job = sdk.load_job(str(jobs / f"glue_{task}.sweep.yaml"))
        assert isinstance(job.sampling_algorithm, GridSamplingAlgorithm)
        assert isinstance(job.search_space["seed"], Choice)
        assert list(job.search_space["seed"].values) == seeds
        assert list(job.search_space["learning_rate"].values) == [2e-5, 3e-5, 5e-5]
        assert job.limits.max_total_trials == 3 * len(seeds)
        assert job.limits.max_concurrent_trials == min(4, 3 * len(seeds))
        assert job.objective.primary_metric == metric
        assert job.tags["bert_tf.glue_task"] == task
        assert Path(job.tags["bert_tf.sweep"]) == jobs.resolve() / "specs" / f"glue_{task}.yaml"
        words = job.trial.command.split()
        for word in (f"--task={task}", "--do_train", "--do_eval", "--do_predict",
                     "--data_dir=${{inputs.data_dir}}", "--dtype=bf16",
                     "--learning_rate=${{search_space.learning_rate}}",
                     "--seed=${{search_space.seed}}", "--init_checkpoint=bert-base-uncased"):
            assert word in words, (task, word)
        raw = yaml.safe_load((jobs / f"glue_{task}.sweep.yaml").read_text())
        assert (jobs / raw["inputs"]["data_dir"]["path"]).resolve() == (data / task).resolve()
    assert not out.exists()  # a dry run writes only beside its YAML


def test_glue_on_a_datastore_gives_each_task_its_folder(submit, sdk, tmp_path, capsys):
    out, jobs = tmp_path / "out", tmp_path / "jobs"
    uri = "azureml://datastores/workspaceblobstore/paths/glue_data/"
    assert submit.main(GLUE + ["--tasks=RTE,cola", f"--data_dir={uri}",
                               f"--output_dir={out}", "--dry-run", str(jobs)]) == 0, \
        capsys.readouterr().err
    for task in ("RTE", "CoLA"):
        job = sdk.load_job(str(jobs / f"glue_{task}.sweep.yaml"))
        assert job.inputs["data_dir"].path == f"azureml://datastores/workspaceblobstore/paths/" \
                                              f"glue_data/{task}"


def test_glue_submits_each_task_once_even_after_a_failure(submit, tmp_path, monkeypatch, capsys):
    """The job names are kept as each is accepted; when Azure refuses the second task the rerun
    submits only what is missing."""
    from azure.ai.ml.sweep import SweepJob

    for key, value in zip(azure_ml.workspace.WORKSPACE_ENV, (FAKE_SUBSCRIPTION, "rg", "ws")):
        monkeypatch.setenv(key, value)
    sent, fail = [], {"RTE"}

    def create_or_update(job):
        assert type(job) is SweepJob
        task = job.tags["bert_tf.glue_task"]
        if task in fail:
            raise RuntimeError("quota exceeded")
        sent.append(task)
        return types.SimpleNamespace(name=f"sweep_{task}", status="Running")

    client = types.SimpleNamespace(jobs=types.SimpleNamespace(create_or_update=create_or_update))
    monkeypatch.setattr(azure_ml.commands, "make_client", lambda workspace: client)
    data = _glue_data(tmp_path / "glue", ["MRPC", "RTE"])
    out = tmp_path / "out"
    args = GLUE + [f"--data_dir={data}", f"--output_dir={out}", "--seeds=2"]
    assert submit.main(args) == 1
    printed = capsys.readouterr()
    assert "quota exceeded" in printed.err and len(printed.err.strip().splitlines()) == 1
    recorded = json.loads((out / "glue_jobs.json").read_text())
    assert recorded == {"init_checkpoint": "bert-base-uncased",
                        "tasks": {"MRPC": "sweep_MRPC"}}
    fail.clear()
    assert submit.main(args) == 0
    printed = capsys.readouterr().out
    assert "MRPC: already submitted as sweep_MRPC" in printed and "download --glue" in printed
    assert sent == ["MRPC", "RTE"]
    assert json.loads((out / "glue_jobs.json").read_text())["tasks"] == {
        "MRPC": "sweep_MRPC", "RTE": "sweep_RTE"}
    other = GLUE[:-2] + ["--init_checkpoint=bert-large-uncased", f"--data_dir={data}",
                         f"--output_dir={out}"]
    assert submit.main(other) == 2
    assert "holds the jobs of --init_checkpoint=bert-base-uncased" in capsys.readouterr().err
    # the submitted grids are the record of what ran: another grid in the same folder is refused
    spec = (out / "specs" / "glue_MRPC.yaml").read_text()
    assert submit.main(args + ["--learning_rates=1e-4"]) == 2
    assert "MRPC was submitted as sweep_MRPC" in capsys.readouterr().err
    assert (out / "specs" / "glue_MRPC.yaml").read_text() == spec and sent == ["MRPC", "RTE"]


@pytest.mark.parametrize("args,message", [
    (GLUE + ["--tasks=NOPE", "--output_dir=out"], "--tasks: unknown task 'NOPE'"),
    (GLUE + ["--data_dir=no/such", "--output_dir=out"], "--data_dir=no/such: no such folder"),
    (GLUE + ["--data_dir=azureml:glue:1", "--output_dir=out"], "not a data asset"),
    (GLUE + ["--tasks=MRPC", "--output_dir=out", "--", "--seed=3"],
     "submit.py glue sets --seed itself"),
    (GLUE + ["--tasks=MRPC", "--output_dir=out", "--seeds=0"], "at least 1"),
    (GLUE + ["--tasks=MRPC", "--output_dir=out", "--", "--lerning_rate=1"], "lerning_rate"),
    (GLUE + ["--tasks=MRPC", "--output_dir=out", "--", "--tracking_uri=none"],
     "submit.py glue sets --tracking_uri itself"),
    (GLUE[:3] + GLUE[5:] + ["--tasks=MRPC", "--output_dir=out", "--dry-run", "out"],
     "give --vm_size"),
    (["download", "--glue", "out"], "no glue_jobs.json there"),
    (["download", "job1", "--glue", "out"], "takes no SWEEP_JOB"),
    (["download", "job1"], "give SWEEP_JOB and --output_dir"),
])
def test_glue_bad_input_is_one_line_exit_2(run, tmp_path, args, message):
    proc = run(*args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("submit.py: error: "), proc.stderr
    assert message in lines[0]
    assert not (tmp_path / "out").exists()  # not even the grids
