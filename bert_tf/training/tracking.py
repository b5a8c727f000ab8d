"""The one place training metrics go: metrics.jsonl, TensorBoard scalars and MLflow.

`TrackingLog` is written to by the chief only (every other worker holds a disabled one):

    metrics.jsonl       one JSON object per write: {"step", "split", name: value, ...}
    tensorboard/        one scalar per value, tagged "<split>/<name>"
    MLflow              the same values under the same "<split>/<name>" keys, the run's flags
                        and model config as parameters

MLflow is optional and never in the way of training:
- off with tracking_uri None (the scripts' `--tracking_uri=none`); the scripts default to a
  SQLite store beside the checkpoints, `sqlite:///OUTPUT_DIR/mlflow.db`;
- inside an Azure ML job (or any launcher that created the MLflow run and says so in
  AZUREML_RUN_ID / MLFLOW_RUN_ID) the injected tracking URI, experiment and run are used as they
  are: only `mlflow.start_run()` is called;
- every MLflow call is made by one background thread: opening the store (seconds for a new
  SQLite file) and a slow server never hold up a step; metric values are buffered and handed
  over as one `MlflowClient.log_batch` at most every `flush_seconds`, at `flush()` and at the
  end, where the run waits up to `close_timeout` seconds for MLflow to take them;
- HTTP stores get no retries and a 5 s timeout unless the user's environment says otherwise;
- the first failure (missing package, unwritable store, dead server) logs ONE warning and turns
  MLflow off for the rest of the run; metrics.jsonl and TensorBoard still get every value.

mlflow is imported on first use only: importing this module costs nothing.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import time

logger = logging.getLogger("bert_tf.training")

# Set before the first MLflow call unless the environment already has them: MLflow's defaults
# (7 retries with exponential back-off, 120 s per request) stall a step for minutes when the
# server is down.
HTTP_ENVIRONMENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}

# MLflow's limits per log_batch call and per parameter.
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAMS_PER_BATCH = 100
_MAX_PARAM_LENGTH = 6000


def default_tracking_uri(output_dir: str) -> str:
    """The scripts' default MLflow store: a SQLite file in output_dir (absolute)."""
    return "sqlite:///" + os.path.abspath(os.path.join(output_dir, "mlflow.db"))


def resolve_tracking_uri(flag: str | None, output_dir: str) -> str | None:
    """The value of --tracking_uri -> the store URI, or None for no MLflow.

    None (flag not given): $MLFLOW_TRACKING_URI if set, else `default_tracking_uri`. "none" or
    "" (any case): None. Anything else is the URI itself."""
    if flag is None:
        return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(output_dir)
    if flag.strip().lower() in ("", "none"):
        return None
    return flag


def managed_run() -> bool:
    """True when the environment has created the MLflow run for this process: an Azure ML job
    (AZUREML_RUN_ID) or any launcher that sets MLFLOW_RUN_ID. Then the tracking URI and the
    experiment are the environment's, and the engine only calls `mlflow.start_run()`."""
    return bool(os.environ.get("AZUREML_RUN_ID") or os.environ.get("MLFLOW_RUN_ID"))


def flatten_params(record: dict, prefix: str = "") -> dict[str, str]:
    """A nested dict (run_config.json's content) -> {"a.b": "value"} strings MLflow accepts."""
    out = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_params(value, name + "."))
        else:
            out[name] = str(value)[:_MAX_PARAM_LENGTH]
    return out


class _MlflowRun:
    """One MLflow run: opened on construction, metrics buffered until `send`. Every method may
    raise whatever MLflow raises; TrackingLog turns that into one warning."""

    def __init__(self, tracking_uri: str, experiment_name: str, run_name: str | None,
                 params: dict[str, str]):
        for key, value in HTTP_ENVIRONMENT.items():
            os.environ.setdefault(key, value)
        import mlflow
        from mlflow.entities import Metric, Param

        self._metric_cls = Metric
        self._mlflow = mlflow
        self._started_fluent = False
        if managed_run():
            # The job's run, in the job's store and experiment: set neither.
            if tracking_uri != os.environ.get("MLFLOW_TRACKING_URI", tracking_uri):
                logger.info("MLflow: using the run this job provides (%s); not %s",
                            os.environ.get("MLFLOW_TRACKING_URI"), tracking_uri)
            active = mlflow.active_run()
            if active is None:
                active = mlflow.start_run()
                self._started_fluent = True
            self.run_id = active.info.run_id
            self._client = mlflow.MlflowClient()
        else:
            # A client of its own, no global state: a process may train several models in turn.
            self._client = mlflow.MlflowClient(tracking_uri=tracking_uri)
            experiment = self._client.get_experiment_by_name(experiment_name)
            if experiment is None:
                experiment_id = self._client.create_experiment(
                    experiment_name, artifact_location=_artifact_location(tracking_uri))
            else:
                experiment_id = experiment.experiment_id
            run = self._client.create_run(experiment_id, run_name=run_name)
            self.run_id = run.info.run_id
        self._param_cls = Param
        self.log_params(params)
        self._pending = []

    def log_artifact(self, path: str) -> None:
        self._client.log_artifact(self.run_id, path)

    def log_params(self, params: dict[str, str]) -> None:
        items = [self._param_cls(k, v) for k, v in params.items()]
        for i in range(0, len(items), _MAX_PARAMS_PER_BATCH):
            self._client.log_batch(self.run_id, params=items[i:i + _MAX_PARAMS_PER_BATCH])

    def add(self, step: int, values: dict, prefix: str) -> None:
        stamp = int(time.time() * 1000)
        for name, value in values.items():
            self._pending.append(self._metric_cls(f"{prefix}/{name}", float(value), stamp,
                                                  int(step)))

    def send(self) -> None:
        while self._pending:
            chunk = self._pending[:_MAX_METRICS_PER_BATCH]
            self._client.log_batch(self.run_id, metrics=chunk)
            del self._pending[:len(chunk)]

    def end(self, status: str) -> None:
        if self._started_fluent:
            self._mlflow.end_run(status)
        else:
            self._client.set_terminated(self.run_id, status)


def _artifact_location(tracking_uri: str) -> str | None:
    """For a SQLite store, artifacts beside the database (MLflow's default is ./mlruns under
    whatever the working directory is); elsewhere the server decides."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    database = tracking_uri[len(prefix):]
    return "file://" + os.path.join(os.path.dirname(os.path.abspath(database)), "mlartifacts")


class _MlflowThread:
    """Every MLflow call of one TrackingLog, made in order by one background thread, so opening
    the store (importing mlflow and creating a SQLite database take seconds) and a slow or dead
    server never hold up a training step. The first exception calls `give_up` once (from the
    thread) and later operations are dropped."""

    def __init__(self, give_up, *run_args):
        import importlib.util
        import queue
        import threading

        # mlflow imports pyarrow; scikit-learn reads sys.modules["pyarrow"].Table on every
        # metric call, so a pyarrow half-imported by this thread broke a dev evaluation in CI.
        # Imported here, in the caller's thread, it is whole before the thread starts
        # (bert_tf/metrics.py also waits for an import under way).
        if importlib.util.find_spec("pyarrow") is not None:
            import pyarrow  # noqa: F401

        self._ops = queue.Queue()
        self._give_up = give_up
        self.failed = False
        self.opened = threading.Event()
        self.run_id = None
        self._thread = threading.Thread(target=self._work, args=run_args, daemon=True,
                                        name="bert_tf-mlflow")
        self._thread.start()

    def put(self, op: str, value=None) -> None:
        if not self.failed:
            self._ops.put((op, value))

    def _work(self, *run_args) -> None:
        run = None
        try:
            run = _MlflowRun(*run_args)
            self.run_id = run.run_id
        except Exception as e:  # noqa: BLE001 (whatever MLflow or a missing package raises)
            self._fail(e)
        self.opened.set()
        while True:
            op, value = self._ops.get()
            try:
                if not self.failed:
                    if op == "metrics":
                        for step, values, prefix in value:
                            run.add(step, values, prefix)
                        run.send()
                    elif op == "params":
                        run.log_params(value)
                    elif op == "artifact":
                        run.log_artifact(value)
                    elif op == "end":
                        run.send()
                        run.end(value)
            except Exception as e:  # noqa: BLE001
                self._fail(e)
            if op == "sync":
                value.set()
            if op == "end":
                return

    def _fail(self, error: Exception) -> None:
        self.failed = True
        self._give_up(error)

    def sync(self, timeout: float | None = None) -> bool:
        """Wait until every operation put so far is done; False if `timeout` s passed first."""
        import threading

        done = threading.Event()
        self._ops.put(("sync", done))
        return done.wait(timeout)

    def end(self, status: str, timeout: float) -> bool:
        self._ops.put(("end", status))
        self._thread.join(timeout)
        return not self._thread.is_alive()


class TrackingLog:
    """metrics.jsonl, TensorBoard scalars and (optionally) an MLflow run, written by the chief.

    Args:
        output_dir: where metrics.jsonl and tensorboard/ go (created if missing).
        enabled: False on every worker but the chief: then nothing is written anywhere.
        tracking_uri: MLflow store (e.g. `default_tracking_uri(output_dir)`, an http(s) server);
            None for no MLflow. Ignored inside a managed run (see `managed_run`), where the
            environment's store is used.
        experiment_name: MLflow experiment, created if missing (ignored in a managed run).
        run_name: MLflow run name (None: MLflow picks one).
        params: MLflow parameters, {name: str} (see `flatten_params`).
        flush_seconds: longest time metric values wait before going to MLflow, in seconds.
        close_timeout: longest wait in seconds, at the end, for MLflow to take the last values.

    MLflow calls run in a background thread, in order; writing never waits for them. Use as a
    context manager, or call `close`: the MLflow run ends FINISHED, or FAILED (KILLED on
    KeyboardInterrupt) when the block raises. No method raises because of MLflow.
    """

    def __init__(self, output_dir: str, enabled: bool, tracking_uri: str | None = None,
                 experiment_name: str = "bert_tf", run_name: str | None = None,
                 params: dict[str, str] | None = None, flush_seconds: float = 30.0,
                 close_timeout: float = 120.0):
        self.enabled = enabled
        self.flush_seconds = flush_seconds
        self.close_timeout = close_timeout
        self._mlflow = None
        self._pending = []
        if not enabled:
            return
        import tensorflow as tf

        os.makedirs(output_dir, exist_ok=True)
        self.path = os.path.join(output_dir, "metrics.jsonl")
        self.writer = tf.summary.create_file_writer(os.path.join(output_dir, "tensorboard"))
        self._tracking_uri = (os.environ.get("MLFLOW_TRACKING_URI", tracking_uri)
                              if managed_run() else tracking_uri)
        self._last_send = time.monotonic()
        if tracking_uri is not None:
            self._mlflow = _MlflowThread(self._give_up, tracking_uri, experiment_name, run_name,
                                         params or {})

    @property
    def mlflow_run_id(self) -> str | None:
        """The MLflow run this log writes to (waiting for it to be opened), or None (MLflow
        off or given up)."""
        if self._mlflow is None:
            return None
        self._mlflow.opened.wait()
        return self._mlflow.run_id

    def write(self, step: int, values: dict, prefix: str = "train") -> None:
        """Record `values` ({name: number}) at optimizer step `step` under split `prefix`.

        metrics.jsonl gets every value; TensorBoard and MLflow the finite numbers (booleans and
        strings are left out). MLflow receives them within `flush_seconds`."""
        if not self.enabled:
            return
        import tensorflow as tf

        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": int(step), "split": prefix, **values}) + "\n")
        scalars = {k: float(v) for k, v in values.items() if isinstance(v, numbers.Real)
                   and not isinstance(v, bool) and math.isfinite(v)}
        with self.writer.as_default():
            for k, v in scalars.items():
                tf.summary.scalar(f"{prefix}/{k}", v, step=int(step))
        self.writer.flush()
        if self._mlflow is not None:
            self._pending.append((int(step), scalars, prefix))
            if time.monotonic() - self._last_send >= self.flush_seconds:
                self.flush()

    def log_params(self, params: dict) -> None:
        """Add MLflow parameters ({name: value}, nested dicts as a.b, values turned to
        strings): values only known once training starts (steps, the XLA choice, workers). A
        name already logged must keep its value (MLflow refuses a change): use new names."""
        if self.enabled and self._mlflow is not None:
            self._mlflow.put("params", flatten_params(params))

    def log_artifact(self, path: str) -> None:
        """Copy the file `path` (e.g. run_config.json) into the MLflow run's artifacts."""
        if self.enabled and self._mlflow is not None:
            self._mlflow.put("artifact", path)

    def flush(self, wait: bool = False) -> None:
        """Hand the buffered values to MLflow now (TensorBoard is flushed on every write);
        wait=True also waits until MLflow has them."""
        if not (self.enabled and self._mlflow is not None):
            return
        if self._pending:
            self._mlflow.put("metrics", self._pending)
            self._pending = []
        self._last_send = time.monotonic()
        if wait:
            self._mlflow.sync()

    def close(self, status: str = "FINISHED") -> None:
        """Flush and end the MLflow run with `status` (FINISHED, FAILED or KILLED), waiting up
        to close_timeout seconds for MLflow. Idempotent."""
        if not self.enabled:
            return
        self.writer.flush()
        if self._mlflow is not None:
            self.flush()
            if not self._mlflow.end(status, self.close_timeout):
                logger.warning("MLflow did not take the last values within %.0f s (%s): the "
                               "run there may be incomplete; metrics.jsonl and TensorBoard have "
                               "every value", self.close_timeout, self._tracking_uri)
            self._mlflow = None

    def __enter__(self) -> TrackingLog:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close("FINISHED")
        else:
            from bert_tf.training.preemption import Preempted

            stopped = issubclass(exc_type, (KeyboardInterrupt, Preempted))
            self.close("KILLED" if stopped else "FAILED")

    def _give_up(self, error: Exception) -> None:
        if isinstance(error, ImportError):
            reason = (f"{error} (install mlflow-skinny, sqlalchemy and alembic, or pass "
                      "--tracking_uri=none)")
        else:
            text = " ".join(str(error).split())
            reason = f"{type(error).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"
        logger.warning("MLflow tracking to %s failed and is off for the rest of this run; "
                       "metrics.jsonl and TensorBoard still get every value. %s",
                       self._tracking_uri, reason)
