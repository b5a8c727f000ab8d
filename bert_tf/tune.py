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

This module is the command line; the sweep machinery is the package `bert_tf.sweeps` (the
search-space file, the Bandit rule, the trial runner, the study, tracking and the report). The
names other code used from here (`TrialRecord`, `write_report`, `BanditPruner`, ...) still import
from here.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from bert_tf.errors import UsageError
from bert_tf.sweeps.bandit import (bandit_applies, bandit_decision, bandit_threshold,
                                   make_pruner)
from bert_tf.sweeps.report import (STATES, TrialRecord, best_trial, format_value,
                                   sweep_name, write_report)
from bert_tf.sweeps.runner import run_sweep
from bert_tf.sweeps.processes import display_path
from bert_tf.sweeps.study import (check_output_dir, counted_trials, open_study,
                                  records_from_study, recover)
from bert_tf.sweeps.tracking import read_curves, tracking_uri

# Names code outside the package used from bert_tf.tune before the package existed.
__all__ = ["main", "parse_args", "run_sweep", "STATES", "TrialRecord", "best_trial",
           "write_report", "sweep_name", "bandit_applies", "bandit_decision", "bandit_threshold",
           "make_pruner", "check_output_dir", "counted_trials", "open_study",
           "recover", "records_from_study", "read_curves", "tracking_uri"]


def __getattr__(name):
    # `from bert_tf.tune import BanditPruner` imports Optuna then, as bert_tf.sweeps.bandit does.
    if name == "BanditPruner":
        from bert_tf.sweeps.bandit import BanditPruner
        return BanditPruner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_LAUNCHER_FLAGS = ("output_dir", "use_horovod", "tracking_uri", "experiment_name")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        if "unrecognized arguments" in message:
            message += " (the script's own flags go after --)"
        raise UsageError(message)


def parse_args(argv: list[str]):
    """argv (without the program) -> (namespace, flags after `--`)."""
    from bert_tf.cli import split_after_dashdash

    argv, extra = split_after_dashdash(argv)
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
        say(f"best: trial {best.number} " + " ".join(f"{k}={format_value(v)}" for k, v in
                                                      best.params.items()) +
            f" {spec.primary_metric}={best.value:.4f} ({best.state.lower()})")
    say("report: " + ", ".join(display_path(p) for p in paths.values()))
    say(f"MLflow: mlflow ui --backend-store-uri {tracking_uri(args.output_dir)}")
    return 0 if best is not None else 1


if __name__ == "__main__":
    from bert_tf.cli import run_module

    run_module(main, "bert_tf.tune")
