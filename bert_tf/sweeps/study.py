"""The Optuna study of a sweep folder: storage, the lock that keeps one sweep process per
folder, the check that a folder holds this sweep, resuming after a crash (interrupted trials run
again), and the study's trials as `TrialRecord`s."""

from __future__ import annotations

import hashlib
import json
import os

from bert_tf.sweeps.bandit import make_pruner
from bert_tf.sweeps.processes import kill_leftover
from bert_tf.sweeps.report import TrialRecord, sweep_name
from bert_tf.sweeps.spec import SweepError, SweepSpec
from bert_tf.sweeps.tracking import read_curves


def spec_digest(path: str, extra: list[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    h.update(json.dumps(extra).encode())
    return h.hexdigest()


def suggest_params(trial, spec: SweepSpec) -> dict:
    """The trial's values of spec.space, drawn by the study's sampler (or the fixed values of
    a retried trial): loguniform -> suggest_float(log=True) on the rates themselves."""
    out = {}
    for name, p in spec.space.items():
        if p.type == "loguniform":
            out[name] = trial.suggest_float(name, p.low, p.high, log=True)
        elif p.type == "uniform":
            out[name] = trial.suggest_float(name, p.low, p.high)
        else:
            out[name] = trial.suggest_categorical(name, list(p.values))
    return out


def counted_trials(study) -> list:
    """The finished trials that count toward max_total_trials: completed, pruned, and failed
    ones except those the sweep itself interrupted (killed, stopped; they are run again)."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(
        TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
        if not (t.state == TrialState.FAIL and "interrupted" in t.user_attrs)]


def storage_url(output_dir: str) -> str:
    return "sqlite:///" + os.path.join(os.path.abspath(output_dir), "optuna.db")


def optuna_storage(output_dir: str):
    import optuna

    # Several threads write to one SQLite file: wait for the lock rather than fail.
    return optuna.storages.RDBStorage(storage_url(output_dir),
                                      engine_kwargs={"connect_args": {"timeout": 60}})


def check_output_dir(spec: SweepSpec, extra: list[str], output_dir: str) -> None:
    """Refuse an output_dir that holds another sweep (another file, an edited file, other fixed
    flags after `--`) or is not a folder. Reads only; raises SweepError."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise SweepError(f"--output_dir={output_dir} is a file: pass a folder")
    db = os.path.join(output_dir, "optuna.db")
    if not os.path.exists(db):
        return
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = sweep_name(spec)
    names = optuna.study.get_all_study_names(optuna_storage(output_dir))
    if name not in names:
        raise SweepError(f"--output_dir={output_dir} holds the sweep {', '.join(names) or '?'}, "
                         f"not {name} ({spec.path}): rerun that sweep's command to resume it, "
                         "or pass another --output_dir")
    attrs = optuna.load_study(study_name=name, storage=optuna_storage(output_dir)).user_attrs
    if attrs.get("sweep_sha256") != spec_digest(spec.path, extra):
        before = attrs.get("fixed_flags_after_dashdash", [])
        what = (f"fixed flags after -- ({' '.join(before) or 'none'})" if before != extra
                else "search-space file")
        raise SweepError(f"--output_dir={output_dir} holds a sweep made from another "
                         f"{what}: {attrs.get('sweep_file', '?')} as it was then; {spec.path} "
                         "differs. Resume with the same file and flags, or pass another "
                         "--output_dir")


def lock_output_dir(output_dir: str):
    """An exclusive lock on DIR/tune.lock for this process's lifetime (the kernel drops it when
    the process dies, however it dies): while held, no trial of the study runs elsewhere."""
    import fcntl

    os.makedirs(output_dir, exist_ok=True)
    f = open(os.path.join(output_dir, "tune.lock"), "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise SweepError(f"--output_dir={output_dir}: another bert_tf.tune (pid {pid}) is "
                         "running this sweep; wait for it or stop it first") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def _grid_sampler_class():
    import optuna

    class GridSampler(optuna.samplers.GridSampler):
        """Optuna's GridSampler without its stop at the last point: Study.stop works only
        inside study.optimize, and the runner counts trials itself (max_total_trials)."""

        def after_trial(self, study, trial, state, values):
            pass

    return GridSampler


def _GridSampler(*args, **kwargs):
    return _grid_sampler_class()(*args, **kwargs)


def open_study(spec: SweepSpec, extra: list[str], output_dir: str):
    """Create or load the Optuna study in DIR/optuna.db (name: the file's stem; direction: the
    goal; the file's hash, path and `--` flags as user attrs), with a RandomSampler seeded from
    spec.seed + the number of trials already in the study (a resumed sweep draws new values),
    or for grid sampling a GridSampler (a resumed sweep runs the points not yet run), and the
    file's pruner. The caller has checked the folder (`check_output_dir`)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.makedirs(output_dir, exist_ok=True)
    storage = optuna_storage(output_dir)
    study = optuna.create_study(storage=storage, study_name=sweep_name(spec),
                                direction=spec.goal, load_if_exists=True,
                                pruner=make_pruner(spec))
    if "sweep_sha256" not in study.user_attrs:
        study.set_user_attr("sweep_sha256", spec_digest(spec.path, extra))
        study.set_user_attr("sweep_file", os.path.abspath(spec.path))
        study.set_user_attr("fixed_flags_after_dashdash", list(extra))
    if spec.sampling == "grid":  # the points not yet tried, in a seeded order
        study.sampler = _GridSampler(
            {name: list(p.values) for name, p in spec.space.items()}, seed=spec.seed)
    else:
        study.sampler = optuna.samplers.RandomSampler(seed=spec.seed + len(study.trials))
    return study


def recover(study, mlflow_runs=None) -> list[int]:
    """After a sweep process died: mark its RUNNING trials failed and interrupted (stopping a
    trial process still alive), then enqueue every interrupted trial that has no retry yet with
    the same parameters (user attr retry_of). Returns the numbers of the trials retried. Call
    only while holding the folder's lock (no other sweep process is running)."""
    import optuna
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        kill_leftover(t.user_attrs.get("pid"), t.user_attrs.get("output_dir"))
        live = optuna.trial.Trial(study, t._trial_id)
        live.set_user_attr("interrupted", "the sweep process ended while it ran")
        study.tell(t.number, state=TrialState.FAIL)
        if mlflow_runs is not None:
            mlflow_runs.finish(t.user_attrs.get("mlflow_run_id"), "FAIL", None, True,
                               t.user_attrs.get("output_dir"))
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    out = []
    for t in trials:
        if t.state == TrialState.FAIL and "interrupted" in t.user_attrs and \
                t.number not in retried:
            study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})
            out.append(t.number)
    return out


def records_from_study(study, spec: SweepSpec) -> list[TrialRecord]:
    """The sweep's trials as TrialRecords: every trial of the study except queued ones and
    interrupted ones that have been run again (the retry stands for them; Optuna keeps both).
    The curves come from each trial's metrics.jsonl (user attr output_dir)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    out = []
    for t in trials:
        if t.state == TrialState.WAITING or ("interrupted" in t.user_attrs and
                                             t.number in retried):
            continue
        iv = t.intermediate_values
        value = t.value if t.state == TrialState.COMPLETE else (iv[max(iv)] if iv else None)
        loss, metric = read_curves(os.path.join(t.user_attrs.get("output_dir", ""),
                                                "metrics.jsonl"), spec)
        params = {name: t.params[name] for name in spec.space if name in t.params}
        out.append(TrialRecord(t.number, params, t.state.name, value, loss, metric))
    return out
