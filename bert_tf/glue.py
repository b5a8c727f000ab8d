"""The GLUE dev table of a checkpoint in one command:

    python -m bert_tf.glue --init_checkpoint=CKPT --output_dir=DIR [--data_dir=GLUE_DIR]
        [--tasks=MRPC,RTE] [--learning_rates=2e-5,3e-5,5e-5] [--seeds=5]
        [--statistic=median] [--trials_at_once=1] [-- --dtype=bf16 ...]

Fine-tunes CKPT on every GLUE task whose folder GLUE_DIR holds (GLUE_DIR/MRPC/train.tsv, ...;
without --data_dir: --tasks, default all, each downloaded by run_classifier.py) with the BERT
paper's recipe: batch 32, 3 epochs, max_seq_length 128, the learning rate chosen on dev from the
grid, several seeds on the small tasks (CoLA, MRPC, STS-B, RTE). Each task is a grid sweep of
`python -m bert_tf.tune`'s runner (DIR/TASK: optuna.db, mlflow.db, trials/), so a killed run
resumes where it stopped when the same command is run again. DIR gets:

    glue_table.md, glue_table.csv   the table in the paper's form, the statistic and spread per
                                    cell, the chosen learning rates and every run
    glue_table.png                  each task's runs and statistic
    glue_submission.zip             GLUE's files (CoLA.tsv ... AX.tsv) from the chosen runs
    specs/glue_TASK.yaml            each task's grid, as a search-space file

Flags after -- go to every run_classifier.py run. Bad input is one line, exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

from bert_tf.errors import UsageError

_LAUNCHER_FLAGS = ("output_dir", "use_horovod", "tracking_uri", "experiment_name")
# Set by this command for each task and run: not accepted after --.
_GRID_FLAGS = ("task", "task_name", "init_checkpoint", "data_dir", "learning_rate", "seed",
               "do_train", "do_eval", "do_predict")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated numbers") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: positive learning rates")
    return values


def parse_args(argv: list[str]):
    from bert_tf.cli import split_after_dashdash

    argv, extra = split_after_dashdash(argv)
    p = _Parser(prog="python -m bert_tf.glue", allow_abbrev=False,
                description="The GLUE dev table of a checkpoint: every task fine-tuned with the "
                            "paper's recipe, resumable.")
    p.add_argument("--init_checkpoint", required=True, help="the checkpoint to evaluate")
    p.add_argument("--output_dir", required=True, help="folder of the table and every run")
    p.add_argument("--data_dir", help="folder holding one folder per GLUE task (MRPC/, RTE/...)")
    p.add_argument("--tasks", type=lambda s: [t for t in s.split(",") if t.strip()],
                   help="comma-separated tasks (default: every task found in --data_dir)")
    p.add_argument("--learning_rates", type=_floats, default=[2e-5, 3e-5, 5e-5],
                   help="the grid (default 2e-5,3e-5,5e-5)")
    p.add_argument("--seeds", type=int, default=5, help="seeds of each small task (CoLA, MRPC, "
                   "STS-B, RTE); the others run one (default 5)")
    p.add_argument("--statistic", choices=("median", "mean", "best"), default="median",
                   help="what a cell is over seeds (default median, with the spread)")
    p.add_argument("--train_batch_size", type=int, default=32)
    p.add_argument("--num_train_epochs", type=float, default=3.0)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--max_train_examples", type=int, default=0,
                   help="train on the first N examples of each task (quick runs); 0: all")
    p.add_argument("--trials_at_once", type=int, default=1, help="runs at a time")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.trials_at_once < 1:
        raise UsageError("--seeds and --trials_at_once must be at least 1")
    return args, extra


def main(argv: list[str]) -> int:
    from bert_tf.sweeps import load
    from bert_tf.sweeps.glue_table import find_tasks, spec_text, task_cell, write_outputs
    from bert_tf.sweeps.runner import run_sweep
    from bert_tf.sweeps.study import check_output_dir

    args, extra = parse_args(argv)
    for arg in extra:
        name = arg.lstrip("-").split("=", 1)[0]
        if name in _GRID_FLAGS or (name.startswith("no") and name[2:] in _GRID_FLAGS):
            raise UsageError(f"{arg} after --: bert_tf.glue sets --{name.removeprefix('no')} "
                             "itself (its own flags: --init_checkpoint, --data_dir, "
                             "--learning_rates, --seeds, --tasks)")
    if args.data_dir and not os.path.isdir(args.data_dir):
        raise UsageError(f"--data_dir={args.data_dir}: no such folder")
    tasks = find_tasks(args.data_dir, args.tasks)
    output_dir = os.path.abspath(args.output_dir)
    specs_dir = os.path.join(output_dir, "specs")
    os.makedirs(specs_dir, exist_ok=True)
    plans = []
    for task in tasks:  # every grid checked before any run starts
        path = os.path.join(specs_dir, f"glue_{task}.yaml")
        text = spec_text(task, args, args.data_dir)
        if not os.path.exists(path) or open(path, encoding="utf-8").read() != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        spec = load(path)
        fixed = spec.check_flags(extra, reserved=_LAUNCHER_FLAGS)
        check_output_dir(spec, extra, os.path.join(output_dir, task))
        plans.append((task, spec, fixed))
    lock = threading.Lock()

    def say(text, err=False):
        with lock:
            print(text, file=sys.stderr if err else sys.stdout, flush=True)

    started = time.monotonic()
    total = sum(spec.max_total_trials for _, spec, _ in plans)
    say(f"GLUE table of {args.init_checkpoint}: {', '.join(tasks)}; {total} runs, "
        f"{args.trials_at_once} at a time; output {output_dir}")
    for task, spec, fixed in plans:
        run_sweep(spec, fixed, extra, os.path.join(output_dir, task),
                  min(args.trials_at_once, spec.max_total_trials), say)
    cells = {task: task_cell(task, os.path.join(output_dir, task), args.statistic)
             for task in tasks}
    out = write_outputs(cells, args.statistic, output_dir)
    say(f"done in {time.monotonic() - started:.0f} s\n\n{out['markdown']}")
    say("wrote " + ", ".join(out["paths"].values()))
    if out["missing"]:
        say(f"the submission lacks {', '.join(out['missing'])}: GLUE's server needs all "
            f"{len(out['zipped']) + len(out['missing'])} files")
    return 0 if all(cells.values()) else 1


if __name__ == "__main__":
    from bert_tf.cli import run_module

    run_module(main, "bert_tf.glue")
