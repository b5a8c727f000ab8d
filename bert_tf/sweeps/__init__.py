"""Hyperparameter sweeps, local (Optuna) and on Azure ML, from one search-space file.

    spec.py       the search-space file (configs/sweeps/*.yaml): loading and checking it, the
                  script flags it fixes and the metrics the script logs
    bandit.py     early termination: Azure ML's BanditPolicy, and as an Optuna pruner
    processes.py  trial processes: starting, stopping, tying them to the sweep's life
    tracking.py   what a trial logs: metrics.jsonl curves, one MLflow run per trial
    study.py      the Optuna study of a sweep folder: storage, lock, resume after a crash
    runner.py     the trial runner (worker threads) and `run_sweep`
    report.py     plots and tables of any sweep's trials (local, Azure ML downloads)

`python -m bert_tf.tune` is the command line. The search-space names are re-exported here
(`from bert_tf.sweeps import load, SweepSpec, SweepError, ...`); the other modules are imported
by name, so that reading a file (azure/submit.py) loads neither Optuna nor matplotlib.
"""

from bert_tf.sweeps.spec import (GOALS, PARAM_TYPES, Bandit, Param, SweepError, SweepSpec,
                                 check_script_args, load, logged_metrics)

__all__ = ["GOALS", "PARAM_TYPES", "Bandit", "Param", "SweepError", "SweepSpec",
           "check_script_args", "load", "logged_metrics"]
