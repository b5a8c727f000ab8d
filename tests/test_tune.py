"""bert_tf.tune: the Bandit pruner on hand-computed cases, the report on hand-made trials, bad
input (one line, exit 2, nothing written), and a real sweep of a tiny BERT on real MRPC that is
killed mid-trial and resumed. The sweep of configs/sweeps/mrpc_tiny.yaml is the slow test."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import REPO, shared

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState, create_trial  # noqa: E402

from bert_tf import sweeps, tune  # noqa: E402
from bert_tf.sweeps import bandit, tracking  # noqa: E402
from bert_tf.sweeps import report as sweep_report  # noqa: E402
from bert_tf.sweeps import study as sweep_study  # noqa: E402
from bert_tf.sweeps import Bandit  # noqa: E402


# -- the Bandit pruner ----------------------------------------------------------------------------

def _study(direction, pruner, finished):
    """An in-memory study holding `finished` [(state, {report: value})] trials."""
    study = optuna.create_study(direction=direction, pruner=pruner)
    for state, reports in finished:
        value = reports[max(reports)] if state != TrialState.FAIL else None
        study.add_trial(create_trial(state=state, value=value, intermediate_values=reports))
    return study


def _verdicts(study, values):
    """A new trial reporting `values` (reports 1, 2, ...): should_prune after each."""
    trial = study.ask()
    out = []
    for n, v in enumerate(values, start=1):
        trial.report(v, step=n)
        out.append(trial.should_prune())
    study.tell(trial, state=TrialState.FAIL)  # out of the way of the next case
    return out


def test_bandit_factor_maximize():
    # best / (1 + 0.1) against each trial's best value so far
    pruner = bandit.BanditPruner(slack_factor=0.1)
    finished = [(TrialState.COMPLETE, {1: 0.60, 2: 0.80, 3: 0.85}),
                (TrialState.PRUNED, {1: 0.70, 2: 0.72}),
                (TrialState.FAIL, {1: 0.99, 2: 0.99, 3: 0.99})]  # failed trials do not count
    study = _study("maximize", pruner, finished)
    # report 1: best 0.70 -> limit 0.6364; report 2: best 0.80 -> 0.7273
    assert _verdicts(study, [0.64, 0.70]) == [False, True]
    assert _verdicts(study, [0.63]) == [True]
    # Report 3: only the first trial got there (0.85 -> limit 0.7727); this trial's best so far
    # is 0.75 (report 2), not its latest 0.80... then 0.78 > 0.7727 would pass on its own:
    assert _verdicts(study, [0.66, 0.75, 0.70]) == [False, False, True]
    assert _verdicts(study, [0.66, 0.78, 0.70]) == [False, False, False]


def test_bandit_amount_minimize_and_factor_minimize():
    amount = _study("minimize", bandit.BanditPruner(slack_amount=0.2),
                    [(TrialState.COMPLETE, {1: 1.0, 2: 0.5})])
    # report 1: best 1.0 -> limit 1.2; report 2: best 0.5 -> 0.7, own best 0.75
    assert _verdicts(amount, [1.15, 0.75]) == [False, True]
    assert _verdicts(amount, [1.25]) == [True]
    assert _verdicts(amount, [1.2, 0.7]) == [False, False]  # on the limit: goes on

    factor = _study("minimize", bandit.BanditPruner(slack_factor=0.5),
                    [(TrialState.COMPLETE, {1: 1.0})])
    assert _verdicts(factor, [1.4]) == [False]   # limit 1.0 * 1.5
    assert _verdicts(factor, [1.6]) == [True]
    assert _verdicts(factor, [float("nan")]) == [True]


def test_bandit_amount_maximize_first_trial_and_nan():
    study = _study("maximize", bandit.BanditPruner(slack_amount=0.05), [])
    assert _verdicts(study, [0.1, 0.1]) == [False, False]  # alone: it is the best
    study = _study("maximize", bandit.BanditPruner(slack_amount=0.05),
                   [(TrialState.COMPLETE, {1: 0.8})])
    assert _verdicts(study, [0.76]) == [False]  # limit 0.75
    assert _verdicts(study, [0.74]) == [True]
    assert _verdicts(study, [float("nan")]) == [True]


def test_bandit_delay_and_interval():
    # Azure ML: "the policy applies every multiple of evaluation_interval that is greater than or
    # equal to delay_evaluation"; delay 200, interval 100 -> first at 200.
    assert [n for n in range(1, 500) if bandit.bandit_applies(Bandit(0.1, None, 100, 200), n)] \
        == [200, 300, 400]
    assert [n for n in range(1, 6) if bandit.bandit_applies(Bandit(0.1, None, 1, 0), n)] \
        == [1, 2, 3, 4, 5]
    assert [n for n in range(1, 10) if bandit.bandit_applies(Bandit(0.1, None, 2, 3), n)] \
        == [4, 6, 8]
    study = _study("maximize", bandit.BanditPruner(slack_factor=0.1, evaluation_interval=2,
                                                 delay_evaluation=3),
                   [(TrialState.COMPLETE, {n: 0.9 for n in range(1, 7)})])
    assert _verdicts(study, [0.1] * 6) == [False, False, False, True, False, True]
    # the reason names the numbers
    prune, reason = bandit.bandit_decision(Bandit(0.1, None, 1, 0), "maximize", 2,
                                         {1: 0.5, 2: 0.6}, [{1: 0.7, 2: 0.88}])
    assert prune and "0.6 < 0.88 / (1 + 0.1) = 0.8" in reason


def test_make_pruner_from_file(tmp_path):
    spec = sweeps.load(str(_yaml(tmp_path, "s.yaml", early="{type: bandit, slack_amount: 0.02, "
                                                       "evaluation_interval: 2, "
                                                       "delay_evaluation: 4}")))
    pruner = bandit.make_pruner(spec)
    assert isinstance(pruner, optuna.pruners.BasePruner)
    assert pruner.bandit == Bandit(None, 0.02, 2, 4)
    spec = sweeps.load(str(_yaml(tmp_path, "n.yaml", early=None)))
    assert isinstance(bandit.make_pruner(spec), optuna.pruners.NopPruner)


# -- the report -----------------------------------------------------------------------------------

def _yaml(tmp_path, name, space="learning_rate: {type: loguniform, min_value: 1.0e-6, "
                                "max_value: 1.0e-3}", goal="maximize",
          metric="eval/eval_accuracy", early="{type: bandit, slack_factor: 0.1}",
          flags=None, limits="{max_total_trials: 4, max_concurrent_trials: 2}"):
    flags = flags or {"task": "MRPC", "do_train": True, "do_eval": True,
                      "eval_every_steps": 2}
    text = (f"script: run_classifier.py\nprimary_metric: {metric}\ngoal: {goal}\n"
            f"search_space:\n  {space}\n" + (f"early_termination: {early}\n" if early else "")
            + f"limits: {limits}\nflags: {json.dumps(flags)}\n")
    path = tmp_path / name
    path.write_text(text)
    return path


def _records():
    curve = [(s, 0.7 - 0.02 * s) for s in range(1, 11)]
    return [
        sweep_report.TrialRecord(0, {"learning_rate": 1e-5}, "COMPLETE", 0.70, curve,
                         [(5, 0.69), (10, 0.70)]),
        sweep_report.TrialRecord(1, {"learning_rate": 1e-4}, "COMPLETE", 0.78,
                         [(s, 0.7 - 0.04 * s) for s in range(1, 11)], [(5, 0.75), (10, 0.78)]),
        sweep_report.TrialRecord(2, {"learning_rate": 1e-3}, "PRUNED", 0.684,
                         [(s, 0.7 + 0.05 * s) for s in range(1, 6)], [(5, 0.684)]),
        sweep_report.TrialRecord(3, {"learning_rate": 5e-6}, "FAIL", None, [], []),
        sweep_report.TrialRecord(4, {"learning_rate": 3e-5}, "RUNNING", 0.72, curve[:7], [(5, 0.72)]),
    ]


def _check_png(path):
    import matplotlib.image as mpimg

    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] >= 400 and image.shape[1] >= 600
    assert image[..., :3].std() > 0.05  # something drawn, not a blank canvas


def test_write_report_files(tmp_path):
    spec = sweeps.load(str(_yaml(tmp_path, "lr_sweep.yaml")))
    paths = sweep_report.write_report(spec, _records(), str(tmp_path / "report"))
    assert set(paths) >= {"loss_plot", "metric_plot", "table"}
    assert paths["loss_plot"].endswith("loss_curves.png")
    assert paths["metric_plot"].endswith("metric_vs_lr.png")
    _check_png(paths["loss_plot"])
    _check_png(paths["metric_plot"])
    table = open(paths["table"]).read()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "trial" not in line]
    assert len(rows) == 5
    for number, state in enumerate(["COMPLETE", "COMPLETE", "PRUNED", "FAIL", "RUNNING"]):
        assert any(f"| {number} | {state} |" in r or f"| **{number}** | **{state}** |" in r
                   for r in rows)
    best = [r for r in rows if "best" in r]
    assert len(best) == 1 and "**1**" in best[0] and "0.7800" in best[0] and "1.00e-04" in best[0]
    assert "Best: trial 1" in table
    with open(paths["csv"]) as f:
        table = list(csv.DictReader(f))
    assert [r["trial"] for r in table] == ["0", "1", "2", "3", "4"]
    assert [r["best"] for r in table] == ["", "best", "", "", ""]
    assert float(table[2]["learning_rate"]) == 1e-3 and table[3]["eval/eval_accuracy"] == ""


def test_write_report_minimize_without_learning_rate(tmp_path):
    spec = sweeps.load(str(_yaml(
        tmp_path, "wp.yaml", goal="minimize", metric="train/loss",
        space="warmup_proportion: {type: uniform, min_value: 0.0, max_value: 0.3}\n"
              "  train_batch_size: {type: choice, values: [16, 32]}")))
    records = [sweep_report.TrialRecord(i, {"warmup_proportion": w, "train_batch_size": 16}, s, v,
                                [(1, 1.0), (2, v or 1.0)], [(2, v)] if v else [])
               for i, (w, s, v) in enumerate([(0.0, "COMPLETE", 0.5), (0.1, "COMPLETE", 0.3),
                                              (0.2, "PRUNED", 0.9)])]
    paths = sweep_report.write_report(spec, records, str(tmp_path))
    _check_png(paths["metric_plot"])
    assert sweep_report.best_trial(spec, records).number == 1
    assert "| **1** | **COMPLETE** | **0.1** | **16** | **0.3000** |" in open(paths["table"]).read()


def test_write_report_needs_no_optuna(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from bert_tf import sweeps, tune  # the command line's module loads neither
        from bert_tf.sweeps import report as sweep_report
        spec = sweeps.load({str(_yaml(tmp_path, 'x.yaml'))!r})
        sweep_report.write_report(spec, [sweep_report.TrialRecord(
            0, {{"learning_rate": 1e-5}}, "COMPLETE", 0.7, [(1, 0.7)], [(1, 0.7)])],
            {str(tmp_path)!r})
        assert "optuna" not in sys.modules and "tensorflow" not in sys.modules
        assert "matplotlib.pyplot" not in sys.modules
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "loss_curves.png").exists()


# -- bad input ------------------------------------------------------------------------------------

def run_tune(args, cwd=REPO, timeout=600, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "bert_tf.tune", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def _one_line_error(proc, *needles):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("bert_tf.tune: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("case", ["missing", "reversed", "nonpositive", "unknown_flag", "metric",
                                  "option", "no_output_dir", "trials_at_once", "launcher_flag"])
def test_bad_input_one_line_exit_2(tmp_path, case):
    out = tmp_path / "out"
    sweep = _yaml(tmp_path, "ok.yaml")
    args, extra, needles = ["--sweep", str(sweep), "--output_dir", str(out)], [], []
    if case == "missing":
        args[1], needles = str(tmp_path / "nope.yaml"), ["nope.yaml: no such file"]
    elif case == "reversed":
        args[1] = str(_yaml(tmp_path, "r.yaml", space="learning_rate: {type: loguniform, "
                                                       "min_value: 1.0e-3, max_value: 1.0e-6}"))
        needles = ["search_space.learning_rate", "reversed"]
    elif case == "nonpositive":
        args[1] = str(_yaml(tmp_path, "l.yaml", space="learning_rate: {type: loguniform, "
                                                       "min_value: -13.8, max_value: -6.9}"))
        needles = ["must be positive", "not their logarithms"]
    elif case == "unknown_flag":
        extra, needles = ["--", "--no_such_flag=3"], ["--no_such_flag"]
    elif case == "metric":
        args[1] = str(_yaml(tmp_path, "m.yaml", metric="eval/eval_mcc"))
        needles = ["never logs 'eval/eval_mcc'", "eval/eval_accuracy"]
    elif case == "option":
        args += ["--trials_at_onc=2"]
        needles = ["--trials_at_onc", "after --"]
    elif case == "no_output_dir":
        args, needles = args[:2], ["--output_dir"]
    elif case == "trials_at_once":
        args, needles = args + ["--trials_at_once=0"], ["--trials_at_once=0"]
    elif case == "launcher_flag":
        extra, needles = ["--", "--tracking_uri=sqlite:///x.db"], ["--tracking_uri"]
    proc = run_tune(args + extra, timeout=120)
    _one_line_error(proc, *needles)
    assert "Traceback" not in proc.stderr and not out.exists()


def test_output_dir_of_another_sweep_refused(tmp_path):
    out = tmp_path / "out"
    first = sweeps.load(str(_yaml(tmp_path, "a.yaml")))
    study = sweep_study.open_study(first, [], str(out))
    assert study.study_name == "a" and study.direction.name == "MAXIMIZE"
    sweep_study.check_output_dir(first, [], str(out))  # the same file and flags: resumes
    (tmp_path / "other").mkdir()
    edited = sweeps.load(str(_yaml(tmp_path / "other", "a.yaml", goal="minimize")))
    with pytest.raises(sweeps.SweepError, match="another search-space file"):
        sweep_study.check_output_dir(edited, [], str(out))
    with pytest.raises(sweeps.SweepError, match=r"another fixed flags after -- \(none\)"):
        sweep_study.check_output_dir(first, ["--seed=3"], str(out))
    proc = run_tune(["--sweep", str(_yaml(tmp_path, "b.yaml")), "--output_dir", str(out)],
                    timeout=120)
    _one_line_error(proc, "holds the sweep a, not b")
    # one sweep process per folder
    lock = sweep_study.lock_output_dir(str(out))
    try:
        with pytest.raises(sweeps.SweepError, match="another bert_tf.tune"):
            sweep_study.lock_output_dir(str(out))
    finally:
        lock.close()


def test_a_trial_whose_script_refuses_its_flags_stops_the_sweep(tmp_path):
    """A checkpoint path with a typo (which only the script can tell; or a relative path read
    from another folder) fails every trial alike: the first such trial stops the sweep with the
    script's own error on one line and exit status 2, and does not count, so a rerun after the
    fix runs it again."""
    shared("glue", "MRPC")
    sweep = _yaml(tmp_path, "broken.yaml", early=None, limits="{max_total_trials: 2}",
                  flags={"task": "MRPC", "data_dir": str(shared("glue", "MRPC")),
                         "init_checkpoint": str(tmp_path / "no_such_model"), "do_train": True,
                         "do_eval": True})
    out = tmp_path / "out"
    proc = run_tune(["--sweep", str(sweep), "--output_dir", str(out)], timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "trial 0 stopped the sweep" in line and "no_such_model" in line
    assert "Traceback" not in proc.stderr
    study = optuna.load_study(study_name="broken", storage=f"sqlite:///{out}/optuna.db")
    assert sweep_study.counted_trials(study) == []
    assert study.trials[0].state == TrialState.FAIL
    assert "interrupted" in study.trials[0].user_attrs


def test_mlflow_run_of_a_stopped_trial_gets_its_unsent_metrics(tmp_path):
    """A pruned trial's script is stopped with values still in its MLflow buffer: the sweep
    sends what metrics.jsonl has and MLflow lacks (once), then ends the run KILLED."""
    lines = []
    runs = tracking.MlflowRuns(tracking.tracking_uri(str(tmp_path)), "exp", "exp",
                            lambda text, err=False: lines.append(text))
    run_id = runs.start(3, {"learning_rate": 1e-5}, str(tmp_path))
    rows = [{"step": 10, "split": "train", "loss": 0.7, "converged": False},
            {"step": 20, "split": "eval", "eval_accuracy": 0.68, "eval_examples": 408},
            {"step": 20, "split": "train", "loss": 0.6},
            {"step": 40, "split": "eval", "eval_accuracy": 0.71, "eval_examples": 408}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows)
                                            + '{"step": 50, "spl')  # a line cut by the kill
    runs.client.log_metric(run_id, "eval/eval_accuracy", 0.68, step=20)  # sent before the stop
    runs.finish(run_id, "PRUNED", 0.71, trial_dir=str(tmp_path))
    run = runs.client.get_run(run_id)
    assert not lines and run.info.status == "KILLED"
    assert run.data.tags["optuna.state"] == "PRUNED" and run.data.tags["optuna.trial_number"] == "3"
    history = runs.client.get_metric_history(run_id, "eval/eval_accuracy")
    assert sorted((m.step, m.value) for m in history) == [(20, 0.68), (40, 0.71)]
    assert [(m.step, m.value) for m in runs.client.get_metric_history(run_id, "train/loss")] \
        == [(10, 0.7), (20, 0.6)]
    assert "train/converged" not in run.data.metrics


# -- a real sweep, killed mid-trial and resumed ---------------------------------------------------

@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from tests.test_run_classifier import tiny_dir

    return tiny_dir(str(tmp_path_factory.mktemp("tiny_bert")))


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow  # 33-43 s: two sweep processes and a kill; the default run stays under 15 min
def test_sweep_kill_and_resume(tmp_path, tiny_bert):
    """4 trials, 2 at a time, of run_classifier.py on a tiny random BERT and 64 real MRPC
    pairs; the sweep is SIGKILLed while trials run, and the same command finishes it."""
    import mlflow

    data = shared("glue", "MRPC")
    sweep = _yaml(tmp_path, "tiny_mrpc.yaml",
                  space="learning_rate: {type: loguniform, min_value: 1.0e-5, max_value: 1.0e-2}",
                  early="{type: bandit, slack_factor: 0.05, evaluation_interval: 1, "
                        "delay_evaluation: 1}",
                  limits="{max_total_trials: 4, max_concurrent_trials: 2, "
                         "trial_timeout_minutes: 5}",
                  flags={"task": "MRPC", "data_dir": str(data), "init_checkpoint": tiny_bert,
                         "do_train": True, "do_eval": True, "max_seq_length": 32,
                         "train_batch_size": 16, "num_train_epochs": 2, "eval_every_steps": 2,
                         "log_steps": 1})
    spec = sweeps.load(str(sweep))
    out = tmp_path / "sweep"
    command = ["--sweep", str(sweep), "--output_dir", str(out), "--",
               "--max_train_examples=64"]
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "bert_tf.tune", *command], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        # Kill the sweep once two trials have finished and the next two are running.
        text = lambda: (tmp_path / "first.log").read_text()  # noqa: E731
        _wait_for(lambda: text().count(" started: ") >= 4, 150, "trials 2 and 3 to start")
        time.sleep(3)
        assert proc.poll() is None, text()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    first = text()
    assert "trial 0 started" in first and "trial 1 started" in first

    study = optuna.load_study(study_name="tiny_mrpc", storage=f"sqlite:///{out}/optuna.db")
    running = [t.number for t in study.trials if t.state == TrialState.RUNNING]
    done = {t.number: open(os.path.join(t.user_attrs["output_dir"], "metrics.jsonl")).read()
            for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    assert running and len(done) == 4 - len(running), first
    # The killed sweep's trial processes go with it: Linux sends them SIGTERM
    # (PR_SET_PDEATHSIG), on which training checkpoints the step it is in and exits (within
    # --preemption_grace_seconds, 25 s).
    def gone(pid):
        try:
            return b"zombie" in open(f"/proc/{pid}/status", "rb").read()
        except FileNotFoundError:
            return True

    for t in study.trials:
        if t.state == TrialState.RUNNING:
            _wait_for(lambda: gone(t.user_attrs["pid"]), 30, f"trial {t.number} to exit")

    proc = run_tune(command, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    second = proc.stdout
    study = optuna.load_study(study_name="tiny_mrpc", storage=f"sqlite:///{out}/optuna.db")
    trials = {t.number: t for t in study.trials}
    # completed trials were not run again: their metrics are untouched and no retry names them
    for number, metrics in done.items():
        assert open(os.path.join(trials[number].user_attrs["output_dir"],
                                 "metrics.jsonl")).read() == metrics
        assert f"trial {number} started" not in second
    # each trial running at the kill failed as interrupted and ran again with its parameters
    retries = {t.user_attrs["retry_of"]: t for t in study.trials if "retry_of" in t.user_attrs}
    assert sorted(retries) == sorted(running)
    for number in running:
        assert trials[number].state == TrialState.FAIL
        assert "interrupted" in trials[number].user_attrs
        retry = retries[number]
        assert retry.params == trials[number].params
        assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
        assert f"(retry of trial {number})" in second
    counted = sweep_study.counted_trials(study)
    assert len(counted) == 4 and len(study.trials) == 4 + len(running)
    values = [t.value for t in counted]
    assert all(v is not None and 0 <= v <= 1 for v in values)
    assert [t.state for t in study.trials].count(TrialState.WAITING) == 0

    # every Optuna trial is an MLflow run of the sweep's experiment, tagged with its number
    mlflow.set_tracking_uri(f"sqlite:///{out}/mlflow.db")
    try:
        runs = mlflow.search_runs(experiment_names=["tiny_mrpc"], output_format="list")
    finally:
        mlflow.set_tracking_uri(None)
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in runs}
    assert sorted(by_number) == sorted(trials) and len(runs) == len(trials)
    for number, t in trials.items():
        run = by_number[number]
        assert run.info.run_id == t.user_attrs["mlflow_run_id"]
        assert run.data.tags["optuna.state"] == t.state.name
        if t.state == TrialState.COMPLETE:
            assert run.info.status == "FINISHED"
            assert run.data.metrics["eval/eval_accuracy"] == pytest.approx(t.value)
            assert float(run.data.params["learning_rate"]) == pytest.approx(
                t.params["learning_rate"])
        elif "interrupted" in t.user_attrs:
            assert run.info.status == "KILLED"
        # what metrics.jsonl holds, MLflow holds too, also for runs stopped before they flushed
        _, metric_curve = tracking.read_curves(os.path.join(t.user_attrs["output_dir"],
                                                        "metrics.jsonl"), spec)
        if metric_curve:
            assert run.data.metrics["eval/eval_accuracy"] == pytest.approx(metric_curve[-1][1])

    # the report: both plots, the table with the 4 trials that count
    for name in ("loss_curves.png", "metric_vs_lr.png"):
        _check_png(out / name)
    table = (out / "trials.md").read_text()
    for t in counted:
        assert f"| {t.number} | " in table or f"| **{t.number}** | " in table
    for number in running:
        assert f"| {number} | " not in table
    assert "best: trial" in second and "trials.md" in second


@pytest.mark.slow
def test_mrpc_tiny_sweep(tmp_path):
    """The showcase: configs/sweeps/mrpc_tiny.yaml as it is (all-MiniLM-L6-v2 on 640 real MRPC
    pairs): >= 6 trials over lr 1e-6..1e-3, at least one pruned, both plots (minutes)."""
    shared("models", "all-MiniLM-L6-v2")
    shared("glue", "MRPC")
    out = tmp_path / "sweep"
    proc = run_tune(["--sweep", "configs/sweeps/mrpc_tiny.yaml", "--output_dir", str(out)],
                    timeout=3600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study = optuna.load_study(study_name="mrpc_tiny", storage=f"sqlite:///{out}/optuna.db")
    trials = sweep_study.counted_trials(study)
    rates = [t.params["learning_rate"] for t in trials]
    assert len(trials) >= 6
    assert min(rates) < 1e-5 and max(rates) > 1e-4
    assert any(t.state == TrialState.PRUNED for t in trials), proc.stdout
    assert all(t.state != TrialState.FAIL for t in trials), proc.stdout
    for name in ("loss_curves.png", "metric_vs_lr.png"):
        _check_png(out / name)
    assert "PRUNED" in proc.stdout and "best: trial" in proc.stdout


def test_the_names_code_used_from_bert_tf_tune_still_import_from_it():
    """bert_tf.tune is the command line since the sweep code became the bert_tf.sweeps package;
    the names outside code imported from it before stay there, as the package's own objects."""
    assert tune.BanditPruner is bandit.BanditPruner
    assert tune.write_report is sweep_report.write_report
    assert tune.TrialRecord is sweep_report.TrialRecord
    assert tune.open_study is sweep_study.open_study and tune.read_curves is tracking.read_curves
    assert {name for name in tune.__all__ if getattr(tune, name, None) is None} == set()
