"""The tracking log: metrics.jsonl, TensorBoard and MLflow (a real SQLite store) from the one
training loop; a store that cannot be reached costs one warning, never the run; inside an Azure ML
job the job's store is used as it is."""

import json
import logging
import time

import keras
import numpy as np
import pytest

from tests.conftest import random_feature_table, tiny_config

from bert_tf.data import records  # noqa: E402
from bert_tf.modeling import BertClassifier  # noqa: E402
from bert_tf.training import tracking  # noqa: E402
from bert_tf.training.distributed import Distributed  # noqa: E402
from bert_tf.training.loop import TrainSettings, train  # noqa: E402
from bert_tf.training.tasks import classification_loss  # noqa: E402

STEPS = 6
LOGGED = ("loss", "learning_rate", "examples_per_second")
ENVIRONMENT = ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID",
               "MLFLOW_EXPERIMENT_NAME", "AZUREML_RUN_ID", *tracking.HTTP_ENVIRONMENT)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No MLflow or Azure ML variables from outside; whatever the engine sets is undone."""
    for name in ENVIRONMENT:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def _table(n=48, seed=0, vocab=99, max_len=24):
    return random_feature_table(n, seed, vocab, max_len, table_len=32)


def _train(output_dir, tracking_uri=None, **overrides):
    """A tiny 6-step run logging every step. Returns (summary, seconds, metrics.jsonl rows)."""
    keras.utils.set_random_seed(0)
    model = BertClassifier(tiny_config(), 2)
    settings = TrainSettings(output_dir=str(output_dir), train_batch_size=8,
                             num_train_steps=STEPS, learning_rate=1e-3, num_warmup_steps=1,
                             log_steps=1, tracking_uri=tracking_uri, **overrides)
    source = records.table_batches(_table(), 8, settings.seed, max_seq_length=32)
    start = time.monotonic()
    summary = train(model, classification_loss, source, settings, Distributed(False),
                    progress=False)
    seconds = time.monotonic() - start
    rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return summary, seconds, rows


def _history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key),
                                              key=lambda m: m.step)]


def test_tracking_uri_flag_and_run_name(tmp_path, monkeypatch):
    from bert_tf.training.run import EngineArgs, run_name

    out = str(tmp_path / "out")
    want = f"sqlite:///{tmp_path}/out/mlflow.db"
    assert tracking.resolve_tracking_uri(None, out) == want
    for off in ("none", "None", "", " "):
        assert tracking.resolve_tracking_uri(off, out) is None
    assert tracking.resolve_tracking_uri("http://server:5000", out) == "http://server:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere.db")
    assert tracking.resolve_tracking_uri(None, out) == "sqlite:////elsewhere.db"
    assert run_name(EngineArgs(learning_rate=2e-5, train_batch_size=32, seed=3), "MRPC") == \
        "MRPC-lr2e-05-bs32-seed3"
    assert not tracking.managed_run()
    monkeypatch.setenv("AZUREML_RUN_ID", "job_1")
    assert tracking.managed_run()


def test_training_metrics_and_params_reach_mlflow_step_for_step(tmp_path):
    from mlflow import MlflowClient

    out = tmp_path / "run"
    uri = tracking.default_tracking_uri(str(out))
    summary, _, rows = _train(out, uri, experiment_name="tiny", run_name="tiny-lr1e-3")
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tiny")
    assert experiment.artifact_location == f"file://{out}/mlartifacts"  # not ./mlruns
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tiny-lr1e-3"
    assert run.info.status == "FINISHED"
    assert float(run.data.params["learning_rate"]) == 1e-3
    assert run.data.params["num_train_steps"] == str(STEPS)
    # What the settings resolved to, for a run that may have said "default".
    assert run.data.params["run.num_train_steps"] == str(STEPS)
    assert run.data.params["run.num_workers"] == "1"
    assert run.data.params["run.use_xla"] == "False"
    for key in LOGGED:
        assert _history(client, run.info.run_id, f"train/{key}") == \
            [(r["step"], pytest.approx(r[key], rel=1e-12)) for r in rows], key
    assert run.data.metrics["train/loss"] == pytest.approx(summary["loss"], rel=1e-12)


def test_metrics_are_sent_in_batches_and_a_failed_block_fails_the_run(tmp_path):
    """Values wait in the buffer until flush_seconds pass, flush() or the end; eval values go
    under eval/; non-finite values reach metrics.jsonl only; an exception ends the run FAILED."""
    from mlflow import MlflowClient

    uri = tracking.default_tracking_uri(str(tmp_path))
    client = MlflowClient(tracking_uri=uri)
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.TrackingLog(str(tmp_path), True, uri, "batches",
                                  params={"learning_rate": "0.001"}) as log:
            run_id = log.mlflow_run_id
            log.write(1, {"loss": 0.5, "grad_norm": float("nan")})
            assert _history(client, run_id, "train/loss") == []  # buffered
            log.flush(wait=True)
            assert _history(client, run_id, "train/loss") == [(1, 0.5)]
            log.write(2, {"loss": 0.25})
            log.write(2, {"eval_accuracy": 0.75, "eval_examples": 408}, "eval")
            raise RuntimeError("boom")
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert _history(client, run_id, "train/loss") == [(1, 0.5), (2, 0.25)]
    assert run.data.metrics["eval/eval_accuracy"] == 0.75
    assert "train/grad_norm" not in run.data.metrics
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and np.isnan(rows[0]["grad_norm"])


@pytest.fixture(scope="module")
def seconds_without_tracking(tmp_path_factory):
    _, seconds, _ = _train(tmp_path_factory.mktemp("off"))
    return seconds


@pytest.mark.parametrize("uri", ["sqlite:////proc/nope/mlflow.db", "http://127.0.0.1:9",
                                 "missing-package"])
def test_unusable_store_costs_one_warning_not_the_run(tmp_path, caplog, monkeypatch, uri,
                                                      seconds_without_tracking):
    if uri == "missing-package":
        monkeypatch.setitem(__import__("sys").modules, "mlflow", None)  # import mlflow fails
        uri = "sqlite:///" + str(tmp_path / "mlflow.db")
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        summary, seconds, rows = _train(out, uri)
    assert summary["step"] == STEPS
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "off for the rest of this run" in warnings[0].getMessage()
    assert seconds < seconds_without_tracking + 10, (seconds, seconds_without_tracking)


def test_azure_ml_job_store_is_used_as_it_is(tmp_path, monkeypatch):
    """Inside a job the injected MLFLOW_TRACKING_URI (and experiment) stand: the engine's own
    URI and experiment name are not applied; the run is ended FINISHED."""
    import mlflow
    from mlflow import MlflowClient

    job_store = "sqlite:///" + str(tmp_path / "job.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", job_store)
    monkeypatch.setenv("AZUREML_RUN_ID", "bert_tf_job_1")
    out = tmp_path / "run"
    _, _, rows = _train(out, tracking.default_tracking_uri(str(out)),
                        experiment_name="not-this-one")
    assert not (out / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=job_store)
    assert client.get_experiment_by_name("not-this-one") is None
    (run,) = client.search_runs(["0"])  # the store's default experiment
    assert run.info.status == "FINISHED"
    assert _history(client, run.info.run_id, "train/loss") == \
        [(r["step"], pytest.approx(r["loss"], rel=1e-12)) for r in rows]
    assert mlflow.active_run() is None
