"""What a trial logs: its metrics.jsonl read as curves (whole, or as it grows), and the sweep's
MLflow store with one run per trial."""

from __future__ import annotations

import json
import math
import os
import threading
import time
from bert_tf.sweeps.spec import SweepSpec


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


class JsonlTail:
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


class MlflowRuns:
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
        for row in JsonlTail(metrics_path).rows():
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


def tracking_uri(output_dir: str) -> str:
    """The sweep's MLflow store: sqlite:///<absolute DIR>/mlflow.db, the store a script would
    make in DIR itself."""
    from bert_tf.training.tracking import default_tracking_uri

    return default_tracking_uri(output_dir)
