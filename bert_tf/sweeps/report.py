"""The report of a sweep: its trials as `TrialRecord`s, the best one, the loss curves and
metric-against-learning-rate plots (PNG) and the trials table (Markdown, CSV). Shared by local
sweeps (`bert_tf.tune`) and Azure ML downloads (azure/submit.py); needs only matplotlib."""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from bert_tf.sweeps.spec import SweepSpec


STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING")


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


def format_value(value) -> str:
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
    os.makedirs(output_dir, exist_ok=True)
    trials = sorted(trials, key=lambda t: t.number)
    best = best_trial(spec, trials)
    axis = _XAxis.of(spec, trials)
    return {"loss_plot": _plot_losses(spec, trials, best, axis, output_dir),
            "metric_plot": _plot_metric(spec, trials, best, axis, output_dir),
            **_write_tables(spec, trials, best, output_dir)}


@dataclasses.dataclass
class _XAxis:
    """The parameter both plots use for their colours and the metric plot for its x axis."""
    name: str | None        # a parameter (`_x_param`), or None: the trial number
    log: bool               # log axis and log-spaced colours (learning rates, log-uniform)
    xs: list                # the values on the axis
    colours: object = None  # value -> colour

    @classmethod
    def of(cls, spec: SweepSpec, trials: list[TrialRecord]) -> "_XAxis":
        name = _x_param(spec, trials)
        log = name is not None and (name == "learning_rate" or
                                    getattr(spec.space.get(name), "type", "") == "loguniform")
        axis = cls(name, log, [])
        axis.xs = [axis.x(t) for t in trials if axis.shown(t)]
        axis.colours = _colours(axis.xs, log)
        return axis

    def x(self, t: TrialRecord) -> float | None:
        if self.name is None:
            return float(t.number)
        try:
            return float(t.params.get(self.name))
        except (TypeError, ValueError):
            return None

    def shown(self, t: TrialRecord) -> bool:
        """Whether the trial has a place on the axis (a value, positive on a log axis)."""
        x = self.x(t)
        return x is not None and (not self.log or x > 0)

    def colour(self, t: TrialRecord):
        return self.colours(self.x(t)) if self.shown(t) else "grey"

    def position(self, x: float) -> float:
        return math.log10(x) if self.log else x

    def span(self) -> float:
        """The width of the axis in positions (1 when it has none)."""
        if not self.xs:
            return 1.0
        return (max(map(self.position, self.xs)) - min(map(self.position, self.xs))) or 1.0

    def label(self, t: TrialRecord) -> str:
        text = f"trial {t.number}"
        if self.name is not None and self.name in t.params:
            short = "lr" if self.name == "learning_rate" else self.name
            text += f", {short} {format_value(t.params[self.name])}"
        return text + ("" if t.state == "COMPLETE" else f" ({t.state.lower()})")


def _plot_losses(spec: SweepSpec, trials: list, best, axis: _XAxis, output_dir: str) -> str:
    """loss_curves.png (see write_report); returns its path."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 6), layout="constrained")
    ax = fig.add_subplot()
    plotted = 0
    # In the order of the plotted parameter, so the legend reads from low to high rates.
    for t in sorted(trials, key=lambda t: (axis.x(t) is None, axis.x(t) or 0.0, t.number)):
        if not t.loss_curve:
            continue
        steps, losses = zip(*sorted(t.loss_curve))
        style = {"PRUNED": "--", "FAIL": ":"}.get(t.state, "-")
        width = 2.6 if best is not None and t.number == best.number else 1.6
        line, = ax.plot(steps, losses, style, color=axis.colour(t), linewidth=width,
                        label=axis.label(t))
        if t.state in ("PRUNED", "FAIL"):
            ax.plot(steps[-1], losses[-1], "x", color=line.get_color(), markersize=10,
                    markeredgewidth=2.5)
        plotted += 1
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss (train/loss)")
    ax.set_title(f"Sweep {sweep_name(spec)}: training loss per trial "
                 "(dashed + x: pruned where it stopped; dotted: failed)")
    ax.grid(True, alpha=0.3)
    _legend_or_note(ax, plotted, "no trial logged a training loss",
                    title="thicker line: best trial", title_fontsize=9)
    return _save(fig, output_dir, "loss_curves.png")


_KINDS = [("COMPLETE", "o", "tab:blue", "completed"),
          ("PRUNED", "X", "tab:red", "pruned (value when stopped)"),
          ("FAIL", "v", "tab:grey", "failed (last value)"),
          ("RUNNING", "o", "tab:orange", "running (last value)")]


def _plot_metric(spec: SweepSpec, trials: list, best, axis: _XAxis, output_dir: str) -> str:
    """metric_vs_lr.png (see write_report); returns its path."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 6), layout="constrained")
    ax = fig.add_subplot()
    points = {state: [(axis.x(t), t.value, t.number) for t in trials if t.state == state and
                      t.value is not None and math.isfinite(t.value) and axis.shown(t)]
              for state, *_ in _KINDS}
    values = [v for pts in points.values() for _, v, _ in pts]
    low, high, edge = _y_range(values, spec.goal)
    labels = []  # [x, y, numbers, off-scale texts]: trials drawn on one spot share a label
    for state, marker, face, text in _KINDS:
        pts = points[state]
        if not pts:
            continue
        drawn = [(x, y if low <= y <= high else edge) for x, y, _ in pts]
        ax.scatter([x for x, _ in drawn], [y for _, y in drawn], marker=marker, s=70,
                   color=face, label=f"{text}: {len(pts)}", zorder=3, edgecolors="black",
                   linewidths=0.5)
        for (x, y, number), (_, shown) in zip(pts, drawn):
            near = [lab for lab in labels
                    if abs(axis.position(lab[0]) - axis.position(x)) < 0.02 * axis.span()
                    and abs(lab[1] - shown) < 0.02 * (high - low)]
            if not near:
                labels.append([x, shown, [], []])
                near = labels[-1:]
            near[0][2].append(number)
            if shown != y:
                near[0][3].append(f"{number}: {y:.3g}")
    _write_point_labels(ax, labels, axis)
    if values:
        ax.set_ylim(low, high)
    _mark_best(ax, spec, best, axis)
    if axis.log:
        ax.set_xscale("log")
    metric = spec.primary_metric
    ax.set_xlabel(f"{axis.name or 'trial number'}" + (" (log scale)" if axis.log else ""))
    ax.set_ylabel(f"{metric} ({spec.goal})")
    ax.set_title(f"Sweep {sweep_name(spec)}: {metric} against {axis.name or 'trial number'}")
    ax.grid(True, which="both", alpha=0.3)
    _legend_or_note(ax, values, "no trial reported the primary metric")
    return _save(fig, output_dir, "metric_vs_lr.png")


def _legend_or_note(ax, shown, note: str, **legend) -> None:
    """The legend right of the plot when anything was drawn, else `note` in its middle."""
    if shown:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, **legend)
    else:
        ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes)


def _save(fig, output_dir: str, name: str) -> str:
    path = os.path.join(output_dir, name)
    fig.savefig(path, dpi=110)
    return path


def _write_point_labels(ax, labels: list, axis: _XAxis) -> None:
    """The trial numbers beside the metric plot's points ([x, y, numbers, off-scale texts])."""
    for x, y, numbers, off_scale in labels:
        text = ", ".join(str(n) for n in sorted(numbers))
        if off_scale:
            text = "off scale: " + ", ".join(off_scale)
        # A long label in the right half of the plot goes to the left of its point.
        left = bool(off_scale) and axis.xs and \
            axis.position(x) > min(map(axis.position, axis.xs)) + 0.5 * axis.span()
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(-7 if left else 7, 5),
                    fontsize=8, color="dimgrey", ha="right" if left else "left")


def _mark_best(ax, spec: SweepSpec, best, axis: _XAxis) -> None:
    """The best trial starred on the metric plot, with its parameter and value."""
    if best is None or axis.x(best) is None:
        return
    bx, by = axis.x(best), best.value
    ax.scatter([bx], [by], marker="*", s=400, color="gold", edgecolors="black",
               linewidths=1.0, zorder=4, label=f"best: trial {best.number}")
    up = spec.goal == "maximize"
    ax.annotate(f"best: trial {best.number}, {axis.name or 'trial'} {format_value(bx)}\n"
                f"{spec.metric_key} {best.value:.4f}", (bx, by), textcoords="offset points",
                xytext=(0, 34 if up else -44), ha="center", va="bottom" if up else "top",
                fontsize=9, bbox=dict(boxstyle="round", facecolor="lightyellow", alpha=0.9),
                arrowprops=dict(arrowstyle="->"), zorder=5)


def _write_tables(spec: SweepSpec, trials: list, best, output_dir: str) -> dict:
    """trials.csv and trials.md (see write_report): {"table": md path, "csv": csv path}."""
    metric = spec.primary_metric
    params = list(spec.space) + sorted({k for t in trials for k in t.params} - set(spec.space))
    header = ["trial", "state", *params, metric, "steps", "best"]
    rows = []
    for t in trials:
        is_best = best is not None and t.number == best.number
        value = "" if t.value is None else f"{t.value:.4f}"
        rows.append([str(t.number), t.state, *[format_value(t.params[p]) if p in t.params
                                               else "" for p in params],
                     value, str(_steps(t) or ""), "best" if is_best else ""])
    csv_path = os.path.join(output_dir, "trials.csv")
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for t, row in zip(trials, rows):
            writer.writerow([*row[:2], *[t.params.get(p, "") for p in params],
                             "" if t.value is None else repr(t.value), *row[-2:]])
    counts = {s: sum(t.state == s for t in trials) for s in STATES}
    lines = [f"# Sweep {sweep_name(spec)}", "",
             f"{len(trials)} trials ("
             + ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n)
             + f"); primary metric `{metric}` ({spec.goal}); file `{spec.path}`.", ""]
    if best is not None:
        lines += [f"Best: trial {best.number} ({best.state.lower()}), " +
                  ", ".join(f"{k} {format_value(v)}" for k, v in best.params.items()) +
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
    return {"table": table_path, "csv": csv_path}


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
