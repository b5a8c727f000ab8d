"""Launch bert_tf's training scripts on Azure ML (SDK v2, `azure-ai-ml`): a thin launcher, no
model logic.

    # a GPU cluster that scales to zero (dedicated; --low_priority for spot nodes)
    python azure/submit.py compute --name gpu-a100 --vm_size Standard_ND96amsr_A100_v4 \\
        --min_nodes 0 --max_nodes 2 --idle_seconds 600
    # a Horovod job on 2 nodes x 8 GPUs (16 MPI workers); after `--`: the script's own flags
    python azure/submit.py train --compute gpu-a100 --vm_size Standard_ND96amsr_A100_v4 \\
        --instance_count 2 --script run_classifier.py -- --task=MRPC --do_train --do_eval \\
        --init_checkpoint=bert-base-uncased --train_batch_size=32 --learning_rate=8e-5
    # a hyperparameter sweep from a search-space file (configs/sweeps/)
    python azure/submit.py sweep --compute gpu-a100 --vm_size Standard_ND96amsr_A100_v4 \\
        --instance_count 1 --sweep configs/sweeps/mrpc_lr.yaml
    python azure/submit.py status JOB        # state (a sweep: its trials by state)
    python azure/submit.py stream JOB        # follow the logs until the job ends
    # a finished sweep's trials -> trials.json + bert_tf.tune's plots (loss_curves.png, ...)
    python azure/submit.py download SWEEP_JOB --output_dir output/mrpc_lr_azure

What a job is: a command job running `python <script> --use_horovod <flags> --output_dir=
${{outputs.output_dir}}` with `MpiDistribution(process_count_per_instance=<GPUs per node>)` on
`--instance_count` nodes: Azure ML starts MPI itself (never horovodrun). The code is the
repository root (minus what .amlignore lists); the image is built from azure/environment/
(Dockerfile: CUDA 12.5, TF 2.18, Horovod 0.28.1 with NCCL and MPI, azureml-mlflow). Flags naming
data (--data_dir, --input_file, --eval_input_file, --train_file, --predict_file,
--init_checkpoint, --vocab_file, --bert_config_file) become job inputs: a local path is uploaded, a datastore URI
(azureml://datastores/NAME/paths/PATH) is mounted; a preset name stays a flag. The GPUs per node
come from the VM size (a table below; `--gpus_per_node` for sizes it does not know).

`--dry-run PATH` writes the job (or cluster) YAML, with local paths relative to the YAML's
folder, and contacts nothing: no workspace config needed, no credential constructed. The YAML can
be submitted as it is with `az ml job create --file PATH`; without --dry-run, submit.py sends
that same YAML (written to a temporary folder and read back with load_job), so what a dry run
shows is what is submitted.

Workspace: `--config PATH` (a workspace config.json), else the environment variables
AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and AZUREML_WORKSPACE_NAME, else config.json or
.azureml/config.json in this folder or a parent (where MLClient.from_config finds it);
credential: DefaultAzureCredential (`az login`, a managed identity, AZURE_CLIENT_* variables).

Bad input (an unknown script or flag, a flag of the wrong type, flags the script itself would
refuse at start-up, a search space that cannot run, a VM size without GPUs, a retired one, no
workspace) is one line `submit.py: error: ...`, exit status 2, before anything is written or
sent. Azure's own failures (no credential among them) are one line too, exit 1.
Nothing printed or written contains a token, key or subscription id (Azure's messages and the
studio links that carry one are redacted); the Azure SDK's DEBUG logging, which prints bearer
tokens, is never turned on.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import glob as globlib
import io
import json
import logging
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENVIRONMENT_DIR = REPO / "azure" / "environment"
PROG = "submit.py"
EXIT_AZURE = 1

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bert_tf.assets import UsageError  # noqa: E402  (after the path set-up)
from bert_tf.cli import EXIT_USAGE  # noqa: E402  (2, as every script of bert_tf)
from bert_tf.flags import SCRIPTS  # noqa: E402

SCHEMAS = {
    "command": "https://azuremlschemas.azureedge.net/latest/commandJob.schema.json",
    "sweep": "https://azuremlschemas.azureedge.net/latest/sweepJob.schema.json",
    "amlcompute": "https://azuremlschemas.azureedge.net/latest/amlCompute.schema.json",
}
DEFAULT_EXPERIMENT = "bert_tf"
WORKSPACE_ENV = ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE_NAME")
SWEEP_TAG = "bert_tf.sweep"


# -- VM sizes --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class VmSize:
    """An Azure VM size: its GPUs per node (0: a CPU size) and their model."""
    name: str
    gpus: int
    gpu: str = ""

    def describe(self) -> str:
        return f"{self.name}: {self.gpus} x {self.gpu}" if self.gpus else f"{self.name}: no GPUs"


# Current sizes with NVIDIA GPUs (whole GPUs only). Every size of a family other than N (D, E, F,
# B, M, L, A, H, ...: Standard_D4s_v3, Standard_E16s_v5) has no GPUs: vm_size_info says so
# without a table.
_SIZES = [
    VmSize("Standard_NC4as_T4_v3", 1, "T4 16GB"),
    VmSize("Standard_NC8as_T4_v3", 1, "T4 16GB"),
    VmSize("Standard_NC16as_T4_v3", 1, "T4 16GB"),
    VmSize("Standard_NC64as_T4_v3", 4, "T4 16GB"),
    VmSize("Standard_NC24ads_A100_v4", 1, "A100 80GB PCIe"),
    VmSize("Standard_NC48ads_A100_v4", 2, "A100 80GB PCIe"),
    VmSize("Standard_NC96ads_A100_v4", 4, "A100 80GB PCIe"),
    VmSize("Standard_ND96asr_v4", 8, "A100 40GB SXM, InfiniBand"),
    VmSize("Standard_ND96amsr_A100_v4", 8, "A100 80GB SXM, InfiniBand"),
    VmSize("Standard_NC40ads_H100_v5", 1, "H100 NVL 94GB"),
    VmSize("Standard_NC80adis_H100_v5", 2, "H100 NVL 94GB"),
    VmSize("Standard_ND96isr_H100_v5", 8, "H100 80GB SXM, InfiniBand"),
    VmSize("Standard_ND96isr_H200_v5", 8, "H200 141GB SXM, InfiniBand"),
    VmSize("Standard_NV36ads_A10_v5", 1, "A10 24GB"),
    VmSize("Standard_NV72ads_A10_v5", 2, "A10 24GB"),
]
VM_SIZES = {size.name.lower(): size for size in _SIZES}

# Retired GPU sizes: (what they were, when they went, what to use instead).
_NCV3 = "the NCv3 series (V100) of the original BERT recipe, retired on 30 September 2025"
_OLD = "retired in September 2023"
RETIRED = {
    "standard_nc6s_v3": (_NCV3, "Standard_NC24ads_A100_v4 (1 x A100 80GB)"),
    "standard_nc12s_v3": (_NCV3, "Standard_NC48ads_A100_v4 (2 x A100 80GB)"),
    "standard_nc24s_v3": (_NCV3, "Standard_NC96ads_A100_v4 (4 x A100 80GB)"),
    "standard_nc24rs_v3": (_NCV3, "Standard_NC96ads_A100_v4 (4 x A100 80GB), or "
                                  "Standard_ND96asr_v4 (8 x A100 with InfiniBand) across nodes"),
    **{f"standard_nc{n}s_v2": (f"the NCv2 series (P100), {_OLD}",
                               "Standard_NC24ads_A100_v4 (1 x A100) or Standard_NC4as_T4_v3")
       for n in ("6", "12", "24", "24r")},
    **{f"standard_nc{n}": (f"the NC series (K80), {_OLD}", "Standard_NC4as_T4_v3 (1 x T4)")
       for n in ("6", "12", "24", "24r")},
    **{f"standard_nd{n}s": (f"the ND series (P40), {_OLD}", "Standard_NC24ads_A100_v4 (1 x A100)")
       for n in ("6", "12", "24", "24r")},
}
# GPU sizes this image cannot use (it is CUDA + NCCL).
NOT_CUDA = {"standard_nd96isr_mi300x_v5": "8 x AMD MI300X"}


def vm_size_info(name: str) -> VmSize | None:
    """The table's entry for `name` (any case); a VmSize with 0 GPUs for any size outside the N
    (GPU) families; None for an N-series size the table does not know. Raises UsageError for a
    retired size (naming a replacement) or a GPU that is not NVIDIA's."""
    key = name.strip().lower()
    if key in RETIRED:
        what, instead = RETIRED[key]
        raise UsageError(f"--vm_size {name}: {what}; use {instead}")
    if key in NOT_CUDA:
        raise UsageError(f"--vm_size {name}: {NOT_CUDA[key]}: the job image is CUDA/NCCL "
                         "(NVIDIA GPUs only)")
    if key in VM_SIZES:
        return VM_SIZES[key]
    match = re.fullmatch(r"(?:standard|basic)_([a-z])\w*", key)
    if match is None:
        raise UsageError(f"--vm_size {name}: not an Azure VM size (write it as "
                         "Standard_NC24ads_A100_v4, ...)")
    if match.group(1) != "n":
        return VmSize(name, 0)
    return None


def gpus_per_node(vm_size: str | None, gpus: int | None, what: str = "an MPI job") -> int | None:
    """Processes per node: the GPUs of `vm_size` (from the table) or `gpus` (--gpus_per_node,
    which may also run fewer processes than a known size has GPUs). None when neither is given.
    Raises UsageError for a size without GPUs, an unknown GPU size without --gpus_per_node, or
    more processes than GPUs."""
    if gpus is not None and gpus < 1:
        raise UsageError(f"--gpus_per_node {gpus}: give 1 or more (one worker per GPU)")
    if vm_size is None:
        return gpus
    info = vm_size_info(vm_size)
    if info is None:
        if gpus is None:
            raise UsageError(f"--vm_size {vm_size}: a GPU size this tool does not know: pass "
                             "--gpus_per_node K (its number of GPUs)")
        return gpus
    if info.gpus == 0:
        raise UsageError(f"--vm_size {vm_size} has no GPUs: {what} runs one Horovod worker per "
                         "GPU; use a GPU size such as Standard_NC24ads_A100_v4 (1 x A100), "
                         "Standard_NC96ads_A100_v4 (4 x A100) or Standard_ND96amsr_A100_v4 "
                         "(8 x A100)")
    if gpus is not None and gpus > info.gpus:
        raise UsageError(f"--gpus_per_node {gpus}: {info.describe()}")
    return gpus or info.gpus


# -- the script's flags ----------------------------------------------------------------------------

# Flags naming data the job must read: (input kind). folder: a folder; files: a file, a glob or a
# comma list of files; checkpoint: a folder, a file, a TF checkpoint prefix or a preset name;
# file: one file.
DATA_FLAGS = {"data_dir": "folder", "input_file": "files", "eval_input_file": "files",
              "train_file": "file", "predict_file": "file",
              "init_checkpoint": "checkpoint", "vocab_file": "file", "bert_config_file": "file"}
RESERVED = {
    "use_horovod": "is set by submit.py (Azure ML starts one MPI worker per GPU): leave it out",
    "output_dir": "is set by submit.py to the job's output folder (${{outputs.output_dir}}, "
                  "downloaded with `az ml job download`): leave it out",
}
_PLACEHOLDER = re.compile(r"\$\{\{\s*([\w.]+)\s*\}\}")


def check_script(script: str) -> str:
    """`script` -> its file name, one of bert_tf.flags.SCRIPTS (run from the repository root)."""
    path = Path(script.replace("\\", "/"))
    name = path.name
    if name not in SCRIPTS or (str(path.parent) not in ("", ".") and
                               path.expanduser().resolve() != REPO / name):
        raise UsageError(f"--script {script}: not one of {', '.join(SCRIPTS)} (the scripts at "
                         "the repository root)")
    return name


def parse_script_flags(script: str, args: list[str], complete: bool = False
                       ) -> list[tuple[str, str | None]]:
    """The flags after `--` -> [(name, value)] (value None for a boolean given as --name or
    --noname), checked against the script's own absl definitions: an unknown flag, a value of
    the wrong type or outside its enum, an argument that is not a flag, or a flag the launcher
    sets is a UsageError naming it. A --flagfile (configs/pretraining/*.flags) must sit in the
    repository, which travels with the job: it is rewritten relative to the repository root,
    and its flags are checked too. `complete`: these are all the script's flags (train, not a
    sweep's extra flags), so what the script itself refuses at start-up (nothing to do, an
    unknown task, a learning rate <= 0, --eval_every_steps without --do_eval, ...) is checked
    too (bert_tf.sweeps.check_script_args)."""
    from absl import flags as absl_flags

    from bert_tf.flags import script_flags

    fv = script_flags(script)
    pairs: list[tuple[str, str | None]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-") or arg.strip("-") == "":
            raise UsageError(f"{script}: {arg!r} is not a flag (write the script's flags as "
                             "--name=value after --)")
        name, eq, value = arg.lstrip("-").partition("=")
        flag = fv[name] if name in fv else None
        negated = name.startswith("no") and name[2:] in fv and fv[name[2:]].boolean
        if eq:
            pairs.append((name, value))
        elif name == "flagfile" or (flag is not None and not flag.boolean):
            if i >= len(args):
                raise UsageError(f"{script}: flag --{name} needs a value (--{name}=VALUE)")
            pairs.append((name, args[i]))
            i += 1
        elif flag is not None or negated:
            pairs.append((name, None))
        else:
            near = difflib.get_close_matches(name, list(fv), n=1)
            raise UsageError(f"{script}: unknown flag --{name}"
                             + (f" (did you mean --{near[0]}?)" if near else "")
                             + f" (see python {script} --helpshort)")
    local = list(pairs)  # what absl reads here: flag files by their local path
    for k, (name, value) in enumerate(pairs):
        if name == "flagfile":
            path = Path(value).expanduser().resolve()
            if not path.is_file():
                raise UsageError(f"{script}: --flagfile={value}: no such file")
            try:
                pairs[k] = (name, path.relative_to(REPO).as_posix())
            except ValueError:
                raise UsageError(f"{script}: --flagfile={value}: a flag file must sit in the "
                                 "repository (it is uploaded with the code), e.g. under "
                                 "configs/") from None
            local[k] = (name, str(path))
    try:
        fv([script] + flag_words(local))
    except absl_flags.Error as e:
        raise UsageError(f"{script}: {' '.join(str(e).split())} (see python {script} "
                         "--helpshort)") from None
    for name, reason in RESERVED.items():
        if fv[name].present:
            raise UsageError(f"{script}: --{name} {reason}")
    if complete:
        from bert_tf.sweeps import check_script_args

        check_script_args(script, fv)  # a SweepError: a UsageError naming the script
    given = {name for name, _ in pairs}
    for name, kind in DATA_FLAGS.items():
        if name not in fv or not fv[name].present or name in given:
            continue
        value = fv[name].value
        if not value or is_remote(value):
            continue
        from bert_tf.checkpoints.presets import PRESETS

        inside = not os.path.isabs(value) and (
            globlib.glob(str(REPO / value)) or (REPO / value).exists() or
            (REPO / (value + ".index")).exists())
        if not inside and not (kind == "checkpoint" and value in PRESETS):
            raise UsageError(f"{script}: --{name}={value} (from a --flagfile) is read in the job "
                             "relative to the repository root, where it does not exist: give "
                             f"--{name} after -- instead (a local path becomes a job input)")
    return pairs


def flag_words(pairs: list[tuple[str, str | None]]) -> list[str]:
    return [f"--{n}" if v is None else f"--{n}={v}" for n, v in pairs]


def shell_word(arg: str) -> str:
    """One command-line word for the job's shell. ${{...}} placeholders are replaced by Azure ML
    before the shell runs, so they count as plain text; anything else the shell would touch
    (spaces, globs, quotes) is quoted."""
    if re.fullmatch(r"[\w@%+=:,./-]*", _PLACEHOLDER.sub("x", arg)):
        return arg
    return shlex.quote(arg)


# -- job inputs ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class JobInput:
    """One job input: `path` is a URI as given, or an absolute local path (uploaded)."""
    name: str
    type: str  # uri_folder or uri_file
    path: str
    local: bool


_REMOTE = re.compile(r"^(azureml:|[a-z][a-z0-9+.-]*://)", re.IGNORECASE)
_GLOB = re.compile(r"[*?\[]")
_CKPT_PREFIX = re.compile(r"(.*\.ckpt(-\d+)?|ckpt-\d+)$")


def is_remote(value: str) -> bool:
    return bool(_REMOTE.match(value)) and not re.match(r"^[a-zA-Z]:[\\/]", value)


def _split_remote(flag: str, value: str) -> tuple[str, str]:
    parent, _, last = value.rstrip("/").rpartition("/")
    if not parent or parent.endswith(":/") or parent.endswith("://"):
        raise UsageError(f"--{flag}={value}: name a file inside a folder of the datastore")
    return parent, last


def resolve_data_flag(flag: str, value: str, kind: str) -> tuple[JobInput | None, str]:
    """A data flag's value -> (the job input, the flag's value in the job's command), e.g.
    --data_dir=glue/MRPC -> (uri_folder upload of glue/MRPC, ${{inputs.data_dir}});
    --init_checkpoint=azureml://.../uncased_L-12_H-768_A-12/bert_model.ckpt -> (the folder,
    ${{inputs.init_checkpoint}}/bert_model.ckpt); a glob or comma list of files -> their folder
    and the pattern under it; a preset name -> (None, unchanged). Raises UsageError for a local
    path that does not exist."""
    ref = "${{inputs.%s}}" % flag
    items = [v for v in value.split(",") if v] if kind == "files" else [value]
    if len(items) > 1:
        folders, names = set(), []
        for item in items:
            folder, name = (_split_remote(flag, item) if is_remote(item) else
                            (os.path.dirname(os.path.abspath(os.path.expanduser(item))),
                             os.path.basename(item)))
            if not is_remote(item) and not (globlib.glob(os.path.expanduser(item)) or
                                            os.path.exists(os.path.expanduser(item))):
                raise UsageError(f"--{flag}: {item}: no such file here")
            folders.add(folder)
            names.append(name)
        if len(folders) > 1:
            raise UsageError(f"--{flag}={value}: the files of a comma list must sit in one "
                             "folder (it becomes one job input): move them together or use a glob")
        folder = folders.pop()
        return (JobInput(flag, "uri_folder", folder, not is_remote(items[0])),
                ",".join(f"{ref}/{n}" for n in names))

    if is_remote(value):
        if value.lower().startswith("azureml:") and "//" not in value:  # a data asset
            return JobInput(flag, "uri_file" if kind == "file" else "uri_folder", value,
                            False), ref
        if kind == "file":
            return JobInput(flag, "uri_file", value, False), ref
        last = value.rstrip("/").rpartition("/")[2]
        if _GLOB.search(last) or (kind == "checkpoint" and _CKPT_PREFIX.fullmatch(last)):
            parent, last = _split_remote(flag, value)
            return JobInput(flag, "uri_folder", parent, False), f"{ref}/{last}"
        if _GLOB.search(value.split("://", 1)[-1].rpartition("/")[0]):
            raise UsageError(f"--{flag}={value}: only the last part of a path may be a glob")
        if not value.endswith("/") and kind in ("files", "checkpoint", "any") and "." in last:
            return JobInput(flag, "uri_file", value, False), ref
        return JobInput(flag, "uri_folder", value, False), ref

    path = os.path.abspath(os.path.expanduser(value))
    if kind == "checkpoint" and not os.path.exists(path) and os.path.exists(path + ".index"):
        return JobInput(flag, "uri_folder", os.path.dirname(path), True), \
            f"{ref}/{os.path.basename(path)}"
    if os.path.isdir(path):
        if kind == "file":
            raise UsageError(f"--{flag}={value} is a folder: give the file")
        return JobInput(flag, "uri_folder", path, True), ref
    if os.path.isfile(path):
        if kind == "folder":
            raise UsageError(f"--{flag}={value} is a file: give the folder holding it")
        return JobInput(flag, "uri_file", path, True), ref
    if kind == "files" and _GLOB.search(os.path.basename(path)):
        if _GLOB.search(os.path.dirname(path)):
            raise UsageError(f"--{flag}={value}: only the last part of a path may be a glob")
        if not globlib.glob(path):
            raise UsageError(f"--{flag}={value}: the pattern matches no file here")
        return JobInput(flag, "uri_folder", os.path.dirname(path), True), \
            f"{ref}/{os.path.basename(path)}"
    if kind == "checkpoint":
        from bert_tf.checkpoints.presets import PRESETS

        if value in PRESETS:
            return None, value  # downloaded inside the job
        raise UsageError(f"--{flag}={value}: no such file or folder here, and not a preset "
                         f"({', '.join(PRESETS)}); give a local path (uploaded with the job) or "
                         "a datastore URI (azureml://datastores/NAME/paths/PATH)")
    raise UsageError(f"--{flag}={value}: no such file or folder here; give a local path (uploaded "
                     "with the job) or a datastore URI (azureml://datastores/NAME/paths/PATH)")


def parse_named_inputs(specs: list[str] | None) -> dict[str, str]:
    """--inputs NAME=PATH (repeatable) -> {name: path}."""
    out: dict[str, str] = {}
    for spec in specs or []:
        name, eq, path = spec.partition("=")
        if not eq or not path or not re.fullmatch(r"[A-Za-z_]\w*", name):
            raise UsageError(f"--inputs {spec}: write NAME=PATH (NAME a flag of the script, or a "
                             "name the flags use as ${{inputs.NAME}})")
        if name in out:
            raise UsageError(f"--inputs {name}: given twice")
        out[name] = path
    return out


def plan_inputs(script: str, pairs: list[tuple[str, str | None]], named: dict[str, str]
                ) -> tuple[list[tuple[str, str | None]], dict[str, JobInput]]:
    """The script's flags and --inputs -> (the flags as the job runs them, the job's inputs).
    A data flag (DATA_FLAGS) becomes an input of its own name; --inputs NAME=PATH sets the flag
    --NAME from an input when the script has that flag, else declares an input the flags refer
    to as ${{inputs.NAME}}."""
    from bert_tf.flags import script_flags

    fv = script_flags(script)
    given = {name for name, _ in pairs}
    forced = set()
    pairs = list(pairs)
    free: dict[str, str] = {}
    for name, path in named.items():
        if name in fv:
            if fv[name].flag_type() != "string":
                raise UsageError(f"--inputs {name}: --{name} is not a path flag of {script}")
            if name in given:
                raise UsageError(f"--inputs {name}=... and --{name} both given: keep one")
            if name in RESERVED:
                raise UsageError(f"--inputs {name}: --{name} {RESERVED[name]}")
            pairs.append((name, path))
            forced.add(name)
        else:
            free[name] = path
    inputs: dict[str, JobInput] = {}
    out = []
    for name, value in pairs:
        if value and (name in DATA_FLAGS or name in forced) and not _PLACEHOLDER.search(value):
            job_input, value = resolve_data_flag(name, value, DATA_FLAGS.get(name, "any"))
            if job_input is not None:
                inputs[name] = job_input
        out.append((name, value))
    for name, path in free.items():
        job_input, _ = resolve_data_flag(name, path, "any")
        inputs[name] = job_input
    used = {m.group(1)[len("inputs."):] for _, v in out if v
            for m in _PLACEHOLDER.finditer(v) if m.group(1).startswith("inputs.")}
    undeclared = sorted(used - set(inputs))
    if undeclared:
        name = undeclared[0]
        raise UsageError(f"${{{{inputs.{name}}}}} is used by a flag but no input {name} is given: "
                         f"add --inputs {name}=PATH")
    unused = sorted(set(free) - used)
    if unused:
        name = unused[0]
        raise UsageError(f"--inputs {name}: the script has no flag --{name} and no flag refers to "
                         f"${{{{inputs.{name}}}}}")
    return out, inputs


# -- building the jobs -----------------------------------------------------------------------------

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
    from azure.ai.ml.sweep import (BanditPolicy, Objective, RandomSamplingAlgorithm, SweepJob,
                                   SweepJobLimits)

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
        sampling_algorithm=RandomSamplingAlgorithm(seed=spec.seed),
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


# -- workspace, credential, redaction --------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Workspace:
    subscription_id: str
    resource_group: str
    workspace_name: str
    source: str  # where it came from, for messages (never the values)


_HOW_TO_CONFIGURE = ("pass --config PATH (the workspace's config.json: Azure portal, the "
                     "workspace's Overview, 'Download config.json'), put it in ./config.json or "
                     "./.azureml/config.json, or set AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP "
                     "and AZUREML_WORKSPACE_NAME")


def _read_config(path: Path) -> Workspace:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"--config {path}: cannot read it as JSON ({type(e).__name__})") from None
    if not isinstance(raw, dict):
        raise UsageError(f"--config {path}: expected a JSON object")
    scope = raw.get("Scope") or raw.get("scope")
    if scope:
        m = re.search(r"/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/"
                      r"Microsoft\.MachineLearningServices/workspaces/([^/]+)", scope, re.I)
        if m:
            return Workspace(*m.groups(), source=str(path))
    missing = [k for k in ("subscription_id", "resource_group", "workspace_name") if not raw.get(k)]
    if missing:
        raise UsageError(f"{path}: not a workspace config (no {', '.join(missing)}); "
                         + _HOW_TO_CONFIGURE)
    return Workspace(str(raw["subscription_id"]), str(raw["resource_group"]),
                     str(raw["workspace_name"]), source=str(path))


def find_workspace(config: str | None) -> Workspace:
    """--config, else the three environment variables, else config.json / .azureml/config.json
    in the working folder or a parent. Raises UsageError saying how to provide one."""
    if config:
        path = Path(config).expanduser()
        if not path.is_file():
            raise UsageError(f"--config {config}: no such file; " + _HOW_TO_CONFIGURE)
        return _read_config(path)
    values = [os.environ.get(k, "").strip() for k in WORKSPACE_ENV]
    if all(values):
        return Workspace(*values, source="environment")
    if any(values):
        missing = [k for k, v in zip(WORKSPACE_ENV, values) if not v]
        raise UsageError(f"{', '.join(missing)} not set (the workspace is read from "
                         f"{', '.join(WORKSPACE_ENV)} together)")
    folder = Path.cwd().resolve()
    for candidate in (folder, *folder.parents):
        for path in (candidate / "config.json", candidate / ".azureml" / "config.json"):
            if path.is_file():
                return _read_config(path)
    raise UsageError("no Azure ML workspace configured: " + _HOW_TO_CONFIGURE)


class Redactor:
    """Removes what must never be printed: the subscription id (from the workspace and the
    environment), /subscriptions/<guid> in any ARM id or studio link, bearer tokens, JWTs and
    signed-URL keys."""

    _PATTERNS = [
        (re.compile(r"(/subscriptions/)[0-9a-fA-F-]{36}", re.I), r"\1<redacted>"),
        (re.compile(r"(Bearer\s+)[\w.~+/=-]+", re.I), r"\1<redacted>"),
        (re.compile(r"eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]+"), "<redacted-token>"),
        (re.compile(r"\b((?:sig|signature|sas|key|token|secret|password|client_secret|"
                    r"access_token)=)[^&\s\"']+", re.I), r"\1<redacted>"),
        (re.compile(r"(AccountKey=)[^;\s]+", re.I), r"\1<redacted>"),
    ]

    def __init__(self):
        self.secrets = {os.environ.get("AZURE_SUBSCRIPTION_ID", "").strip()} - {""}

    def add(self, secret: str | None) -> None:
        if secret and secret.strip():
            self.secrets.add(secret.strip())

    def __call__(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = re.sub(re.escape(secret), "<subscription-id>", text, flags=re.I)
        for pattern, repl in self._PATTERNS:
            text = pattern.sub(repl, text)
        return text


class _RedactingStream:
    """A line-buffered stand-in for stdout/stderr while the SDK runs: it prints studio links
    (`Web View: https://ml.azure.com/...?wsid=/subscriptions/...`) by itself."""

    def __init__(self, stream, redact: Redactor):
        self._stream, self._redact, self._buffer = stream, redact, ""

    def write(self, text):
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            self._stream.write(self._redact(line) + "\n")
        return len(text)

    def flush(self):
        if self._buffer:
            self._stream.write(self._redact(self._buffer))
            self._buffer = ""
        self._stream.flush()

    def isatty(self):
        return False

    def __getattr__(self, name):
        return getattr(self._stream, name)


class AzureFailure(Exception):
    """Azure (or the SDK) refused or failed; the message is redacted and on one line."""


@contextlib.contextmanager
def talking_to_azure(redact: Redactor, what: str):
    """Run SDK calls with stdout/stderr redacted; any SDK exception becomes one AzureFailure
    line (a UsageError passes through)."""
    quiet_azure_logging()
    out, err = _RedactingStream(sys.stdout, redact), _RedactingStream(sys.stderr, redact)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                yield
            finally:
                out.flush()
                err.flush()
    except (UsageError, KeyboardInterrupt, AzureFailure):
        raise
    except Exception as e:  # noqa: BLE001 (whatever the SDK raises: one line, redacted)
        message = " ".join(str(e).split())
        if type(e).__name__ == "ClientAuthenticationError":
            message = ("no Azure credential (DefaultAzureCredential): sign in with `az login`, or "
                       "set AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET. "
                       + message.split(". ")[0])
        if len(message) > 600:
            message = message[:600] + " ..."
        raise AzureFailure(redact(f"{what}: {type(e).__name__}: {message}")) from None


def make_client(workspace: Workspace):
    """An MLClient for the workspace with DefaultAzureCredential. Constructing either sends
    nothing; the first operation requests a token."""
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    return MLClient(DefaultAzureCredential(), workspace.subscription_id,
                    workspace.resource_group, workspace.workspace_name)


def quiet_azure_logging() -> None:
    """The Azure SDK's loggers stay at WARNING or above whatever the root logger says: their
    DEBUG records include request headers, bearer tokens among them. The credential and pipeline
    loggers (azure.identity, azure.core, msal) stay at ERROR: their warnings repeat, over a dozen
    lines, what the exception says (DefaultAzureCredential's every attempt), and a failure is
    the one line talking_to_azure makes of the exception. So does the SDK's "This is an
    experimental class" chatter, printed while a job is validated."""
    for name in ("azure", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("azure.identity", "azure.core", "azure.core.pipeline.policies.http_logging_policy",
                 "msal", "azure.ai.ml._utils._experimental"):
        logging.getLogger(name).setLevel(logging.ERROR)


# -- reading a sweep's trials back (MLflow) --------------------------------------------------------

# MLflow run status -> bert_tf.tune trial state. Azure ML ends an early-terminated trial as
# canceled, which its MLflow store reports as KILLED.
STATES = {"FINISHED": "COMPLETE", "COMPLETED": "COMPLETE", "KILLED": "PRUNED",
          "CANCELED": "PRUNED", "CANCELLED": "PRUNED", "FAILED": "FAIL", "RUNNING": "RUNNING",
          "SCHEDULED": "RUNNING"}


def _curve(client, run_id: str, key: str) -> list:
    """[(step, value)] of one metric, by step; a step logged twice keeps its latest value."""
    by_step = {}
    for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp)):
        by_step[int(m.step)] = float(m.value)
    return sorted(by_step.items())


def _param_value(param, raw: str):
    if param.type == "choice":
        for value in param.values:
            if str(value) == raw:
                return value
        for value in param.values:
            with contextlib.suppress(TypeError, ValueError):
                if float(value) == float(raw):
                    return value
        return raw
    try:
        return float(raw)
    except (TypeError, ValueError):
        return raw


def read_trials(tracking_uri: str, parent_run_id: str, spec, experiment_name: str | None = None
                ) -> list[dict]:
    """The trials of a sweep from an MLflow store: every run tagged mlflow.parentRunId =
    parent_run_id (how Azure ML's MLflow marks a sweep's children) -> dicts with the fields of
    bert_tf.tune.TrialRecord, by trial number: number (the `_N` suffix of Azure's trial names,
    else the start order), params (the search-space flags, typed as in the file), state
    (COMPLETE, PRUNED for early-terminated, FAIL, RUNNING), value (the last reported primary
    metric; None for a failed trial), loss_curve [(step, train/loss)], metric_curve [(step,
    primary metric)]."""
    from mlflow.tracking import MlflowClient

    if not re.fullmatch(r"[\w.-]+", parent_run_id):
        raise UsageError(f"job name {parent_run_id!r}: letters, digits, '_', '-' and '.' only")
    client = MlflowClient(tracking_uri=tracking_uri)
    if experiment_name:
        experiment = client.get_experiment_by_name(experiment_name)
        experiment_ids = [experiment.experiment_id] if experiment else []
    else:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    runs, token = [], None
    while experiment_ids:
        page = client.search_runs(experiment_ids,
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                  max_results=500, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    numbered = []
    for run in runs:
        number = None
        for name in (run.info.run_id, run.info.run_name or ""):
            match = re.search(r"_(\d+)$", name)
            if match:
                number = int(match.group(1))
                break
        numbered.append((number, run.info.start_time or 0, run))
    next_number = max([n for n, _, _ in numbered if n is not None], default=-1) + 1
    trials = []
    for number, _, run in sorted(numbered, key=lambda t: (t[0] is None, t[0] or 0, t[1])):
        if number is None:
            number, next_number = next_number, next_number + 1
        state = STATES.get(str(run.info.status).upper(), "RUNNING")
        metric_curve = _curve(client, run.info.run_id, spec.primary_metric)
        params = {name: _param_value(param, run.data.params[name])
                  for name, param in spec.space.items() if name in run.data.params}
        trials.append(dict(
            number=number, params=params, state=state,
            value=metric_curve[-1][1] if metric_curve and state != "FAIL" else None,
            loss_curve=_curve(client, run.info.run_id, "train/loss"),
            metric_curve=metric_curve))
    return trials


def write_trials_report(spec, trials: list[dict], output_dir: str) -> dict:
    """trials.json (the TrialRecords as JSON), then bert_tf.tune.write_report's plots and tables
    (loss_curves.png, metric_vs_lr.png, trials.md/csv). Returns write_report's summary."""
    os.makedirs(output_dir, exist_ok=True)
    write_file(Path(output_dir) / "trials.json", json.dumps(trials, indent=1) + "\n")
    from bert_tf.tune import TrialRecord, write_report

    return write_report(spec, [TrialRecord(**t) for t in trials], output_dir)


# -- subcommands -----------------------------------------------------------------------------------

def _check_counts(args) -> None:
    if args.instance_count < 1:
        raise UsageError(f"--instance_count {args.instance_count}: give 1 or more nodes")
    if not re.fullmatch(r"[A-Za-z0-9][\w-]{0,254}", args.experiment_name):
        raise UsageError(f"--experiment_name {args.experiment_name!r}: letters, digits, '_' and "
                         "'-' only")
    if not args.compute.strip():
        raise UsageError("--compute: give the cluster's name")


def _describe_gpus(plan: JobPlan) -> str:
    size = ""
    if plan.vm_size:
        info = vm_size_info(plan.vm_size)
        size = f" ({info.describe()})" if info else f" ({plan.vm_size})"
    workers = plan.instance_count * plan.gpus
    return (f"{plan.instance_count} node(s) x {plan.gpus} GPU(s){size} = {workers} Horovod "
            f"worker(s) (--train_batch_size is per worker)")


def _finish_plan(plan: JobPlan, args, redact: Redactor, client) -> None:
    """Fill in the GPUs per node: from the flags, else (submitting) the cluster's VM size."""
    if plan.gpus is not None:
        return
    if args.dry_run:
        raise UsageError("give --vm_size (the cluster's VM size) or --gpus_per_node: a dry run "
                         "does not ask the workspace for the cluster's size")
    with talking_to_azure(redact, f"reading cluster {args.compute}"):
        size = getattr(client.compute.get(args.compute), "size", None)
    if not size:
        raise UsageError(f"cluster {args.compute} has no VM size (not an AmlCompute cluster?): "
                         "pass --gpus_per_node")
    plan.vm_size = size
    plan.gpus = gpus_per_node(size, args.gpus_per_node)


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


def _submit_or_write(entity, kind: str, plan: JobPlan, path: Path | None, redact, client,
                     summary: list[str]) -> int:
    """Write the job's YAML to `path` (--dry-run, checked by check_dry_run_path), else submit
    exactly that YAML read back (loaded_back)."""
    if path is not None:
        write_file(path, job_yaml(entity, path, kind, plan))
        print(f"{PROG}: wrote {path} ({kind} job; nothing submitted)")
        for line in summary:
            print("  " + line)
        print(f"  submit it: az ml job create --file {path}  (or rerun without --dry-run)")
        return 0
    with talking_to_azure(redact, f"submitting the {kind} job"), \
            loaded_back(entity, kind, plan) as job:
        created = client.jobs.create_or_update(job)
    print(redact(f"{PROG}: submitted {kind} job {created.name} ({created.status}), experiment "
                 f"{plan.experiment_name}"))
    for line in summary:
        print("  " + line)
    print(f"  follow it: python azure/submit.py stream {created.name}")
    print(f"  its state: python azure/submit.py status {created.name}")
    if kind == "sweep":
        print(f"  when it ends: python azure/submit.py download {created.name} "
              "--output_dir output/<name>")
    return 0


def _connect(args, redact: Redactor):
    """The MLClient of a command that talks to Azure, or None for a dry run (nothing is
    constructed then: no credential, no workspace needed)."""
    if getattr(args, "dry_run", None):
        return None
    workspace = find_workspace(args.config)
    redact.add(workspace.subscription_id)
    return make_client(workspace)


def cmd_train(args, extra: list[str], redact: Redactor) -> int:
    script = check_script(args.script)
    pairs = parse_script_flags(script, extra, complete=True)
    _check_counts(args)
    gpus = gpus_per_node(args.vm_size, args.gpus_per_node, f"a Horovod job of {script}")
    flags, inputs = plan_inputs(script, pairs, parse_named_inputs(args.inputs))
    dry_run = check_dry_run_path(args.dry_run)
    client = _connect(args, redact)
    plan = JobPlan(script=script, flags=flags, inputs=inputs, compute=args.compute,
                   instance_count=args.instance_count, gpus=gpus, vm_size=args.vm_size,
                   experiment_name=args.experiment_name,
                   display_name=args.display_name or Path(script).stem,
                   tags={"bert_tf.script": script},
                   output_path=check_output_path(args.output_path))
    _finish_plan(plan, args, redact, client)
    job = build_command_job(plan)
    summary = [f"compute {plan.compute}: {_describe_gpus(plan)}", f"command: {job.command}"]
    summary += [f"input {n}: {i.type} {'upload of ' if i.local else ''}{i.path}"
                for n, i in inputs.items()]
    return _submit_or_write(job, "command", plan, dry_run, redact, client, summary)


def cmd_sweep(args, extra: list[str], redact: Redactor) -> int:
    from bert_tf import sweeps

    spec = sweeps.load(args.sweep)
    pairs = parse_script_flags(spec.script, extra)
    merged = spec.check_flags(flag_words(pairs))
    _check_counts(args)
    gpus = gpus_per_node(args.vm_size, args.gpus_per_node, f"a Horovod job of {spec.script}")
    fixed = [(name, value if eq else None) for name, eq, value in
             (word[2:].partition("=") for word in spec.flag_args(merged))]
    flags, inputs = plan_inputs(spec.script, fixed, parse_named_inputs(args.inputs))
    dry_run = check_dry_run_path(args.dry_run)
    client = _connect(args, redact)
    sweep_path = Path(args.sweep).resolve()
    try:
        tag = sweep_path.relative_to(REPO).as_posix()
    except ValueError:
        tag = str(sweep_path)
    plan = JobPlan(script=spec.script, flags=flags, inputs=inputs, compute=args.compute,
                   instance_count=args.instance_count, gpus=gpus, vm_size=args.vm_size,
                   experiment_name=args.experiment_name,
                   display_name=args.display_name or sweep_path.stem,
                   tags={"bert_tf.script": spec.script, SWEEP_TAG: tag})
    _finish_plan(plan, args, redact, client)
    job = build_sweep_job(plan, spec)
    space = []
    for name, param in spec.space.items():
        if param.type == "loguniform":
            low, high = param.log_bounds()
            space.append(f"{name} loguniform {param.low:g}..{param.high:g} "
                         f"(LogUniform({low:.4f}, {high:.4f}): natural logs)")
        elif param.type == "uniform":
            space.append(f"{name} uniform {param.low:g}..{param.high:g}")
        else:
            space.append(f"{name} choice {list(param.values)}")
    summary = [f"compute {plan.compute}, each trial: {_describe_gpus(plan)}",
               f"trial command: {job.trial.command}",
               "search space: " + "; ".join(space),
               f"objective: {spec.goal} {spec.primary_metric}; random sampling, seed {spec.seed}; "
               f"{spec.max_total_trials} trials, {spec.max_concurrent_trials} at a time"]
    return _submit_or_write(job, "sweep", plan, dry_run, redact, client, summary)


def cmd_compute(args, extra, redact: Redactor) -> int:
    if not args.name.strip():
        raise UsageError("--name: give the cluster a name")
    if args.max_nodes < 1:
        raise UsageError(f"--max_nodes {args.max_nodes}: give 1 or more")
    if not 0 <= args.min_nodes <= args.max_nodes:
        raise UsageError(f"--min_nodes {args.min_nodes}: between 0 and --max_nodes "
                         f"{args.max_nodes} (0 lets the cluster scale to zero, free when idle)")
    if args.idle_seconds < 0:
        raise UsageError(f"--idle_seconds {args.idle_seconds}: give 0 or more seconds")
    info = vm_size_info(args.vm_size)
    if info is None:
        note = "a GPU size this tool does not know: train/sweep will need --gpus_per_node"
    elif info.gpus == 0:
        note = "no GPUs: train and sweep refuse it (they run one Horovod worker per GPU)"
    else:
        note = (f"{info.describe()}: train/sweep run {info.gpus} MPI worker(s) per node "
                "(process_count_per_instance)")
    path = check_dry_run_path(args.dry_run)
    client = _connect(args, redact)
    from azure.ai.ml.entities import AmlCompute

    compute = AmlCompute(name=args.name, size=info.name if info else args.vm_size,
                         min_instances=args.min_nodes, max_instances=args.max_nodes,
                         idle_time_before_scale_down=args.idle_seconds,
                         tier="low_priority" if args.low_priority else "dedicated")
    tier = "low-priority" if args.low_priority else "dedicated"
    summary = (f"cluster {args.name}: {args.min_nodes}..{args.max_nodes} {tier} node(s), scale "
               f"down after {args.idle_seconds} s idle; {note}")
    if path is not None:
        write_file(path, job_yaml(compute, path, "amlcompute"))
        print(f"{PROG}: wrote {path} (nothing created)\n  {summary}\n"
              f"  create it: az ml compute create --file {path}  (or rerun without --dry-run)")
        return 0
    with talking_to_azure(redact, f"creating cluster {args.name}"):
        result = client.compute.begin_create_or_update(compute).result()
    print(redact(f"{PROG}: cluster {result.name} ready ({result.size})\n  {summary}"))
    return 0


def _check_job_name(name: str) -> str:
    if not re.fullmatch(r"[\w.-]+", name):
        raise UsageError(f"job {name!r}: a job name is letters, digits, '_', '-' and '.'")
    return name


def cmd_status(args, extra, redact: Redactor) -> int:
    name = _check_job_name(args.job)
    client = _connect(args, redact)
    with talking_to_azure(redact, f"reading job {name}"):
        job = client.jobs.get(name)
        lines = [f"{job.name}: {job.status} ({job.type} job, experiment {job.experiment_name}, "
                 f"compute {str(job.compute or '-').rsplit('/', 1)[-1]})"]
        if job.type == "sweep":
            counts: dict[str, int] = {}
            for child in client.jobs.list(parent_job_name=name):
                counts[child.status] = counts.get(child.status, 0) + 1
            lines.append("trials: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                                       or "none yet"))
    for line in lines:
        print(redact(line))
    print(f"  logs: python azure/submit.py stream {name}")
    return 0


def cmd_stream(args, extra, redact: Redactor) -> int:
    name = _check_job_name(args.job)
    client = _connect(args, redact)
    with talking_to_azure(redact, f"streaming job {name}"):
        client.jobs.stream(name)
    return 0


def require_azureml_mlflow() -> None:
    """A workspace's MLflow store (azureml://...) is read through the azureml-mlflow plugin."""
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        raise UsageError("download reads the trials through MLflow: pip install mlflow-skinny")
    try:
        plugin = importlib.util.find_spec("azureml.mlflow")
    except ModuleNotFoundError:
        plugin = None
    if plugin is None:
        raise UsageError("download reads the workspace's MLflow store, which needs the Azure ML "
                         "plugin: pip install azureml-mlflow (or pip install -e '.[azure]')")


def cmd_download(args, extra, redact: Redactor) -> int:
    from bert_tf import sweeps

    name = _check_job_name(args.job)
    spec = sweeps.load(args.sweep) if args.sweep else None
    if os.path.isfile(args.output_dir):
        raise UsageError(f"--output_dir {args.output_dir} is a file: give a folder")
    require_azureml_mlflow()
    client = _connect(args, redact)
    with talking_to_azure(redact, f"reading sweep {name}"):
        job = client.jobs.get(name)
        if job.type != "sweep":
            raise UsageError(f"job {name} is a {job.type} job, not a sweep")
        if spec is None:
            tag = (job.tags or {}).get(SWEEP_TAG)
            path = Path(tag) if tag and Path(tag).is_absolute() else REPO / str(tag)
            if not tag or not path.is_file():
                raise UsageError(f"job {name} does not say which search-space file it ran "
                                 f"({tag or 'no ' + SWEEP_TAG + ' tag'}): pass --sweep PATH")
            spec = sweeps.load(str(path))
        metric = getattr(job.objective, "primary_metric", None)
        if metric and metric != spec.primary_metric:
            raise UsageError(f"sweep {name} optimised {metric}, {spec.path} says "
                             f"{spec.primary_metric}: pass the --sweep file it was submitted with")
        tracking_uri = client.workspaces.get(client.workspace_name).mlflow_tracking_uri
        trials = read_trials(tracking_uri, name, spec, job.experiment_name)
    if not trials:
        raise UsageError(f"sweep {name} has no trials yet (python azure/submit.py status {name})")
    written = write_trials_report(spec, trials, args.output_dir)
    states: dict[str, int] = {}
    for trial in trials:
        states[trial["state"]] = states.get(trial["state"], 0) + 1
    print(f"{PROG}: {len(trials)} trial(s) of sweep {name} "
          f"({', '.join(f'{n} {s}' for s, n in sorted(states.items()))}) -> {args.output_dir}")
    print(f"  {Path(args.output_dir) / 'trials.json'}")
    for path in (written or {}).values():
        print(f"  {path}")
    return 0


# -- command line ----------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (`submit.py: error: ...`, exit 2) like every other bad
    input, instead of the usage block plus a line."""

    def error(self, message):
        raise UsageError(message + f" (python azure/submit.py {self._sub()}--help)")

    def _sub(self):
        parts = self.prog.split()
        return parts[-1] + " " if len(parts) > 1 else ""


def build_parser() -> argparse.ArgumentParser:
    examples = __doc__.split("\n\n")[1]
    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="examples:\n" + examples + "\n\nMore: README.md, 'Azure ML'.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def workspace_option(p):
        p.add_argument("--config", metavar="PATH", help="workspace config.json (default: "
                       "$AZURE_SUBSCRIPTION_ID/$AZURE_RESOURCE_GROUP/$AZUREML_WORKSPACE_NAME, else "
                       "./config.json or ./.azureml/config.json)")

    def dry_run_option(p, what):
        p.add_argument("--dry-run", "--dry_run", dest="dry_run", metavar="PATH",
                       help=f"write the {what} YAML to PATH and stop: nothing is contacted")

    c = sub.add_parser("compute", help="create or update a GPU cluster (AmlCompute)")
    c.add_argument("--name", required=True, help="cluster name")
    c.add_argument("--vm_size", required=True, help="e.g. Standard_ND96amsr_A100_v4")
    c.add_argument("--min_nodes", type=int, default=0, help="nodes kept running (default 0)")
    c.add_argument("--max_nodes", type=int, required=True, help="most nodes")
    c.add_argument("--low_priority", action="store_true", help="low-priority (spot) nodes")
    c.add_argument("--idle_seconds", type=int, default=600,
                   help="idle seconds before a node is released (default 600)")
    dry_run_option(c, "cluster")
    workspace_option(c)

    for command, what in (("train", "a Horovod command job"), ("sweep", "a sweep job")):
        p = sub.add_parser(command, help=f"submit {what} (script flags after --)")
        p.add_argument("--compute", required=True, help="cluster name")
        p.add_argument("--instance_count", type=int, required=True, help="nodes")
        if command == "train":
            p.add_argument("--script", required=True, help=" | ".join(SCRIPTS))
            p.add_argument("--output_path", metavar="URI",
                           help="a datastore folder (azureml://datastores/NAME/paths/PATH) for "
                                "the job's --output_dir, mounted read-write: checkpoints land "
                                "there as they are written, and the same command resubmitted "
                                "with the same path resumes a preempted run (default: a new "
                                "folder per job)")
        else:
            p.add_argument("--sweep", required=True, metavar="YAML",
                           help="search-space file (configs/sweeps/*.yaml)")
        p.add_argument("--vm_size", help="the cluster's VM size: sets the MPI processes per node")
        p.add_argument("--gpus_per_node", type=int,
                       help="MPI processes per node, for a size the table does not know")
        p.add_argument("--experiment_name", default=DEFAULT_EXPERIMENT,
                       help=f"Azure ML experiment (default {DEFAULT_EXPERIMENT})")
        p.add_argument("--display_name", help="job display name")
        p.add_argument("--inputs", action="append", metavar="NAME=PATH",
                       help="a job input: a local path or azureml://datastores/.../paths/...; "
                            "NAME a flag of the script, or referred to as ${{inputs.NAME}}")
        dry_run_option(p, "job")
        workspace_option(p)

    for command, what in (("status", "a job's state"), ("stream", "follow a job's logs")):
        p = sub.add_parser(command, help=what)
        p.add_argument("job", metavar="JOB", help="job name")
        workspace_option(p)

    d = sub.add_parser("download", help="a finished sweep's trials -> trials.json and plots")
    d.add_argument("job", metavar="SWEEP_JOB", help="sweep job name")
    d.add_argument("--output_dir", required=True, help="folder for trials.json and the plots")
    d.add_argument("--sweep", metavar="YAML", help="its search-space file (default: the one "
                   "the job was submitted with, from its tags)")
    workspace_option(d)
    return parser


COMMANDS = {"compute": cmd_compute, "train": cmd_train, "sweep": cmd_sweep,
            "status": cmd_status, "stream": cmd_stream, "download": cmd_download}


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (0, 1 for Azure's failures, 2 for bad
    input). Never raises for bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_azure_logging()
    redact = Redactor()
    try:
        extra: list[str] = []
        if "--" in argv:
            cut = argv.index("--")
            argv, extra = argv[:cut], argv[cut + 1:]
        args = build_parser().parse_args(argv)
        if extra and args.command not in ("train", "sweep"):
            raise UsageError(f"{args.command} takes no script flags after --")
        return COMMANDS[args.command](args, extra, redact)
    except UsageError as e:  # bert_tf.sweeps.SweepError too
        return _fail(redact(str(e)), EXIT_USAGE)
    except AzureFailure as e:
        return _fail(str(e), EXIT_AZURE)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
