"""The training script's flags after `--`: parsed with the script's own definitions and checked
as the script would at start-up, and written back as shell words."""

from __future__ import annotations

import difflib
import glob as globlib
import os
import re
import shlex
from pathlib import Path

from bert_tf.errors import UsageError
from bert_tf.azure_ml import REPO
from bert_tf.azure_ml.inputs import DATA_FLAGS, PLACEHOLDER, RESERVED, is_remote
from bert_tf.flags import SCRIPTS


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
    if re.fullmatch(r"[\w@%+=:,./-]*", PLACEHOLDER.sub("x", arg)):
        return arg
    return shlex.quote(arg)
