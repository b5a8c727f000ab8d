"""A finished Azure ML sweep's trials, read back from the workspace's MLflow store, as the
`TrialRecord`s of a local sweep's report (the same plots and tables)."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

from bert_tf.errors import UsageError
from bert_tf.azure_ml.jobs import write_file


# MLflow run status -> a sweep trial state (bert_tf.sweeps.report.STATES). Azure ML ends an
# early-terminated trial as canceled, which its MLflow store reports as KILLED.
STATES = {"FINISHED": "COMPLETE", "COMPLETED": "COMPLETE", "KILLED": "PRUNED",
          "CANCELED": "PRUNED", "CANCELLED": "PRUNED", "FAILED": "FAIL", "RUNNING": "RUNNING",
          "SCHEDULED": "RUNNING"}


def _curve(client, run_id: str, key: str) -> list:
    """[(step, value)] of one metric, by step; a step logged twice keeps its latest value."""
    by_step = {}
    for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp)):
        by_step[int(m.step)] = float(m.value)
    return sorted(by_step.items())


def _param_value(param, raw: str):
    if param.type == "choice":
        for value in param.values:
            if str(value) == raw:
                return value
        for value in param.values:
            with contextlib.suppress(TypeError, ValueError):
                if float(value) == float(raw):
                    return value
        return raw
    try:
        return float(raw)
    except (TypeError, ValueError):
        return raw


def read_trials(tracking_uri: str, parent_run_id: str, spec, experiment_name: str | None = None
                ) -> list[dict]:
    """The trials of a sweep from an MLflow store: every run tagged mlflow.parentRunId =
    parent_run_id (how Azure ML's MLflow marks a sweep's children) -> dicts with the fields of
    bert_tf.sweeps.report.TrialRecord, by trial number: number (the `_N` suffix of Azure's
    trial names, else the start order), params (the search-space flags, typed as in the file),
    state (COMPLETE, PRUNED for early-terminated, FAIL, RUNNING), value (the last reported primary
    metric; None for a failed trial), loss_curve [(step, train/loss)], metric_curve [(step,
    primary metric)]."""
    from mlflow.tracking import MlflowClient

    if not re.fullmatch(r"[\w.-]+", parent_run_id):
        raise UsageError(f"job name {parent_run_id!r}: letters, digits, '_', '-' and '.' only")
    client = MlflowClient(tracking_uri=tracking_uri)
    if experiment_name:
        experiment = client.get_experiment_by_name(experiment_name)
        experiment_ids = [experiment.experiment_id] if experiment else []
    else:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    runs, token = [], None
    while experiment_ids:
        page = client.search_runs(experiment_ids,
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                  max_results=500, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    numbered = []
    for run in runs:
        number = None
        for name in (run.info.run_id, run.info.run_name or ""):
            match = re.search(r"_(\d+)$", name)
            if match:
                number = int(match.group(1))
                break
        numbered.append((number, run.info.start_time or 0, run))
    next_number = max([n for n, _, _ in numbered if n is not None], default=-1) + 1
    trials = []
    for number, _, run in sorted(numbered, key=lambda t: (t[0] is None, t[0] or 0, t[1])):
        if number is None:
            number, next_number = next_number, next_number + 1
        state = STATES.get(str(run.info.status).upper(), "RUNNING")
        metric_curve = _curve(client, run.info.run_id, spec.primary_metric)
        params = {name: _param_value(param, run.data.params[name])
                  for name, param in spec.space.items() if name in run.data.params}
        trials.append(dict(
            number=number, params=params, state=state,
            value=metric_curve[-1][1] if metric_curve and state != "FAIL" else None,
            loss_curve=_curve(client, run.info.run_id, "train/loss"),
            metric_curve=metric_curve, run_id=run.info.run_id,
            run_name=run.info.run_name or run.info.run_id, metrics=dict(run.data.metrics)))
    return trials


def write_trials_report(spec, trials: list[dict], output_dir: str) -> dict:
    """trials.json (the TrialRecords as JSON), then bert_tf.sweeps.report.write_report's plots
    and tables (loss_curves.png, metric_vs_lr.png, trials.md/csv). Returns write_report's
    summary."""
    os.makedirs(output_dir, exist_ok=True)
    import dataclasses

    from bert_tf.sweeps.report import TrialRecord, write_report

    fields = {f.name for f in dataclasses.fields(TrialRecord)}
    records = [TrialRecord(**{k: v for k, v in t.items() if k in fields}) for t in trials]
    write_file(Path(output_dir) / "trials.json",
               json.dumps([dataclasses.asdict(r) for r in records], indent=1) + "\n")
    return write_report(spec, records, output_dir)
