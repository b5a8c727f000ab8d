"""Local hyperparameter sweeps with Optuna, from a search-space file (configs/sweeps/*.yaml):

    python -m bert_tf.tune --sweep configs/sweeps/mrpc_tiny.yaml --output_dir DIR \
        [--trials_at_once N] [-- --fixed_flag=value ...]

Run from the repository root (the file's relative paths, e.g. `../shared/data`, are read from
there). Every trial is the real script (`run_classifier.py`, ...) in a subprocess; DIR holds:

    optuna.db               the Optuna study (named after the file: mrpc_tiny), random sampling
    mlflow.db               one MLflow run per trial, experiment named after the file, tagged
                            optuna.trial_number / optuna.state / optuna.value
    trials/trial_NNN/       the trial's --output_dir (metrics.jsonl, checkpoints, ...) and log.txt
    loss_curves.png         training loss against step, one line per trial
    metric_vs_lr.png        the primary metric against the learning rate, the best trial marked
    trials.md, trials.csv   one row per trial: state, parameters, value, steps; the best marked

While a trial runs, each new value of the primary metric in its metrics.jsonl (one per
`eval_every_steps`, and the final evaluation) is reported to Optuna; the Bandit policy of the
file (`BanditPruner`, Azure ML's BanditPolicy) may stop it there. Rerunning the same command
resumes: finished trials are kept, a trial that was running when the sweep died is run again in
a fresh folder, and `max_total_trials` counts the trials of every run of the command. Bad input
(file, flags, a metric the script never logs, DIR holding another sweep) is one line on stderr
and exit status 2, before anything is written. What only the script can tell (a checkpoint path
that does not exist from here) stops the sweep at the first trial the script refuses, with the
script's own error line and exit status 2; that trial does not count and runs again on resume.

`write_report` (plots and tables from `TrialRecord`s) needs only matplotlib: azure/submit.py
calls it with trials downloaded from an Azure ML sweep.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

from bert_tf.assets import UsageError
from bert_tf.cli import EXIT_USAGE
from bert_tf.sweeps import Bandit, SweepError, SweepSpec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING")
POLL_SECONDS = 1.0        # how often a running trial's metrics.jsonl is read
GRACE_SECONDS = 15.0      # SIGTERM -> SIGKILL
LOG_TAIL_LINES = 12       # of a failed trial's log.txt, in the summary
# Set by the sweep for every trial: its folder, the sweep's mlflow.db and experiment.
_LAUNCHER_FLAGS = ("output_dir", "use_horovod", "tracking_uri", "experiment_name")


@dataclasses.dataclass
class TrialRecord:
    """One trial of a sweep as the report needs it (from Optuna here, from Azure ML in
    azure/submit.py)."""
    number: int
    params: dict            # {flag: value}
    state: str              # "COMPLETE", "PRUNED", "FAIL" or "RUNNING"
    value: float | None     # final primary metric (last reported), None if none
    loss_curve: list        # [(step, train loss)] from metrics.jsonl / MLflow "train/loss"
    metric_curve: list      # [(step, primary metric value)]


# -- Bandit early termination ----------------------------------------------------------------------

def _best(values, goal: str):
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    return max(finite) if goal == "maximize" else min(finite)


def bandit_applies(bandit: Bandit, report: int) -> bool:
    """Whether the policy judges a trial at its `report`-th report of the primary metric
    (counted from 1): at every multiple of evaluation_interval that is >= delay_evaluation."""
    return report % bandit.evaluation_interval == 0 and report >= bandit.delay_evaluation


def bandit_threshold(bandit: Bandit, goal: str, best: float) -> float:
    """The worst value a trial may have and go on, given the best trial's `best`:
    maximize: best / (1 + slack_factor) or best - slack_amount;
    minimize: best * (1 + slack_factor) or best + slack_amount."""
    if bandit.slack_factor is not None:
        return (best / (1 + bandit.slack_factor) if goal == "maximize"
                else best * (1 + bandit.slack_factor))
    return best - bandit.slack_amount if goal == "maximize" else best + bandit.slack_amount


def bandit_decision(bandit: Bandit, goal: str, report: int, own: dict,
                    others: list[dict]) -> tuple[bool, str]:
    """Azure ML's BanditPolicy for one trial at its report number `report` (from 1).

    Args:
        bandit: slack_factor or slack_amount, evaluation_interval, delay_evaluation.
        goal: "maximize" or "minimize".
        report: the report being judged (the trial's latest).
        own: the trial's reports {report number: value}.
        others: the reports of every other trial that counts (finished or running).
    Returns:
        (stop, reason): stop is True when the trial's best value up to `report` is worse than
        `bandit_threshold` of the best value any trial (this one included) reached by its own
        `report`-th report; trials that have not reported that often yet do not count. The
        reason is one line with the numbers.

    The semantics are Azure ML's BanditPolicy as its docs state them (the reference pages of
    azure.ai.ml.sweep.BanditPolicy and azureml.train.hyperdrive.BanditPolicy, and
    https://learn.microsoft.com/azure/machine-learning/how-to-tune-hyperparameters, "Bandit
    policy"):
    "each time the training script logs the primary metric counts as one interval"; "the policy
    applies every multiple of evaluation_interval that is greater than or equal to
    delay_evaluation"; a run whose best metric Y so far is such that Y * (1 + slack_factor)
    (maximizing) is below the best run's metric at that interval is cancelled; slack_amount is
    the same with an absolute distance. A trial whose values are all NaN or infinite is
    stopped whenever the policy applies and another trial has a finite value.
    """
    if not bandit_applies(bandit, report):
        return False, f"report {report}: the policy does not apply here"
    mine = _best([v for k, v in own.items() if k <= report], goal)
    curves = [own] + [c for c in others if report in c]
    best = _best([_best([v for k, v in c.items() if k <= report], goal) for c in curves], goal)
    if best is None:
        return False, f"report {report}: no finite value yet"
    limit = bandit_threshold(bandit, goal, best)
    slack = (f"/ (1 + {bandit.slack_factor:g})" if goal == "maximize" else
             f"* (1 + {bandit.slack_factor:g})") if bandit.slack_factor is not None else \
        (f"- {bandit.slack_amount:g}" if goal == "maximize" else f"+ {bandit.slack_amount:g}")
    if mine is None:
        return True, f"report {report}: no finite value, best {best:.4g}"
    worse = mine < limit if goal == "maximize" else mine > limit
    sign = ("<" if goal == "maximize" else ">") if worse else \
        (">=" if goal == "maximize" else "<=")
    return worse, (f"report {report}: best so far {mine:.4g} {sign} {best:.4g} {slack} = "
                   f"{limit:.4g} (best of {len(curves)} trial(s) at this report)")


@functools.cache
def _pruner_class():
    import optuna
    from optuna.trial import TrialState

    class BanditPruner(optuna.pruners.BasePruner):
        """Azure ML's BanditPolicy as an Optuna pruner (Optuna has none): see
        `bandit_decision`. Report the primary metric with `trial.report(value, step=n)`, n
        counting the reports from 1; the goal is the study's direction.

            BanditPruner(slack_factor=0.1, evaluation_interval=1, delay_evaluation=5)
        """

        def __init__(self, slack_factor: float | None = None, slack_amount: float | None = None,
                     evaluation_interval: int = 1, delay_evaluation: int = 0):
            if (slack_factor is None) == (slack_amount is None):
                raise ValueError("give exactly one of slack_factor and slack_amount")
            self.bandit = Bandit(slack_factor, slack_amount, evaluation_interval,
                                 delay_evaluation)

        def prune(self, study, trial) -> bool:
            return self.verdict(study, trial)[0]

        def verdict(self, study, trial) -> tuple[bool, str]:
            """(prune, one-line reason) for `trial` (a FrozenTrial) at its latest report."""
            report = trial.last_step
            if report is None:
                return False, "no report yet"
            goal = ("maximize" if study.direction == optuna.study.StudyDirection.MAXIMIZE
                    else "minimize")
            others = [t.intermediate_values for t in study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                        TrialState.RUNNING)) if t.number != trial.number]
            return bandit_decision(self.bandit, goal, report, trial.intermediate_values, others)

    return BanditPruner


def __getattr__(name):
    # `from bert_tf.tune import BanditPruner` imports Optuna then; the rest of this module
    # (write_report in particular) works without it.
    if name == "BanditPruner":
        return _pruner_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_pruner(spec: SweepSpec):
    """The pruner of the file's early_termination: a BanditPruner, or Optuna's NopPruner."""
    import optuna

    if spec.bandit is None:
        return optuna.pruners.NopPruner()
    b = spec.bandit
    return _pruner_class()(b.slack_factor, b.slack_amount, b.evaluation_interval,
                           b.delay_evaluation)


# -- metrics.jsonl ---------------------------------------------------------------------------------

def read_curves(metrics_path: str, spec: SweepSpec) -> tuple[list, list]:
    """A trial's metrics.jsonl -> (loss_curve, metric_curve): [(step, train loss)] and
    [(step, primary metric value)], in file order; ([], []) when the file is missing.
    Lines that are not JSON (a run killed mid-write) are skipped."""
    loss, metric = [], []
    try:
        with open(metrics_path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        return [], []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("split") == "train" and "loss" in row:
            loss.append((int(row["step"]), float(row["loss"])))
        if row.get("split") == spec.metric_split and spec.metric_key in row:
            metric.append((int(row["step"]), float(row[spec.metric_key])))
    return loss, metric


class _JsonlTail:
    """New complete lines of a file that another process appends to."""

    def __init__(self, path: str):
        self.path = path
        self.offset = 0

    def rows(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        out = []
        for line in data[:end].splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


# -- the report ------------------------------------------------------------------------------------

def best_trial(spec: SweepSpec, trials: list[TrialRecord]) -> TrialRecord | None:
    """The best completed trial under spec.goal (ties: the lower number); when none completed
    with a finite value, the best of the others that have one; None when no trial has one."""
    def usable(states):
        return [t for t in trials if t.state in states and t.value is not None
                and math.isfinite(t.value)]

    pool = usable(("COMPLETE",)) or usable(STATES)
    if not pool:
        return None
    key = (lambda t: (-t.value, t.number)) if spec.goal == "maximize" else \
        (lambda t: (t.value, t.number))
    return min(pool, key=key)


def _x_param(spec: SweepSpec, trials: list[TrialRecord]) -> str | None:
    """The parameter the report plots against: learning_rate, else the first log-uniform or
    uniform parameter, else None (then the trial number)."""
    if "learning_rate" in spec.space or any("learning_rate" in t.params for t in trials):
        return "learning_rate"
    for name, param in spec.space.items():
        if param.type in ("loguniform", "uniform"):
            return name
    return None


def _fmt(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
        return f"{value:.2e}"
    return f"{value:.4g}"


def _steps(t: TrialRecord) -> int | None:
    steps = [s for s, _ in t.loss_curve] + [s for s, _ in t.metric_curve]
    return max(steps) if steps else None


def sweep_name(spec: SweepSpec) -> str:
    """The file's stem (mrpc_tiny): the Optuna study and the MLflow experiment."""
    return os.path.splitext(os.path.basename(spec.path))[0]


def write_report(spec: SweepSpec, trials: list[TrialRecord], output_dir: str) -> dict:
    """Plots and tables of a sweep's trials, written under output_dir (created if missing).

    Args:
        spec: the sweep's search-space file (`bert_tf.sweeps.load`): primary metric, goal,
            parameters.
        trials: every trial to show, any order (`TrialRecord`s: from Optuna by
            `records_from_study`, or from an Azure ML sweep).
        output_dir: where the files go.
    Returns:
        {"loss_plot": .../loss_curves.png, "metric_plot": .../metric_vs_lr.png,
         "table": .../trials.md, "csv": .../trials.csv}

    loss_curves.png: training loss against step, one line per trial, coloured by the learning
    rate (the plotted parameter), legend with trial number and rate; pruned trials dashed with
    an x where they stopped, failed ones dotted. metric_vs_lr.png: the primary metric against
    the learning rate (or the first log-uniform / uniform parameter when the space has none;
    log axis for log-uniform ones); completed trials as dots, pruned ones as crosses at the
    value where they stopped, the best trial (`best_trial`) starred and annotated. trials.md and
    trials.csv: trial, state, each parameter, the value, steps trained, the best marked.
    Matplotlib's Agg canvas only (no pyplot, no display); no Optuna.
    """
    from matplotlib.figure import Figure

    os.makedirs(output_dir, exist_ok=True)
    trials = sorted(trials, key=lambda t: t.number)
    name = sweep_name(spec)
    metric = spec.primary_metric
    best = best_trial(spec, trials)
    x_name = _x_param(spec, trials)
    x_log = x_name is not None and (x_name == "learning_rate" or
                                    getattr(spec.space.get(x_name), "type", "") == "loguniform")

    def x_of(t):
        if x_name is None:
            return float(t.number)
        try:
            return float(t.params.get(x_name))
        except (TypeError, ValueError):
            return None

    xs = [x_of(t) for t in trials if x_of(t) is not None and (not x_log or x_of(t) > 0)]
    colours = _colours(xs, x_log)

    def colour(t):
        x = x_of(t)
        return colours(x) if x is not None and (not x_log or x > 0) else "grey"

    def label(t):
        text = f"trial {t.number}"
        if x_name is not None and x_name in t.params:
            short = "lr" if x_name == "learning_rate" else x_name
            text += f", {short} {_fmt(t.params[x_name])}"
        return text + ("" if t.state == "COMPLETE" else f" ({t.state.lower()})")

    # -- loss curves
    fig = Figure(figsize=(11, 6), layout="constrained")
    ax = fig.add_subplot()
    plotted = 0
    # In the order of the plotted parameter, so the legend reads from low to high rates.
    for t in sorted(trials, key=lambda t: (x_of(t) is None, x_of(t) or 0.0, t.number)):
        if not t.loss_curve:
            continue
        steps, losses = zip(*sorted(t.loss_curve))
        style = {"PRUNED": "--", "FAIL": ":"}.get(t.state, "-")
        width = 2.6 if best is not None and t.number == best.number else 1.6
        line, = ax.plot(steps, losses, style, color=colour(t), linewidth=width, label=label(t))
        if t.state in ("PRUNED", "FAIL"):
            ax.plot(steps[-1], losses[-1], "x", color=line.get_color(), markersize=10,
                    markeredgewidth=2.5)
        plotted += 1
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss (train/loss)")
    ax.set_title(f"Sweep {name}: training loss per trial "
                 "(dashed + x: pruned where it stopped; dotted: failed)")
    ax.grid(True, alpha=0.3)
    if plotted:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9,
                  title="thicker line: best trial", title_fontsize=9)
    else:
        ax.text(0.5, 0.5, "no trial logged a training loss", ha="center", va="center",
                transform=ax.transAxes)
    loss_path = os.path.join(output_dir, "loss_curves.png")
    fig.savefig(loss_path, dpi=110)

    # -- metric against the learning rate
    fig = Figure(figsize=(11, 6), layout="constrained")
    ax = fig.add_subplot()
    kinds = [("COMPLETE", "o", "tab:blue", "completed"),
             ("PRUNED", "X", "tab:red", "pruned (value when stopped)"),
             ("FAIL", "v", "tab:grey", "failed (last value)"),
             ("RUNNING", "o", "tab:orange", "running (last value)")]
    points = {state: [(x_of(t), t.value, t.number) for t in trials if t.state == state and
                      t.value is not None and math.isfinite(t.value) and x_of(t) is not None
                      and (not x_log or x_of(t) > 0)] for state, *_ in kinds}
    values = [v for pts in points.values() for _, v, _ in pts]
    low, high, edge = _y_range(values, spec.goal)
    labels = []  # [x, y, numbers, off-scale texts]: trials drawn on one spot share a label
    x_pos = (lambda x: math.log10(x)) if x_log else (lambda x: x)
    x_span = (max(map(x_pos, xs)) - min(map(x_pos, xs))) if xs else 0.0
    x_span = x_span or 1.0
    for state, marker, face, text in kinds:
        pts = points[state]
        if not pts:
            continue
        drawn = [(x, y if low <= y <= high else edge) for x, y, _ in pts]
        ax.scatter([x for x, _ in drawn], [y for _, y in drawn], marker=marker, s=70,
                   color=face, label=f"{text}: {len(pts)}", zorder=3, edgecolors="black",
                   linewidths=0.5)
        for (x, y, number), (_, shown) in zip(pts, drawn):
            near = [lab for lab in labels if abs(x_pos(lab[0]) - x_pos(x)) < 0.02 * x_span
                    and abs(lab[1] - shown) < 0.02 * (high - low)]
            if not near:
                labels.append([x, shown, [], []])
                near = labels[-1:]
            near[0][2].append(number)
            if shown != y:
                near[0][3].append(f"{number}: {y:.3g}")
    for x, y, numbers, off_scale in labels:
        text = ", ".join(str(n) for n in sorted(numbers))
        if off_scale:
            text = "off scale: " + ", ".join(off_scale)
        # A long label in the right half of the plot goes to the left of its point.
        left = bool(off_scale) and xs and x_pos(x) > min(map(x_pos, xs)) + 0.5 * x_span
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(-7 if left else 7, 5),
                    fontsize=8, color="dimgrey", ha="right" if left else "left")
    if values:
        ax.set_ylim(low, high)
    if best is not None and x_of(best) is not None:
        bx, by = x_of(best), best.value
        ax.scatter([bx], [by], marker="*", s=400, color="gold", edgecolors="black",
                   linewidths=1.0, zorder=4, label=f"best: trial {best.number}")
        up = spec.goal == "maximize"
        ax.annotate(f"best: trial {best.number}, {x_name or 'trial'} {_fmt(bx)}\n"
                    f"{spec.metric_key} {best.value:.4f}", (bx, by), textcoords="offset points",
                    xytext=(0, 34 if up else -44), ha="center", va="bottom" if up else "top",
                    fontsize=9, bbox=dict(boxstyle="round", facecolor="lightyellow", alpha=0.9),
                    arrowprops=dict(arrowstyle="->"), zorder=5)
    if x_log:
        ax.set_xscale("log")
    ax.set_xlabel(f"{x_name or 'trial number'}" + (" (log scale)" if x_log else ""))
    ax.set_ylabel(f"{metric} ({spec.goal})")
    ax.set_title(f"Sweep {name}: {metric} against {x_name or 'trial number'}")
    ax.grid(True, which="both", alpha=0.3)
    if values:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    else:
        ax.text(0.5, 0.5, "no trial reported the primary metric", ha="center", va="center",
                transform=ax.transAxes)
    metric_path = os.path.join(output_dir, "metric_vs_lr.png")
    fig.savefig(metric_path, dpi=110)

    # -- tables
    params = list(spec.space) + sorted({k for t in trials for k in t.params} - set(spec.space))
    header = ["trial", "state", *params, metric, "steps", "best"]
    rows = []
    for t in trials:
        is_best = best is not None and t.number == best.number
        value = "" if t.value is None else f"{t.value:.4f}"
        rows.append([str(t.number), t.state, *[_fmt(t.params[p]) if p in t.params else ""
                                               for p in params],
                     value, str(_steps(t) or ""), "best" if is_best else ""])
    csv_path = os.path.join(output_dir, "trials.csv")
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for t, row in zip(trials, rows):
            writer.writerow([*row[:2], *[t.params.get(p, "") for p in params],
                             "" if t.value is None else repr(t.value), *row[-2:]])
    counts = {s: sum(t.state == s for t in trials) for s in STATES}
    lines = [f"# Sweep {name}", "",
             f"{len(trials)} trials ("
             + ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n)
             + f"); primary metric `{metric}` ({spec.goal}); file `{spec.path}`.", ""]
    if best is not None:
        lines += [f"Best: trial {best.number} ({best.state.lower()}), " +
                  ", ".join(f"{k} {_fmt(v)}" for k, v in best.params.items()) +
                  f": {metric} **{best.value:.4f}**.", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if row[-1] == "best":
            row = [f"**{c}**" if c else c for c in row]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "A pruned trial's value is the last one it reported (its run was stopped "
              "there); steps: the last training step logged.", "",
              "![training loss](loss_curves.png)", "", "![metric](metric_vs_lr.png)", ""]
    table_path = os.path.join(output_dir, "trials.md")
    with open(table_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return {"loss_plot": loss_path, "metric_plot": metric_path, "table": table_path,
            "csv": csv_path}


def _y_range(values: list[float], goal: str) -> tuple[float, float, float]:
    """(low, high, edge) of the metric axis: every value, with room above (maximize) or below
    (minimize) for the best trial's label, except values far on the bad side (a diverged run at
    31% among runs at 68-71%) that would flatten the others: those are drawn at `edge`, near
    the bottom (top when minimizing), with their value written."""
    if not values:
        return 0.0, 1.0, 0.0
    ordered = sorted(values)
    n = len(ordered)
    q1, q3 = ordered[(n - 1) // 4], ordered[(3 * (n - 1) + 3) // 4]
    span = max(q3 - q1, 0.02 * (abs(ordered[(n - 1) // 2]) or 1.0))
    kept = values
    if n >= 4:
        fence = q1 - 3 * span if goal == "maximize" else q3 + 3 * span
        kept = [v for v in values if (v >= fence if goal == "maximize" else v <= fence)]
    lo, hi = min(kept), max(kept)
    pad = (hi - lo) or span
    off_scale = len(kept) < len(values)
    if goal == "maximize":
        low, high = lo - (0.3 if off_scale else 0.12) * pad, hi + 0.45 * pad
        return low, high, lo - 0.2 * pad
    low, high = lo - 0.45 * pad, hi + (0.3 if off_scale else 0.12) * pad
    return low, high, hi + 0.2 * pad


def _colours(xs: list[float], log: bool):
    """x value -> colour on a colour map spanning the values (log-spaced for rates)."""
    import matplotlib
    from matplotlib.colors import LogNorm, Normalize

    cmap = matplotlib.colormaps["plasma"]
    if not xs:
        return lambda x: "tab:blue"
    low, high = min(xs), max(xs)
    if low == high:
        return lambda x: cmap(0.4)
    norm = (LogNorm if log else Normalize)(vmin=low, vmax=high)
    return lambda x: cmap(0.85 * float(norm(x)))  # the top of the map is too pale on white


# -- running the sweep -----------------------------------------------------------------------------

def _spec_digest(path: str, extra: list[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    h.update(json.dumps(extra).encode())
    return h.hexdigest()


def _suggest(trial, spec: SweepSpec) -> dict:
    """The trial's values of spec.space, drawn by the study's sampler (or the fixed values of
    a retried trial): loguniform -> suggest_float(log=True) on the rates themselves."""
    out = {}
    for name, p in spec.space.items():
        if p.type == "loguniform":
            out[name] = trial.suggest_float(name, p.low, p.high, log=True)
        elif p.type == "uniform":
            out[name] = trial.suggest_float(name, p.low, p.high)
        else:
            out[name] = trial.suggest_categorical(name, list(p.values))
    return out


def _script_path(script: str) -> str:
    return script if os.path.isfile(script) else os.path.join(REPO, script)


def _die_with_parent_fn():
    """A preexec_fn that asks Linux to SIGTERM the trial when the thread that started it dies
    (the sweep killed, even by SIGKILL); None elsewhere. The C function is looked up here, in
    the parent, so the child only makes the system call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def fn():
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))

    return fn


def _stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after GRACE_SECONDS."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _kill_leftover(pid: int | None, trial_dir: str | None) -> None:
    """A trial process of a killed sweep that is still alive (a platform without
    PR_SET_PDEATHSIG): stopped when its command line names the trial's folder."""
    if not pid or not trial_dir:
        return
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().decode("utf-8", "replace")
    except OSError:
        return
    if f"--output_dir={trial_dir}" not in cmdline.split("\0"):
        return
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(int(GRACE_SECONDS * 10)):
            time.sleep(0.1)
            os.kill(pid, 0)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _show(path: str) -> str:
    """A path as the user gave it: relative to the working directory when under it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _log_tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return ""
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


class _MlflowRuns:
    """The sweep's MLflow store: one run per trial, created here and handed to the script
    through MLFLOW_RUN_ID (the engine's launcher protocol, training/tracking.py), so a trial is
    in MLflow even when its script dies before it logs anything. Failures cost one warning."""

    def __init__(self, tracking_uri: str, experiment: str, study_name: str, say):
        self.uri = tracking_uri
        self.study_name = study_name
        self._say = say
        self._lock = threading.Lock()
        self.client = None
        try:
            import logging

            import mlflow

            # Not "Creating initial MLflow database tables..." on every new sweep.
            for name in ("mlflow", "alembic"):
                logging.getLogger(name).setLevel(logging.WARNING)

            client = mlflow.MlflowClient(tracking_uri=tracking_uri)
            found = client.get_experiment_by_name(experiment)
            # Artifacts beside the database, not in ./mlruns of the working directory.
            from bert_tf.training.tracking import _artifact_location

            self.experiment_id = (found.experiment_id if found is not None else
                                  client.create_experiment(
                                      experiment, artifact_location=_artifact_location(
                                          tracking_uri)))
            self.client = client
        except Exception as e:  # noqa: BLE001 (whatever MLflow raises)
            self._give_up(e)

    def _give_up(self, error: Exception) -> None:
        self.client = None
        self._say(f"warning: MLflow at {self.uri} failed ({type(error).__name__}: "
                  f"{' '.join(str(error).split())[:200]}); trials log there on their own",
                  err=True)

    def start(self, number: int, params: dict, trial_dir: str) -> str | None:
        if self.client is None:
            return None
        try:
            with self._lock:
                lr = params.get("learning_rate")
                name = f"trial_{number:03d}" + (f"-lr{lr:.2e}" if isinstance(lr, float) else "")
                run = self.client.create_run(self.experiment_id, run_name=name, tags={
                    "optuna.study_name": self.study_name, "optuna.trial_number": str(number),
                    "sweep.trial_dir": trial_dir})
                return run.info.run_id
        except Exception as e:  # noqa: BLE001
            self._give_up(e)
            return None

    def finish(self, run_id: str | None, state: str, value: float | None,
               interrupted: bool = False, trial_dir: str | None = None) -> None:
        """Tag the trial's run with its Optuna state (and value). When the script could not
        end the run (stopped by the pruner, a timeout or the sweep's death), first send what its
        metrics.jsonl holds that MLflow lacks (values still in the script's buffer), then end
        it: KILLED when pruned or interrupted, FAILED when failed."""
        if self.client is None or not run_id:
            return
        try:
            with self._lock:
                self.client.set_tag(run_id, "optuna.state", state)
                if interrupted:
                    self.client.set_tag(run_id, "optuna.interrupted", "true")
                if value is not None:
                    self.client.set_tag(run_id, "optuna.value", repr(value))
                if self.client.get_run(run_id).info.status == "RUNNING":
                    if trial_dir:
                        self._backfill(run_id, os.path.join(trial_dir, "metrics.jsonl"))
                    status = ("KILLED" if interrupted or state == "PRUNED" else
                              "FINISHED" if state == "COMPLETE" else "FAILED")
                    self.client.set_terminated(run_id, status)
        except Exception as e:  # noqa: BLE001
            self._give_up(e)

    def _backfill(self, run_id: str, metrics_path: str) -> None:
        from mlflow.entities import Metric

        wanted = {}
        for row in _JsonlTail(metrics_path).rows():
            for name, v in row.items():
                if name not in ("step", "split") and isinstance(v, (int, float)) and \
                        not isinstance(v, bool) and math.isfinite(v):
                    wanted[(f"{row.get('split')}/{name}", int(row.get("step", 0)))] = float(v)
        have = {(key, m.step) for key in {k for k, _ in wanted}
                for m in self.client.get_metric_history(run_id, key)}
        stamp = int(time.time() * 1000)
        missing = [Metric(key, v, stamp, step) for (key, step), v in wanted.items()
                   if (key, step) not in have]
        for i in range(0, len(missing), 1000):
            self.client.log_batch(run_id, metrics=missing[i:i + 1000])


@dataclasses.dataclass
class _Outcome:
    state: str                  # COMPLETE, PRUNED, FAIL
    value: float | None = None
    reason: str = ""            # one line: why pruned / failed
    interrupted: bool = False   # stopped by the sweep itself: run again on the next start
    steps: int | None = None


class _Sweep:
    """The worker threads of one `run_sweep` call and what they share."""

    def __init__(self, spec, fixed, output_dir, study, mlflow_runs, say):
        self.spec = spec
        self.fixed = fixed
        self.output_dir = output_dir
        self.study = study
        self.mlflow = mlflow_runs
        self.say = say
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.in_flight = 0
        self.started = time.monotonic()
        self.deadline = (self.started + 60 * spec.timeout_minutes
                         if spec.timeout_minutes else None)
        self.preexec = _die_with_parent_fn()
        self.usage_error = None  # (trial number, the script's one-line error)

    def elapsed(self) -> str:
        s = int(time.monotonic() - self.started)
        return f"{s // 60:02d}:{s % 60:02d}"

    def budget_left(self) -> int:
        return self.spec.max_total_trials - len(counted_trials(self.study)) - self.in_flight

    def worker(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                if self.budget_left() <= 0 or (self.deadline and time.monotonic() > self.deadline):
                    return
                trial = self.study.ask()
                params = _suggest(trial, self.spec)
                self.in_flight += 1
            outcome = None
            try:
                outcome = self.run_trial(trial, params)
            finally:
                with self.lock:
                    self.finish(trial, outcome or _Outcome(
                        "FAIL", reason="the sweep raised an error", interrupted=True))
                    self.in_flight -= 1

    def finish(self, trial, outcome: _Outcome) -> None:
        import optuna

        if outcome.reason:
            trial.set_user_attr("reason", outcome.reason)
        if outcome.interrupted:
            trial.set_user_attr("interrupted", outcome.reason)
        if outcome.state == "COMPLETE":
            self.study.tell(trial, outcome.value)
        else:
            self.study.tell(trial, state=optuna.trial.TrialState[outcome.state])

    def run_trial(self, trial, params: dict) -> _Outcome:
        spec = self.spec
        number = trial.number
        trial_dir = os.path.join(self.output_dir, "trials", f"trial_{number:03d}")
        os.makedirs(trial_dir, exist_ok=True)
        log_path = os.path.join(trial_dir, "log.txt")
        uri = tracking_uri(self.output_dir)
        cmd = [sys.executable, _script_path(spec.script), *spec.flag_args(self.fixed),
               *spec.flag_args(params), f"--output_dir={trial_dir}", f"--tracking_uri={uri}",
               f"--experiment_name={sweep_name(spec)}", "--progress=false"]
        run_id = self.mlflow.start(number, params, trial_dir)
        env = dict(os.environ)
        if run_id:
            env.update(MLFLOW_TRACKING_URI=uri, MLFLOW_RUN_ID=run_id)
        retry_of = trial.user_attrs.get("retry_of")
        shown = " ".join(f"{k}={_fmt(v)}" for k, v in params.items())
        self.say(f"[{self.elapsed()}] trial {number} started: {shown}"
                 + (f" (retry of trial {retry_of})" if retry_of is not None else "")
                 + f"  log: {_show(log_path)}")
        started = time.monotonic()
        with open(log_path, "w", encoding="utf-8") as log:
            log.write("# " + " ".join(cmd) + "\n")
            log.flush()
            # A session of its own: Ctrl-C reaches the sweep only, which stops its trials and
            # marks them to run again (a trial dying of the same Ctrl-C would look failed).
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.DEVNULL, preexec_fn=self.preexec,
                                    start_new_session=True)
        trial.set_user_attr("output_dir", trial_dir)
        trial.set_user_attr("pid", proc.pid)
        if run_id:
            trial.set_user_attr("mlflow_run_id", run_id)
        try:
            outcome = self.watch(trial, proc, trial_dir, started)
        except BaseException:
            _stop_process(proc)
            raise
        if outcome.state == "FAIL" and not outcome.interrupted:
            tail = _log_tail(log_path)
            trial.set_user_attr("log_tail", tail)
            last = tail.splitlines()[-1] if tail else "(empty log)"
            self.say(f"warning: trial {number} failed: {outcome.reason}; last log line: "
                     f"{last[:300]}  (log: {_show(log_path)})", err=True)
        self.mlflow.finish(run_id, outcome.state, outcome.value, outcome.interrupted, trial_dir)
        took = time.monotonic() - started
        value = "" if outcome.value is None else f" {spec.primary_metric}={outcome.value:.4f}"
        steps = f", {outcome.steps} steps" if outcome.steps else ""
        what = {"COMPLETE": "finished", "PRUNED": "PRUNED", "FAIL": "FAILED"}[outcome.state]
        if outcome.interrupted:
            what = "interrupted"
        self.say(f"[{self.elapsed()}] trial {number} {what}: {shown}{value} ({took:.0f} s"
                 f"{steps})" + (f": {outcome.reason}" if outcome.state != "COMPLETE" else ""))
        return outcome

    def watch(self, trial, proc, trial_dir: str, started: float) -> _Outcome:
        """Report each new primary-metric value to Optuna, ask the pruner, stop the process when
        it says so (or on timeout or a sweep stop), until the process ends."""
        spec = self.spec
        tail = _JsonlTail(os.path.join(trial_dir, "metrics.jsonl"))
        pruner = self.study.pruner
        reports = 0
        last = None
        step = None
        timeout = 60 * spec.trial_timeout_minutes if spec.trial_timeout_minutes else None
        while True:
            code = proc.poll()
            for row in tail.rows():
                step = row.get("step", step)
                if row.get("split") != spec.metric_split or spec.metric_key not in row:
                    continue
                try:
                    last = float(row[spec.metric_key])
                except (TypeError, ValueError):
                    continue
                reports += 1
                trial.report(last, step=reports)
                # The final evaluation (it carries global_step) is not judged: the run is over.
                if code is None and "global_step" not in row and trial.should_prune():
                    verdict = getattr(pruner, "verdict", None)
                    frozen = next(t for t in self.study.get_trials(deepcopy=False)
                                  if t.number == trial.number)
                    reason = verdict(self.study, frozen)[1] if verdict else "the pruner"
                    _stop_process(proc)
                    return _Outcome("PRUNED", last, f"stopped at step {row.get('step')}: "
                                    f"{reason}", steps=row.get("step"))
            if code is not None:
                break
            now = time.monotonic()
            if self.stop.is_set() or (self.deadline and now > self.deadline):
                _stop_process(proc)
                why = ("the sweep was stopped" if self.stop.is_set() else
                       f"the sweep's timeout_minutes ({spec.timeout_minutes:g}) passed")
                return _Outcome("FAIL", last, why, interrupted=True, steps=step)
            if timeout and now - started > timeout:
                _stop_process(proc)
                return _Outcome("FAIL", last, f"timed out after trial_timeout_minutes "
                                f"{spec.trial_timeout_minutes:g}", steps=step)
            time.sleep(POLL_SECONDS)
        if code == EXIT_USAGE and not self.stop.is_set():
            # The script refused its flags (a path relative to another folder, a value out of
            # range): every trial would. Stop the sweep; the trial does not count.
            lines = [line for line in _log_tail(os.path.join(trial_dir, "log.txt")).splitlines() if ": error: " in line]
            self.usage_error = (trial.number, lines[-1].strip() if lines else
                                f"{spec.script} exited with status {EXIT_USAGE}")
            self.stop.set()
            return _Outcome("FAIL", last, "the script refused its flags", interrupted=True,
                            steps=step)
        if code != 0:
            if self.stop.is_set():
                return _Outcome("FAIL", last, "the sweep was stopped", interrupted=True,
                                steps=step)
            status = (f"killed by {signal.Signals(-code).name}" if code < 0 and
                      -code in signal.valid_signals() else f"exit status {code}")
            return _Outcome("FAIL", last, status, steps=step)
        if last is None or not math.isfinite(last):
            return _Outcome("FAIL", last, f"the script ended without a finite "
                            f"{spec.primary_metric}", steps=step)
        return _Outcome("COMPLETE", last, steps=step)


def tracking_uri(output_dir: str) -> str:
    """The sweep's MLflow store: sqlite:///<absolute DIR>/mlflow.db, the store a script would
    make in DIR itself."""
    from bert_tf.training.tracking import default_tracking_uri

    return default_tracking_uri(output_dir)


def counted_trials(study) -> list:
    """The finished trials that count toward max_total_trials: completed, pruned, and failed
    ones except those the sweep itself interrupted (killed, stopped; they are run again)."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(
        TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
        if not (t.state == TrialState.FAIL and "interrupted" in t.user_attrs)]


def _storage_url(output_dir: str) -> str:
    return "sqlite:///" + os.path.join(os.path.abspath(output_dir), "optuna.db")


def _storage(output_dir: str):
    import optuna

    # Several threads write to one SQLite file: wait for the lock rather than fail.
    return optuna.storages.RDBStorage(_storage_url(output_dir),
                                      engine_kwargs={"connect_args": {"timeout": 60}})


def check_output_dir(spec: SweepSpec, extra: list[str], output_dir: str) -> None:
    """Refuse an output_dir that holds another sweep (another file, an edited file, other fixed
    flags after `--`) or is not a folder. Reads only; raises SweepError."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise SweepError(f"--output_dir={output_dir} is a file: pass a folder")
    db = os.path.join(output_dir, "optuna.db")
    if not os.path.exists(db):
        return
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = sweep_name(spec)
    names = optuna.study.get_all_study_names(_storage(output_dir))
    if name not in names:
        raise SweepError(f"--output_dir={output_dir} holds the sweep {', '.join(names) or '?'}, "
                         f"not {name} ({spec.path}): rerun that sweep's command to resume it, "
                         "or pass another --output_dir")
    attrs = optuna.load_study(study_name=name, storage=_storage(output_dir)).user_attrs
    if attrs.get("sweep_sha256") != _spec_digest(spec.path, extra):
        before = attrs.get("fixed_flags_after_dashdash", [])
        what = (f"fixed flags after -- ({' '.join(before) or 'none'})" if before != extra
                else "search-space file")
        raise SweepError(f"--output_dir={output_dir} holds a sweep made from another "
                         f"{what}: {attrs.get('sweep_file', '?')} as it was then; {spec.path} "
                         "differs. Resume with the same file and flags, or pass another "
                         "--output_dir")


def _lock(output_dir: str):
    """An exclusive lock on DIR/tune.lock for this process's lifetime (the kernel drops it when
    the process dies, however it dies): while held, no trial of the study runs elsewhere."""
    import fcntl

    os.makedirs(output_dir, exist_ok=True)
    f = open(os.path.join(output_dir, "tune.lock"), "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise SweepError(f"--output_dir={output_dir}: another bert_tf.tune (pid {pid}) is "
                         "running this sweep; wait for it or stop it first") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def open_study(spec: SweepSpec, extra: list[str], output_dir: str):
    """Create or load the Optuna study in DIR/optuna.db (name: the file's stem; direction: the
    goal; the file's hash, path and `--` flags as user attrs), with a RandomSampler seeded from
    spec.seed + the number of trials already in the study (a resumed sweep draws new values)
    and the file's pruner. The caller has checked the folder (`check_output_dir`)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.makedirs(output_dir, exist_ok=True)
    storage = _storage(output_dir)
    study = optuna.create_study(storage=storage, study_name=sweep_name(spec),
                                direction=spec.goal, load_if_exists=True,
                                pruner=make_pruner(spec))
    if "sweep_sha256" not in study.user_attrs:
        study.set_user_attr("sweep_sha256", _spec_digest(spec.path, extra))
        study.set_user_attr("sweep_file", os.path.abspath(spec.path))
        study.set_user_attr("fixed_flags_after_dashdash", list(extra))
    study.sampler = optuna.samplers.RandomSampler(seed=spec.seed + len(study.trials))
    return study


def recover(study, mlflow_runs=None) -> list[int]:
    """After a sweep process died: mark its RUNNING trials failed and interrupted (stopping a
    trial process still alive), then enqueue every interrupted trial that has no retry yet with
    the same parameters (user attr retry_of). Returns the numbers of the trials retried. Call
    only while holding the folder's lock (no other sweep process is running)."""
    import optuna
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        _kill_leftover(t.user_attrs.get("pid"), t.user_attrs.get("output_dir"))
        live = optuna.trial.Trial(study, t._trial_id)
        live.set_user_attr("interrupted", "the sweep process ended while it ran")
        study.tell(t.number, state=TrialState.FAIL)
        if mlflow_runs is not None:
            mlflow_runs.finish(t.user_attrs.get("mlflow_run_id"), "FAIL", None, True,
                               t.user_attrs.get("output_dir"))
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    out = []
    for t in trials:
        if t.state == TrialState.FAIL and "interrupted" in t.user_attrs and \
                t.number not in retried:
            study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})
            out.append(t.number)
    return out


def records_from_study(study, spec: SweepSpec) -> list[TrialRecord]:
    """The sweep's trials as TrialRecords: every trial of the study except queued ones and
    interrupted ones that have been run again (the retry stands for them; Optuna keeps both).
    The curves come from each trial's metrics.jsonl (user attr output_dir)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    out = []
    for t in trials:
        if t.state == TrialState.WAITING or ("interrupted" in t.user_attrs and
                                             t.number in retried):
            continue
        iv = t.intermediate_values
        value = t.value if t.state == TrialState.COMPLETE else (iv[max(iv)] if iv else None)
        loss, metric = read_curves(os.path.join(t.user_attrs.get("output_dir", ""),
                                                "metrics.jsonl"), spec)
        params = {name: t.params[name] for name in spec.space if name in t.params}
        out.append(TrialRecord(t.number, params, t.state.name, value, loss, metric))
    return out


def run_sweep(spec: SweepSpec, fixed: dict, extra: list[str], output_dir: str,
              trials_at_once: int, say):
    """Run (or resume) the sweep in output_dir until max_total_trials trials count. `fixed`:
    the checked fixed flags (`spec.check_flags(extra)`); `say(text, err=False)` prints a
    progress line. Returns (the Optuna study, its TrialRecords, write_report's paths)."""
    output_dir = os.path.abspath(output_dir)
    lock = _lock(output_dir)
    try:
        study = open_study(spec, extra, output_dir)
        runs = _MlflowRuns(tracking_uri(output_dir), sweep_name(spec), sweep_name(spec), say)
        retried = recover(study, runs)
        done = len(counted_trials(study))
        sweep = _Sweep(spec, fixed, output_dir, study, runs, say)
        left = spec.max_total_trials - done
        say(f"sweep {sweep_name(spec)}: {spec.max_total_trials} "
            f"trial{'s' if spec.max_total_trials != 1 else ''} "
            f"({done} done{', ' + str(len(retried)) + ' interrupted to rerun' if retried else ''}"
            f"), {trials_at_once} at a time, {spec.primary_metric} ({spec.goal}); "
            f"output {output_dir}")
        if left > 0:
            threads = [threading.Thread(target=sweep.worker, name=f"trial-worker-{i}",
                                        daemon=True) for i in range(min(trials_at_once, left))]
            for t in threads:
                t.start()
            try:
                while any(t.is_alive() for t in threads):
                    for t in threads:
                        t.join(0.5)
            except KeyboardInterrupt:
                say("stopping: the running trials are stopped and will run again on resume",
                    err=True)
                sweep.stop.set()
                for t in threads:
                    t.join()
                raise
        if sweep.usage_error:
            number, line = sweep.usage_error
            raise UsageError(f"trial {number} stopped the sweep, its script refused the flags "
                             f"(paths are read from the folder tune runs in, {os.getcwd()}): "
                             f"{line}")
        records = records_from_study(study, spec)
        paths = write_report(spec, records, output_dir)
        return study, records, paths
    finally:
        lock.close()


# -- command line ----------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        if "unrecognized arguments" in message:
            message += " (the script's own flags go after --)"
        raise UsageError(message)


def parse_args(argv: list[str]):
    """argv (without the program) -> (namespace, flags after `--`)."""
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    else:
        extra = []
    parser = _Parser(
        prog="python -m bert_tf.tune", allow_abbrev=False,
        usage="%(prog)s --sweep FILE --output_dir DIR [--trials_at_once N] "
              "[-- --flag=value ...]",
        description="A local hyperparameter sweep (Optuna) of a search-space file: each trial "
                    "runs the file's script; rerun the same command to resume.",
        epilog="Flags after -- are fixed flags for the script of every trial (over the file's "
               "`flags`). Run from the repository root.")
    parser.add_argument("--sweep", required=True, help="search-space file, e.g. "
                        "configs/sweeps/mrpc_tiny.yaml")
    parser.add_argument("--output_dir", required=True, help="folder of the sweep: optuna.db, "
                        "mlflow.db, trials/, plots and tables; rerun the command to resume")
    parser.add_argument("--trials_at_once", type=int, default=None, help="trial processes at "
                        "a time (default: the file's limits.max_concurrent_trials)")
    return parser.parse_args(argv), extra


def main(argv: list[str]) -> int:
    """The command line (argv without the program); returns the exit status: 0, or 1 when no
    trial produced a value. Raises UsageError / SweepError for bad input (exit 2)."""
    from bert_tf import sweeps

    args, extra = parse_args(argv)
    spec = sweeps.load(args.sweep)
    fixed = spec.check_flags(extra, reserved=_LAUNCHER_FLAGS)
    trials_at_once = spec.max_concurrent_trials if args.trials_at_once is None \
        else args.trials_at_once
    if trials_at_once < 1:
        raise UsageError(f"--trials_at_once={trials_at_once} must be at least 1")
    trials_at_once = min(trials_at_once, spec.max_total_trials)
    check_output_dir(spec, extra, args.output_dir)

    print_lock = threading.Lock()

    def say(text: str, err: bool = False) -> None:
        with print_lock:
            print(text, file=sys.stderr if err else sys.stdout, flush=True)

    started = time.monotonic()
    study, records, paths = run_sweep(spec, fixed, extra, args.output_dir, trials_at_once, say)
    attrs_of = {t.number: t.user_attrs for t in study.get_trials(deepcopy=False)}
    counts = {s: sum(r.state == s for r in records) for s in STATES}
    say(f"done in {time.monotonic() - started:.0f} s: " +
        ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n))
    retries = {a["retry_of"]: n for n, a in attrs_of.items() if "retry_of" in a}
    for number, attrs in sorted(attrs_of.items()):
        if number in retries:
            say(f"trial {number} was interrupted ({attrs.get('interrupted')}) and run again as "
                f"trial {retries[number]}")
    for r in records:
        if r.state == "FAIL":
            attrs = attrs_of[r.number]
            if "interrupted" in attrs:
                say(f"trial {r.number}: interrupted ({attrs['interrupted']}); rerun the command "
                    "to run it again")
            else:
                say(f"trial {r.number} failed ({attrs.get('reason', '')}); end of its log:\n" +
                    "\n".join("    " + line for line in attrs.get("log_tail", "").splitlines()))
    best = best_trial(spec, records)
    if best is None:
        say("no trial reported a value of " + spec.primary_metric, err=True)
    else:
        say(f"best: trial {best.number} " + " ".join(f"{k}={_fmt(v)}" for k, v in
                                                      best.params.items()) +
            f" {spec.primary_metric}={best.value:.4f} ({best.state.lower()})")
    say("report: " + ", ".join(_show(p) for p in paths.values()))
    say(f"MLflow: mlflow ui --backend-store-uri {tracking_uri(args.output_dir)}")
    return 0 if best is not None else 1


def _cli() -> None:
    from bert_tf.cli import EXIT_USAGE

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        sys.exit(main(sys.argv[1:]))
    except UsageError as e:
        print(f"bert_tf.tune: error: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    _cli()
