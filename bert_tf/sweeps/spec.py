"""Search-space files (configs/sweeps/*.yaml): one description of a hyperparameter sweep that
drives both an Azure ML sweep job (azure/submit.py) and a local Optuna sweep (bert_tf.tune).

    script: run_classifier.py              # run_classifier.py, run_ner.py, run_squad.py or
                                           # run_pretraining.py
    primary_metric: eval/eval_accuracy      # exactly as the script logs it (MLflow / TensorBoard)
    goal: maximize                          # or minimize
    search_space:                           # each key a flag of the script
      learning_rate: {type: loguniform, min_value: 1.0e-6, max_value: 1.0e-3}   # the RATES
      train_batch_size: {type: choice, values: [16, 32]}
      warmup_proportion: {type: uniform, min_value: 0.0, max_value: 0.2}
    sampling: {type: random, seed: 42}
    early_termination: {type: bandit, slack_factor: 0.1, evaluation_interval: 1,
                        delay_evaluation: 2}  # or slack_amount; omit for none
    limits: {max_total_trials: 20, max_concurrent_trials: 2, timeout_minutes: 600,
             trial_timeout_minutes: 60}
    flags: {task: MRPC, do_train: true, do_eval: true, eval_every_steps: 50}  # fixed flags

Log-uniform bounds are written as the rates themselves. Optuna's `suggest_float(log=True)`
takes them as they are; Azure ML's `LogUniform(min_value, max_value)` takes their NATURAL
LOGARITHMS (`log_bounds`), and raw rates given to it pass silently as a learning rate near 1.

Bandit early termination (Azure ML's BanditPolicy, as its docs state it): the reports of the
primary metric are counted from 1, and at every report number that is a multiple of
`evaluation_interval` and >= `delay_evaluation`, a trial stops when its best value so far is
worse than the best value any trial reached by that report by more than the slack: a factor
(best / (1 + slack_factor) when maximizing, best * (1 + slack_factor) when minimizing) or an
amount (best -/+ slack_amount). A report is one evaluation during training, so early
termination needs `eval_every_steps` among the flags when the metric is an eval/ one.
(bert_tf.sweeps.bandit.BanditPruner is the local implementation.)
"""

from __future__ import annotations

import dataclasses
import math
import os

from bert_tf.errors import UsageError

GOALS = ("maximize", "minimize")
PARAM_TYPES = ("loguniform", "uniform", "choice")

# What the training loop logs for every script, under train/ (fp16 adds loss_scale).
_TRAIN_METRICS = ("loss", "learning_rate", "grad_norm", "examples_per_second",
                  "nonfinite_steps", "loss_scale")


class SweepError(UsageError):
    """A search-space file or a sweep's flags that cannot run; the message names the file and
    the key (e.g. `mrpc.yaml: search_space.learning_rate: ...`) and says what to do."""


@dataclasses.dataclass(frozen=True)
class Param:
    """One dimension of the search space. loguniform/uniform: `low` < `high` (for loguniform
    both > 0, as rates, not logarithms); choice: `values`."""
    name: str
    type: str
    low: float | None = None
    high: float | None = None
    values: tuple = ()

    def log_bounds(self) -> tuple[float, float]:
        """(ln low, ln high): what Azure ML's LogUniform takes for a loguniform dimension."""
        return math.log(self.low), math.log(self.high)


@dataclasses.dataclass(frozen=True)
class Bandit:
    """Azure ML's BanditPolicy: exactly one of slack_factor / slack_amount is set."""
    slack_factor: float | None = None
    slack_amount: float | None = None
    evaluation_interval: int = 1
    delay_evaluation: int = 0


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A checked search-space file (`load`). `flags` are the fixed flags as {name: value}."""
    path: str
    script: str
    primary_metric: str
    goal: str
    space: dict  # {flag name: Param}, in file order
    seed: int
    bandit: Bandit | None
    max_total_trials: int
    max_concurrent_trials: int
    timeout_minutes: float | None
    trial_timeout_minutes: float | None
    flags: dict
    sampling: str = "random"  # or "grid": every combination of the choices, once each

    @property
    def grid_size(self) -> int:
        """Combinations of the choice values (grid sampling: every one is a trial)."""
        size = 1
        for param in self.space.values():
            size *= len(param.values)
        return size

    @property
    def metric_split(self) -> str:
        """`eval` of `eval/eval_accuracy`: the `split` field of the metrics.jsonl rows."""
        return self.primary_metric.split("/", 1)[0]

    @property
    def metric_key(self) -> str:
        """`eval_accuracy` of `eval/eval_accuracy`: the key inside those rows."""
        return self.primary_metric.split("/", 1)[1]

    def better(self, a: float, b: float) -> bool:
        """True when metric value a is better than b under the goal."""
        return a > b if self.goal == "maximize" else a < b

    def flag_args(self, values: dict) -> list[str]:
        """{flag: value} -> ["--name=value", ...]; booleans as --name / --noname. Values may be
        strings such as Azure ML's `${{search_space.learning_rate}}` placeholders."""
        out = []
        for name, value in values.items():
            if isinstance(value, bool):
                out.append(f"--{name}" if value else f"--no{name}")
            else:
                out.append(f"--{name}={value}")
        return out

    def check_flags(self, extra: list[str] | None = None,
                    reserved: tuple = ("output_dir", "use_horovod")) -> dict:
        """Check the fixed flags of the file plus `extra` (["--name=value", ...] given after `--`
        on a command line) against the script's own flag definitions, with every search-space
        flag at both ends of its range. Returns the merged fixed flags {name: value}. Raises
        SweepError naming the flag: unknown to the script, a bad value, set both as a fixed
        flag and in the search space, one of `reserved` (the flags the launcher sets for each
        trial), a primary metric the script does not log with these flags, or early
        termination with nothing to compare during training."""
        from absl import flags as absl_flags

        from bert_tf.flags import script_flags

        merged = dict(self.flags)
        for arg in extra or []:
            if not arg.startswith("--"):
                raise SweepError(f"fixed flag {arg!r}: write flags as --name=value")
            name, eq, value = arg[2:].partition("=")
            merged[name] = value if eq else True
        fv = script_flags(self.script)
        for name in list(merged) + list(self.space):
            if name not in fv and not (name.startswith("no") and name[2:] in fv):
                raise SweepError(f"{self._where('flags')}: {self.script} has no flag --{name}")
        clash = sorted(set(merged) & set(self.space))
        if clash:
            raise SweepError(f"{self._where('flags')}: --{clash[0]} is both a fixed flag and in "
                             "search_space: keep one")
        for name in reserved:
            if name in merged:
                where = self._where("flags") if name in self.flags else "fixed flags after --"
                raise SweepError(f"{where}: --{name} is set by the launcher for each trial: "
                                 "leave it out")
        # Every choice value and both ends of every range, one dimension at a time, with the
        # rest at their first value: each must parse and pass the script's own checks.
        first = {p.name: p.values[0] if p.type == "choice" else p.low
                 for p in self.space.values()}
        points = [first]
        for p in self.space.values():
            for value in (p.values if p.type == "choice" else (p.low, p.high)):
                points.append(dict(first, **{p.name: value}))
        for point in points:
            try:
                fv.unparse_flags()
                fv([self.script] + self.flag_args(merged) + self.flag_args(point))
            except absl_flags.Error as e:
                raise SweepError(f"{self._where('flags')}: {e}") from None
            try:
                check_script_args(self.script, fv)
            except SweepError as e:
                raise SweepError(f"{self._where('flags')}: {e}") from None
        fixed = {name: fv[name].value for name in fv if fv[name].present}
        logged = logged_metrics(self.script, fixed)
        if self.primary_metric not in logged:
            near = sorted(m for m in logged if m.startswith(self.metric_split + "/"))
            raise SweepError(
                f"{self._where('primary_metric')}: {self.script} never logs "
                f"{self.primary_metric!r} with these flags; it logs {', '.join(near or logged)}")
        if self.metric_split == "eval" and not fv["do_eval"].value:
            raise SweepError(f"{self._where('primary_metric')}: {self.primary_metric} is an "
                             "evaluation metric: add do_eval: true to flags")
        if self.metric_split == "train" or self.space.keys() & _TRAINING_FLAGS:
            if not fv["do_train"].value:
                raise SweepError(f"{self._where('flags')}: the trials would train nothing: add "
                                 "do_train: true")
        if (self.bandit is not None and self.metric_split == "eval" and
                not fixed.get("eval_every_steps")):
            raise SweepError(
                f"{self._where('early_termination')}: a bandit policy compares trials during "
                f"training, but {self.primary_metric} is only logged at the end: add "
                "eval_every_steps to flags (and do_train, do_eval)")
        return merged

    def _where(self, key: str) -> str:
        return f"{self.path}: {key}"


# Search-space flags that only change training: sweeping them needs --do_train.
_TRAINING_FLAGS = {"learning_rate", "train_batch_size", "num_train_epochs", "num_train_steps",
                   "warmup_proportion", "num_warmup_steps", "optimizer", "num_accumulation_steps",
                   "seed", "max_train_examples", "adam_bias_correction", "global_batch_size"}


def check_script_args(script: str, flag_values) -> None:
    """What `script` itself would refuse at start-up, checked from parsed flags (an absl
    FlagValues of `bert_tf.flags.script_flags(script)`, already called with the argv): nothing
    to do, values out of range, flags that need others (--eval_every_steps without --do_eval),
    an unknown GLUE task. A missing --output_dir is fine (launchers set it). Raises SweepError
    with the script's own message. Reads no data and imports no TensorFlow."""
    import os
    import tempfile

    from bert_tf.flags import run_args

    name = os.path.basename(script)
    if name == "run_pretraining.py":
        from bert_tf.pretrain import PretrainArgs as cls, check_args
    elif name == "run_squad.py":
        from bert_tf.qa import SquadArgs as cls, check_args
    else:
        from bert_tf.finetune import RunArgs as cls, check_args
    args = run_args(flag_values, cls)
    if not args.output_dir:  # set per trial / job by the launcher
        args.output_dir = os.path.join(tempfile.gettempdir(), "bert_tf-launcher-check")
    try:
        check_args(args)
        if name == "run_classifier.py":
            from bert_tf.data import glue

            try:
                glue.get_processor(args.task_name)
            except ValueError as e:
                raise UsageError(f"--task_name: {e}") from None
    except UsageError as e:
        raise SweepError(f"{script}: {e}") from None


def logged_metrics(script: str, flags: dict) -> set[str]:
    """The metric names (`split/name`, as MLflow and TensorBoard show them) that `script` logs
    when run with `flags` ({name: parsed value}; task defaults as the scripts' own)."""
    name = os.path.basename(script)
    out = {f"train/{m}" for m in _TRAIN_METRICS}
    if name == "run_classifier.py":
        from bert_tf.data import glue

        processor = glue.get_processor(flags.get("task_name") or flags.get("task") or "MRPC")
        splits = ["dev_matched_", "dev_mismatched_"] if processor.name == "MNLI" else [""]
        out |= {f"eval/{s}eval_{m}" for s in splits for m in processor.metric_names}
    elif name == "run_ner.py":
        out |= {f"eval/{s}_{m}" for s in ("dev", "test") for m in ("precision", "recall", "f1")}
    elif name == "run_squad.py":
        if flags.get("version_2_with_negative"):
            out |= {f"eval/{m}" for m in ("exact", "f1", "HasAns_exact", "HasAns_f1",
                                          "NoAns_exact", "NoAns_f1", "best_exact", "best_f1",
                                          "best_exact_thresh", "best_f1_thresh")}
        else:
            out |= {"eval/exact_match", "eval/f1"}
    elif name == "run_pretraining.py":
        out |= {f"train/{m}" for m in ("mlm_loss", "nsp_loss", "mlm_accuracy", "nsp_accuracy")}
        out |= {f"eval/{m}" for m in ("masked_lm_loss", "masked_lm_accuracy",
                                      "next_sentence_loss", "next_sentence_accuracy")}
    return out


def _number(value, where: str) -> float:
    # PyYAML reads 1e-6 (no dot) as a string: accept it as the number it means.
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SweepError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise SweepError(f"{where}: {value!r} is not a finite number")
    return number


def _keys(raw, allowed: tuple, where: str) -> dict:
    """`raw` as a mapping holding only `allowed` keys: a misspelt key would otherwise fall back
    to a default silently (20 trials instead of 3, seed 42, no delay)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SweepError(f"{where}: expected a mapping with keys {', '.join(allowed)}")
    unknown = sorted(str(k) for k in set(raw) - set(allowed))
    if unknown:
        import difflib

        near = difflib.get_close_matches(unknown[0], allowed, n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise SweepError(f"{where}: unknown key {unknown[0]!r}{hint}; keys: {', '.join(allowed)}")
    return raw


def _param(name: str, raw, where: str) -> Param:
    if not isinstance(raw, dict) or "type" not in raw:
        raise SweepError(f"{where}: write {{type: loguniform|uniform|choice, ...}}")
    kind = str(raw["type"]).lower()
    if kind not in PARAM_TYPES:
        raise SweepError(f"{where}: type {raw['type']!r} is not one of {', '.join(PARAM_TYPES)}")
    _keys(raw, ("type", "values") if kind == "choice" else ("type", "min_value", "max_value"),
          where)
    if kind == "choice":
        values = raw.get("values")
        if not isinstance(values, list) or not values:
            raise SweepError(f"{where}: a choice needs a non-empty list `values`")
        return Param(name, kind, values=tuple(values))
    for key in ("min_value", "max_value"):
        if key not in raw:
            raise SweepError(f"{where}: a {kind} range needs min_value and max_value")
    low = _number(raw["min_value"], f"{where}.min_value")
    high = _number(raw["max_value"], f"{where}.max_value")
    if kind == "loguniform" and (low <= 0 or high <= 0):
        raise SweepError(f"{where}: log-uniform bounds must be positive (they are the values "
                         f"themselves, e.g. 1e-6 and 1e-3, not their logarithms); got {low:g} "
                         f"and {high:g}")
    if low >= high:
        raise SweepError(f"{where}: min_value {low:g} must be below max_value {high:g} (an "
                         "empty or reversed range)")
    return Param(name, kind, low, high)


def _int(raw: dict, key: str, default, where: str, minimum: int):
    value = raw.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SweepError(f"{where}.{key}: {value!r} must be an integer >= {minimum}")
    return value


def _positive(raw: dict, key: str, where: str):
    if raw.get(key) is None:
        return None
    value = _number(raw[key], f"{where}.{key}")
    if value <= 0:
        raise SweepError(f"{where}.{key}: {value:g} must be positive")
    return value


def load(path: str) -> SweepSpec:
    """Read and check a search-space file. Raises SweepError (a UsageError) naming the file and
    the key for: a missing file, bad YAML, an unknown script, goal, parameter type or key, an
    empty, reversed or non-positive log range, bad limits or early termination. The flags are
    checked against the script by `SweepSpec.check_flags`."""
    import yaml

    if not os.path.isfile(path):
        raise SweepError(f"--sweep={path}: no such file (see configs/sweeps/ for examples)")
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise SweepError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: expected a mapping with script, primary_metric, goal, "
                         "search_space")
    known = {"script", "primary_metric", "goal", "search_space", "sampling",
             "early_termination", "limits", "flags", "description"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SweepError(f"{path}: unknown key {unknown[0]!r} (keys: {', '.join(sorted(known))})")
    for key in ("script", "primary_metric", "goal", "search_space"):
        if key not in raw:
            raise SweepError(f"{path}: missing {key}")
    from bert_tf.flags import SCRIPTS

    script = str(raw["script"])
    if os.path.basename(script) not in SCRIPTS:
        raise SweepError(f"{path}: script {script!r} is not one of {', '.join(SCRIPTS)}")
    metric = str(raw["primary_metric"])
    if "/" not in metric:
        raise SweepError(f"{path}: primary_metric {metric!r}: write it as the script logs it, "
                         "split/name (e.g. eval/eval_accuracy)")
    goal = str(raw["goal"]).lower()
    if goal not in GOALS:
        raise SweepError(f"{path}: goal {raw['goal']!r} is not maximize or minimize")
    space_raw = raw["search_space"]
    if not isinstance(space_raw, dict) or not space_raw:
        raise SweepError(f"{path}: search_space is empty: give at least one flag to vary")
    space = {str(name): _param(str(name), value, f"{path}: search_space.{name}")
             for name, value in space_raw.items()}

    where = f"{path}: sampling"
    sampling = _keys(raw.get("sampling"), ("type", "seed"), where)
    kind = str(sampling.get("type", "random")).lower()
    if kind not in ("random", "grid"):
        raise SweepError(f"{where}.type: random or grid (Azure ML's random and grid, Optuna's "
                         "RandomSampler and GridSampler)")
    if kind == "grid":
        ranged = [name for name, p in space.items() if p.type != "choice"]
        if ranged:
            raise SweepError(f"{where}.type: grid sampling takes choice parameters only; "
                             f"search_space.{ranged[0]} is a {space[ranged[0]].type} range")
    seed = _int(sampling, "seed", 42, where, 0)

    bandit = None
    policy = raw.get("early_termination")
    if policy:
        where = f"{path}: early_termination"
        _keys(policy, ("type", "slack_factor", "slack_amount", "evaluation_interval",
                       "delay_evaluation"), where)
        if str(policy.get("type", "")).lower() != "bandit":
            raise SweepError(f"{where}.type: only bandit is supported")
        factor = _positive(policy, "slack_factor", where)
        amount = _positive(policy, "slack_amount", where)
        if (factor is None) == (amount is None):
            raise SweepError(f"{where}: give exactly one of slack_factor and slack_amount")
        bandit = Bandit(factor, amount, _int(policy, "evaluation_interval", 1, where, 1),
                        _int(policy, "delay_evaluation", 0, where, 0))

    where = f"{path}: limits"
    limits = _keys(raw.get("limits"), ("max_total_trials", "max_concurrent_trials",
                                       "timeout_minutes", "trial_timeout_minutes"), where)
    grid = 1
    for param in space.values():
        grid *= len(param.values) if param.type == "choice" else 1
    total = _int(limits, "max_total_trials", grid if kind == "grid" else 20, where, 1)
    if kind == "grid" and total > grid:
        raise SweepError(f"{where}.max_total_trials: {total}, but the grid has {grid} points")
    concurrent = _int(limits, "max_concurrent_trials", 1, where, 1)
    if concurrent > total:
        raise SweepError(f"{where}.max_concurrent_trials: {concurrent} exceeds max_total_trials "
                         f"{total}")
    fixed = raw.get("flags") or {}
    if not isinstance(fixed, dict):
        raise SweepError(f"{path}: flags must be a mapping of flag name to value")
    return SweepSpec(path=path, script=os.path.basename(script), primary_metric=metric,
                     goal=goal, space=space, seed=seed, bandit=bandit,
                     max_total_trials=total, max_concurrent_trials=concurrent,
                     timeout_minutes=_positive(limits, "timeout_minutes", where),
                     trial_timeout_minutes=_positive(limits, "trial_timeout_minutes", where),
                     flags={str(k): v for k, v in fixed.items()}, sampling=kind)
