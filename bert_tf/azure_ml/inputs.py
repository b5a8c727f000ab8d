"""Flags that name data, turned into job inputs: a local path is uploaded, a datastore URI
mounted, a preset name left as a flag; `--inputs NAME=URI` named inputs."""

from __future__ import annotations

import dataclasses
import glob as globlib
import os
import re

from bert_tf.errors import UsageError


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


PLACEHOLDER = re.compile(r"\$\{\{\s*([\w.]+)\s*\}\}")


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
        if value and (name in DATA_FLAGS or name in forced) and not PLACEHOLDER.search(value):
            job_input, value = resolve_data_flag(name, value, DATA_FLAGS.get(name, "any"))
            if job_input is not None:
                inputs[name] = job_input
        out.append((name, value))
    for name, path in free.items():
        job_input, _ = resolve_data_flag(name, path, "any")
        inputs[name] = job_input
    used = {m.group(1)[len("inputs."):] for _, v in out if v
            for m in PLACEHOLDER.finditer(v) if m.group(1).startswith("inputs.")}
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
