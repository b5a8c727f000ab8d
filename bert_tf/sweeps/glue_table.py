"""The GLUE dev table of one checkpoint: one grid sweep per task (learning rates x seeds) run by
the sweep runner, then the table in the BERT paper's form, its plot, and GLUE's submission zip
from the chosen runs.

Per task the grid's learning rate whose statistic over seeds (median by default) of the task's
metric is best is chosen; each cell is that statistic over its seeds, with the spread (min to
max) and the number of seeds. The paper's average is over its 9 numbers: MNLI-m, MNLI-mm, QQP
F1, QNLI, SST-2, CoLA, STS-B Spearman, MRPC F1, RTE (WNLI out). The submission takes, per task,
the run whose primary value is closest to the cell's (the best run; for a median or mean, the
run nearest it). With `best` every number of a cell comes from that run; with median or mean
each number is the statistic of its own metric over the seeds.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import statistics
import zipfile

from bert_tf.errors import UsageError

# task: (primary metric as run_classifier.py logs it, [(column label, eval_results key), ...])
TASKS = {
    "CoLA": ("eval/eval_mcc", [("MCC", "eval_mcc")]),
    "SST-2": ("eval/eval_accuracy", [("acc", "eval_accuracy")]),
    "MRPC": ("eval/eval_f1", [("F1", "eval_f1"), ("acc", "eval_accuracy")]),
    "STS-B": ("eval/eval_spearman", [("Spearman", "eval_spearman"), ("Pearson", "eval_pearson")]),
    "QQP": ("eval/eval_f1", [("F1", "eval_f1"), ("acc", "eval_accuracy")]),
    "MNLI": ("eval/dev_matched_eval_accuracy", [("m", "dev_matched_eval_accuracy"),
                                                ("mm", "dev_mismatched_eval_accuracy")]),
    "QNLI": ("eval/eval_accuracy", [("acc", "eval_accuracy")]),
    "RTE": ("eval/eval_accuracy", [("acc", "eval_accuracy")]),
    "WNLI": ("eval/eval_accuracy", [("acc", "eval_accuracy")]),
}
SMALL_TASKS = ("CoLA", "MRPC", "STS-B", "RTE")  # the paper's several restarts
# The numbers the paper averages: (task, eval_results key).
AVERAGED = [("MNLI", "dev_matched_eval_accuracy"), ("MNLI", "dev_mismatched_eval_accuracy"),
            ("QQP", "eval_f1"), ("QNLI", "eval_accuracy"), ("SST-2", "eval_accuracy"),
            ("CoLA", "eval_mcc"), ("STS-B", "eval_spearman"), ("MRPC", "eval_f1"),
            ("RTE", "eval_accuracy")]
STATISTICS = ("median", "mean", "best")
GLUE_FILES = ("CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv",
              "MNLI-mm.tsv", "QNLI.tsv", "RTE.tsv", "WNLI.tsv", "AX.tsv")


def find_tasks(data_dir: str | None, asked: list[str] | None) -> list[str]:
    """The tasks to run: `asked` (GLUE names, any case), else every task whose folder in
    data_dir holds its training file. UsageError for an unknown name or no task found."""
    from bert_tf.data import glue

    if asked:
        out = []
        for name in asked:
            try:
                processor = glue.get_processor(name)
            except ValueError as e:
                raise UsageError(f"--tasks: {e}") from None
            if processor.name not in TASKS:
                raise UsageError(f"--tasks: {processor.name} has no dev table cell (tasks: "
                                 f"{', '.join(TASKS)})")
            out.append(processor.name)
        return out
    if not data_dir:
        return list(TASKS)  # run_classifier.py downloads each
    found = [t for t in TASKS if os.path.isfile(os.path.join(data_dir, t, "train.tsv"))]
    if not found:
        raise UsageError(f"--data_dir={data_dir}: no GLUE task folder with a train.tsv "
                         f"({', '.join(TASKS)}): pass the folder that holds them, or --tasks")
    return found


# Set by the table for each task and run: not accepted among the script flags after --.
GRID_FLAGS = ("task", "task_name", "init_checkpoint", "data_dir", "learning_rate", "seed",
              "do_train", "do_eval", "do_predict", "tracking_uri", "experiment_name")


def _learning_rates(text: str) -> list[float]:
    import argparse

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated numbers") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: positive learning rates")
    return values


def add_grid_arguments(p) -> None:
    """The flags of a GLUE table's grid, shared by `python -m bert_tf.glue` and
    `azure/submit.py glue` (an argparse parser): the paper's recipe by default."""
    p.add_argument("--init_checkpoint", required=True, help="the checkpoint to evaluate")
    p.add_argument("--tasks", type=lambda s: [t for t in s.split(",") if t.strip()],
                   help="comma-separated tasks (default: every task found in --data_dir)")
    p.add_argument("--learning_rates", type=_learning_rates, default=[2e-5, 3e-5, 5e-5],
                   help="the grid (default 2e-5,3e-5,5e-5)")
    p.add_argument("--seeds", type=int, default=5, help="seeds of each small task (CoLA, MRPC, "
                   "STS-B, RTE); the others run one (default 5)")
    p.add_argument("--train_batch_size", type=int, default=32)
    p.add_argument("--num_train_epochs", type=float, default=3.0)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--max_train_examples", type=int, default=0,
                   help="train on the first N examples of each task (quick runs); 0: all")
    p.add_argument("--trials_at_once", type=int, default=1, help="runs at a time")


def check_grid_arguments(args, extra: list[str], prog: str) -> None:
    """UsageError for counts below 1 or a script flag after -- that the grid sets itself."""
    if args.seeds < 1 or args.trials_at_once < 1:
        raise UsageError("--seeds and --trials_at_once must be at least 1")
    for arg in extra:
        name = arg.lstrip("-").split("=", 1)[0]
        if name in GRID_FLAGS or (name.startswith("no") and name[2:] in GRID_FLAGS):
            raise UsageError(f"{arg} after --: {prog} sets --{name.removeprefix('no')} "
                             "itself (its own flags: --init_checkpoint, --data_dir, "
                             "--learning_rates, --seeds, --tasks)")


def task_data_dir(data_dir: str, task: str) -> str:
    """The task's folder in a GLUE folder: a local path (made absolute) or a URI
    (azureml://datastores/NAME/paths/glue -> .../glue/MRPC)."""
    if "://" in data_dir:
        return data_dir.rstrip("/") + "/" + task
    return os.path.join(os.path.abspath(data_dir), task)


def spec_text(task: str, args, data_dir: str | None) -> str:
    """The task's search-space file: a grid of learning rates x seeds, every trial trains,
    evaluates on dev and predicts the test set."""
    import yaml

    seeds = list(range(1, (args.seeds if task in SMALL_TASKS else 1) + 1))
    flags = {"task": task, "init_checkpoint": args.init_checkpoint, "do_train": True,
             "do_eval": True, "do_predict": True, "max_seq_length": args.max_seq_length,
             "train_batch_size": args.train_batch_size,
             "num_train_epochs": args.num_train_epochs}
    if data_dir:
        flags["data_dir"] = task_data_dir(data_dir, task)
    if args.max_train_examples:
        flags["max_train_examples"] = args.max_train_examples
    spec = {"script": "run_classifier.py", "primary_metric": TASKS[task][0], "goal": "maximize",
            "search_space": {"learning_rate": {"type": "choice",
                                               "values": list(args.learning_rates)},
                             "seed": {"type": "choice", "values": seeds}},
            "sampling": {"type": "grid", "seed": 0},
            "limits": {"max_concurrent_trials": max(1, min(args.trials_at_once,
                                                           len(seeds) * len(args.learning_rates)))},
            "flags": flags}
    return ("# Written by python -m bert_tf.glue: the " + task + " grid of the GLUE table.\n"
            + yaml.safe_dump(spec, sort_keys=False))


def write_spec(output_dir: str, task: str, args, data_dir: str | None) -> str:
    """OUTPUT_DIR/specs/glue_TASK.yaml (spec_text), rewritten only when its text changed;
    returns its path."""
    specs_dir = os.path.join(output_dir, "specs")
    os.makedirs(specs_dir, exist_ok=True)
    path = os.path.join(specs_dir, f"glue_{task}.yaml")
    text = spec_text(task, args, data_dir)
    if not os.path.exists(path) or open(path, encoding="utf-8").read() != text:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    return path


@dataclasses.dataclass
class Cell:
    """One task's result: the chosen learning rate's runs and their statistic."""
    task: str
    learning_rate: float
    runs: list          # [(trial folder, eval_results dict)], one per seed
    values: dict        # eval_results key -> the statistic over the runs
    spread: tuple       # (min, max) of the primary metric over the runs
    chosen: str         # the trial folder the submission takes


def _stat(values: list[float], how: str) -> float:
    if how == "best":
        return max(values)
    if how == "mean":
        return statistics.fmean(values)
    return statistics.median(values)


def task_cell(task: str, task_dir: str, how: str) -> Cell | None:
    """The cell of a task from the finished trials of its local grid sweep (task_dir: the
    sweep's folder, its spec in ../specs/glue_TASK.yaml); None when no trial finished."""
    from bert_tf.sweeps import load
    from bert_tf.sweeps.study import open_study

    spec = load(os.path.join(task_dir, "..", "specs", f"glue_{task}.yaml"))
    study = open_study(spec, [], task_dir)
    runs = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name != "COMPLETE":
            continue
        folder = t.user_attrs.get("output_dir", "")
        path = os.path.join(folder, "eval_results.json")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            runs.append((float(t.params["learning_rate"]), folder, json.load(f)))
    return cell_of_runs(task, runs, how)


def cell_of_runs(task: str, runs: list, how: str) -> Cell | None:
    """The cell of a task from its finished runs [(learning rate, folder, eval_results dict)],
    wherever they ran (a local sweep, an Azure ML sweep's downloaded trials); None if empty.
    The learning rate whose `how` (median, mean, best) over seeds of the task's primary metric
    is highest is chosen (the smaller rate on a tie)."""
    key = TASKS[task][0].split("/", 1)[1]
    by_lr: dict = {}
    for lr, folder, results in runs:  # a run missing a number of its cell is left out
        if all(k in results for _, k in TASKS[task][1]):
            by_lr.setdefault(float(lr), []).append((folder, results))
    if not by_lr:
        return None
    lr = max(by_lr, key=lambda r: (_stat([res[key] for _, res in by_lr[r]], how), -r))
    runs = sorted(by_lr[lr], key=lambda run: run[0])
    primary = [res[key] for _, res in runs]
    value = _stat(primary, how)
    chosen = min(runs, key=lambda run: abs(run[1][key] - value))[0]
    keys = [k for _, k in TASKS[task][1]]
    if how == "best":  # every number of the cell from the one best run (the zip's)
        best = dict(runs)[chosen]
        values = {k: best[k] for k in keys}
    else:  # each number the statistic of its own metric over the seeds
        values = {k: _stat([res[k] for _, res in runs], how) for k in keys}
    return Cell(task, lr, runs, values, (min(primary), max(primary)), chosen)


def table(cells: dict, how: str) -> tuple[str, list[dict], float | None]:
    """(Markdown, CSV rows, the paper's average or None when a number is missing)."""
    order = [t for t in TASKS if t in cells]
    header = "| | " + " | ".join("MNLI-m/mm" if t == "MNLI" else t for t in order) + \
        " | Average |"
    metrics = "| metric | " + " | ".join("/".join(label for label, _ in TASKS[t][1])
                                         for t in order) + " | the paper's 9 |"
    present = [cells[t].values[k] for t, k in AVERAGED if t in cells and cells[t]]
    average = sum(present) / len(AVERAGED) if len(present) == len(AVERAGED) else None

    def cell_text(task):
        c = cells[task]
        if c is None:
            return "no finished run"
        value = "/".join(f"{100 * c.values[k]:.1f}" for _, k in TASKS[task][1])
        n = len(c.runs)
        spread = f", {100 * c.spread[0]:.1f}-{100 * c.spread[1]:.1f}" if n > 1 else ""
        return f"{value} ({how if n > 1 else 'one run'}{f' of {n}' if n > 1 else ''}{spread})"

    avg = f"{100 * average:.1f}" if average is not None else \
        f"n/a ({len(present)} of {len(AVERAGED)} numbers)"
    rows_md = [header, "|---" * (len(order) + 2) + "|", metrics,
               "| dev | " + " | ".join(cell_text(t) for t in order) + f" | {avg} |"]
    rows_md.append("")
    rows_md.append("| task | learning rate | seeds | " + how + " of the metric | runs |")
    rows_md.append("|---|---|---|---|---|")
    csv_rows = []
    for task in order:
        c = cells[task]
        if c is None:
            continue
        key = TASKS[task][1][0][1]
        runs = ", ".join(f"{100 * res[key]:.2f}" for _, res in c.runs)
        rows_md.append(f"| {task} | {c.learning_rate:g} | {len(c.runs)} | "
                       f"{100 * c.values[key]:.2f} | {runs} |")
        for label, k in TASKS[task][1]:
            csv_rows.append({"task": task, "metric": label, "value": c.values[k],
                             "statistic": how if len(c.runs) > 1 else "one run",
                             "seeds": len(c.runs), "min": min(res[k] for _, res in c.runs),
                             "max": max(res[k] for _, res in c.runs),
                             "learning_rate": c.learning_rate, "chosen_run": c.chosen})
    return "\n".join(rows_md) + "\n", csv_rows, average


def plot(cells: dict, how: str, path: str) -> None:
    """Each task's primary metric: every seed's run as a dot, the statistic as a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = [t for t in TASKS if cells.get(t)]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(order) + 2), 4.2))
    for i, task in enumerate(order):
        c = cells[task]
        key = TASKS[task][1][0][1]
        ax.bar(i, 100 * c.values[key], color="#9ecae1", width=0.6)
        ax.scatter([i] * len(c.runs), [100 * res[key] for _, res in c.runs], color="#08519c",
                   zorder=3, s=18)
    ax.set_xticks(range(len(order)),
                  [f"{t}\n{TASKS[t][1][0][0]}\nlr {cells[t].learning_rate:g}" for t in order])
    ax.set_ylabel("dev score (x100)")
    ax.set_title(f"GLUE dev: bars the {how} over seeds, dots the runs", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def submission_zip(cells: dict, path: str) -> tuple[list[str], list[str]]:
    """GLUE's submission zip from the chosen runs: (files written, GLUE files missing)."""
    written = []
    partial = path + ".partial"
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as z:
        for task in TASKS:
            c = cells.get(task)
            if c is None:
                continue
            for name in sorted(os.listdir(c.chosen)):
                if name in GLUE_FILES:
                    z.write(os.path.join(c.chosen, name), name)
                    written.append(name)
    os.replace(partial, path)
    return written, [n for n in GLUE_FILES if n not in written]


def write_outputs(cells: dict, how: str, output_dir: str) -> dict:
    """glue_table.md/.csv/.png and glue_submission.zip in output_dir. Returns {paths, markdown,
    average, zipped, missing, notes} (notes: lines to show the user)."""
    md, rows, average = table(cells, how)
    paths = {"table": os.path.join(output_dir, "glue_table.md"),
             "csv": os.path.join(output_dir, "glue_table.csv"),
             "png": os.path.join(output_dir, "glue_table.png"),
             "zip": os.path.join(output_dir, "glue_submission.zip")}
    with open(paths["table"], "w", encoding="utf-8") as f:
        f.write(md)
    with open(paths["csv"], "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["task", "metric", "value", "statistic", "seeds",
                                               "min", "max", "learning_rate", "chosen_run"])
        writer.writeheader()
        writer.writerows(rows)
    if any(cells.values()):
        plot(cells, how, paths["png"])
    else:  # nothing to draw: no stale plot of an earlier table either
        if os.path.exists(paths["png"]):
            os.remove(paths["png"])
        del paths["png"]
    written, missing = submission_zip(cells, paths["zip"])
    notes = []
    if missing:
        notes.append(f"the submission lacks {', '.join(missing)}: GLUE's server needs all "
                     f"{len(written) + len(missing)} files")
    return {"paths": paths, "markdown": md, "average": average, "zipped": written,
            "missing": missing, "notes": notes}
