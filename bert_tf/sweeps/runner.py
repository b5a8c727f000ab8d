"""The trial runner: worker threads that ask the study for parameters, run the script in a
subprocess, report each new primary-metric value to the pruner and stop the trial when it says
so; `run_sweep` runs or resumes a whole sweep and writes its report."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import threading
import time

from bert_tf.errors import UsageError
from bert_tf.cli import EXIT_USAGE
from bert_tf.sweeps.processes import (die_with_parent_fn, display_path, log_tail, script_path,
                                      stop_process)
from bert_tf.sweeps.report import format_value, sweep_name, write_report
from bert_tf.sweeps.study import (counted_trials, lock_output_dir, open_study, records_from_study,
                                  recover, suggest_params)
from bert_tf.sweeps.tracking import JsonlTail, MlflowRuns, tracking_uri
from bert_tf.sweeps.spec import SweepSpec


POLL_SECONDS = 1.0        # how often a running trial's metrics.jsonl is read


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
        self.preexec = die_with_parent_fn()
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
                params = suggest_params(trial, self.spec)
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
        cmd = [sys.executable, script_path(spec.script), *spec.flag_args(self.fixed),
               *spec.flag_args(params), f"--output_dir={trial_dir}", f"--tracking_uri={uri}",
               f"--experiment_name={sweep_name(spec)}", "--progress=false"]
        run_id = self.mlflow.start(number, params, trial_dir)
        env = dict(os.environ)
        if run_id:
            env.update(MLFLOW_TRACKING_URI=uri, MLFLOW_RUN_ID=run_id)
        retry_of = trial.user_attrs.get("retry_of")
        shown = " ".join(f"{k}={format_value(v)}" for k, v in params.items())
        self.say(f"[{self.elapsed()}] trial {number} started: {shown}"
                 + (f" (retry of trial {retry_of})" if retry_of is not None else "")
                 + f"  log: {display_path(log_path)}")
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
            stop_process(proc)
            raise
        if outcome.state == "FAIL" and not outcome.interrupted:
            tail = log_tail(log_path)
            trial.set_user_attr("log_tail", tail)
            last = tail.splitlines()[-1] if tail else "(empty log)"
            self.say(f"warning: trial {number} failed: {outcome.reason}; last log line: "
                     f"{last[:300]}  (log: {display_path(log_path)})", err=True)
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
        tail = JsonlTail(os.path.join(trial_dir, "metrics.jsonl"))
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
                    stop_process(proc)
                    return _Outcome("PRUNED", last, f"stopped at step {row.get('step')}: "
                                    f"{reason}", steps=row.get("step"))
            if code is not None:
                break
            now = time.monotonic()
            if self.stop.is_set() or (self.deadline and now > self.deadline):
                stop_process(proc)
                why = ("the sweep was stopped" if self.stop.is_set() else
                       f"the sweep's timeout_minutes ({spec.timeout_minutes:g}) passed")
                return _Outcome("FAIL", last, why, interrupted=True, steps=step)
            if timeout and now - started > timeout:
                stop_process(proc)
                return _Outcome("FAIL", last, f"timed out after trial_timeout_minutes "
                                f"{spec.trial_timeout_minutes:g}", steps=step)
            time.sleep(POLL_SECONDS)
        if code == EXIT_USAGE and not self.stop.is_set():
            # The script refused its flags (a path relative to another folder, a value out of
            # range): every trial would. Stop the sweep; the trial does not count.
            lines = [line for line in log_tail(os.path.join(trial_dir, "log.txt")).splitlines() if ": error: " in line]
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


def run_sweep(spec: SweepSpec, fixed: dict, extra: list[str], output_dir: str,
              trials_at_once: int, say):
    """Run (or resume) the sweep in output_dir until max_total_trials trials count. `fixed`:
    the checked fixed flags (`spec.check_flags(extra)`); `say(text, err=False)` prints a
    progress line. Returns (the Optuna study, its TrialRecords, write_report's paths)."""
    output_dir = os.path.abspath(output_dir)
    lock = lock_output_dir(output_dir)
    try:
        study = open_study(spec, extra, output_dir)
        runs = MlflowRuns(tracking_uri(output_dir), sweep_name(spec), sweep_name(spec), say)
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
