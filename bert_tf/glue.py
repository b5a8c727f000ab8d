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


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def parse_args(argv: list[str]):
    from bert_tf.cli import split_after_dashdash
    from bert_tf.sweeps.glue_table import STATISTICS, add_grid_arguments, check_grid_arguments

    argv, extra = split_after_dashdash(argv)
    p = _Parser(prog="python -m bert_tf.glue", allow_abbrev=False,
                description="The GLUE dev table of a checkpoint: every task fine-tuned with the "
                            "paper's recipe, resumable.")
    add_grid_arguments(p)
    p.add_argument("--output_dir", required=True, help="folder of the table and every run")
    p.add_argument("--data_dir", help="folder holding one folder per GLUE task (MRPC/, RTE/...)")
    p.add_argument("--statistic", choices=STATISTICS, default="median",
                   help="what a cell is over seeds (default median, with the spread)")
    args = p.parse_args(argv)
    check_grid_arguments(args, extra, "bert_tf.glue")
    return args, extra


def main(argv: list[str]) -> int:
    from bert_tf.sweeps import load
    from bert_tf.sweeps.glue_table import find_tasks, task_cell, write_outputs, write_spec
    from bert_tf.sweeps.runner import run_sweep
    from bert_tf.sweeps.study import check_output_dir

    args, extra = parse_args(argv)
    if args.data_dir and not os.path.isdir(args.data_dir):
        raise UsageError(f"--data_dir={args.data_dir}: no such folder")
    tasks = find_tasks(args.data_dir, args.tasks)
    output_dir = os.path.abspath(args.output_dir)
    plans = []
    for task in tasks:  # every grid checked before any run starts
        spec = load(write_spec(output_dir, task, args, args.data_dir))
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
    for line in out["notes"]:
        say(line)
    return 0 if all(cells.values()) else 1


if __name__ == "__main__":
    from bert_tf.cli import run_module

    run_module(main, "bert_tf.glue")
