"""python -m bert_tf.glue: the GLUE dev table of a checkpoint (grid sweeps per task through the
sweep runner), its cells and average in the paper's form, and GLUE's submission zip."""

import csv
import io
import os
import signal
import subprocess
import sys
import time
import zipfile

import pytest

from tests.conftest import REPO, shared
from tests.test_run_classifier import tiny_dir

QUICK = ["--learning_rates=5e-5", "--seeds=2", "--max_train_examples=32",
         "--train_batch_size=16", "--num_train_epochs=1", "--", "--max_seq_length=64"]
TEST_ROWS = {"MRPC.tsv": 1725, "RTE.tsv": 3000}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return tiny_dir(str(tmp_path_factory.mktemp("tiny_bert")))


def glue_data(root, tasks):
    root.mkdir(exist_ok=True)
    for task in tasks:
        (root / task).symlink_to(shared("glue", task))
    return root


def glue(args, wait=True):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-m", "bert_tf.glue", *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=1800,
                          check=False)


def check_outputs(out, tasks):
    table = (out / "glue_table.md").read_text()
    for task in tasks:
        assert f"| {task} |" in table
    assert "(median of 2" in table and "n/a (" in table  # not all 9 numbers: no average
    rows = list(csv.DictReader(io.StringIO((out / "glue_table.csv").read_text())))
    assert {r["task"] for r in rows} == set(tasks)
    assert all(r["statistic"] == "median" and r["seeds"] == "2" for r in rows)
    assert (out / "glue_table.png").stat().st_size > 5000
    with zipfile.ZipFile(out / "glue_submission.zip") as z:
        assert sorted(z.namelist()) == sorted(f"{t}.tsv" for t in tasks)
        for name in z.namelist():  # GLUE's names, header and one row per test example
            lines = z.read(name).decode().splitlines()
            assert lines[0] == "index\tprediction" and len(lines) == TEST_ROWS[name] + 1
            assert lines[1].split("\t")[0] == "0" and lines[1].split("\t")[1] in {
                "0", "1", "entailment", "not_entailment"}


def test_one_task_table_and_submission(tiny_bert, tmp_path, monkeypatch, capsys):
    """The local table of one task; then `azure/submit.py download --glue` over the same runs,
    read from their MLflow store as an Azure sweep's trials are (last eval/ metrics, GLUE's
    files as artifacts), gives the same table and the same submission zip."""
    data = glue_data(tmp_path / "glue", ["MRPC"])
    out = tmp_path / "out"
    proc = glue([f"--init_checkpoint={tiny_bert}", f"--output_dir={out}",
                 f"--data_dir={data}", *QUICK])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    check_outputs(out, ["MRPC"])
    assert "the submission lacks CoLA.tsv" in proc.stdout
    spec = (out / "specs" / "glue_MRPC.yaml").read_text()
    assert "type: grid" in spec and "do_predict: true" in spec

    azure = _azure_download_of(out, tmp_path, monkeypatch)
    printed = capsys.readouterr().out
    assert "MRPC: sweep glue_MRPC_sweep (Completed), 2 COMPLETE" in printed
    check_outputs(azure, ["MRPC"])

    def rows(folder):
        table = csv.DictReader(io.StringIO((folder / "glue_table.csv").read_text()))
        return [{k: v for k, v in r.items() if k != "chosen_run"} for r in table]

    assert rows(azure) == rows(out)
    assert (azure / "glue_table.md").read_text().split("| task |")[0] == \
        (out / "glue_table.md").read_text().split("| task |")[0]
    with zipfile.ZipFile(out / "glue_submission.zip") as a, \
            zipfile.ZipFile(azure / "glue_submission.zip") as b:
        assert a.read("MRPC.tsv") == b.read("MRPC.tsv")


@pytest.mark.slow
def test_kill_9_mid_grid_and_rerun_completes_the_table(tiny_bert, tmp_path):
    """Two tasks x 2 seeds x 2 learning rates; the whole process group is killed with SIGKILL
    once a run has finished; the same command then runs only what is left."""
    data = glue_data(tmp_path / "glue", ["MRPC", "RTE"])
    out = tmp_path / "out"
    args = [f"--init_checkpoint={tiny_bert}", f"--output_dir={out}", f"--data_dir={data}",
            "--learning_rates=5e-5,1e-4", *QUICK[1:]]
    first = glue(args, wait=False)
    deadline = time.time() + 600
    while not list((out / "MRPC" / "trials").glob("trial_001/log.txt")):
        assert first.poll() is None and time.time() < deadline, first.stdout.read()
        time.sleep(1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    second = glue(args)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-2000:]
    assert "interrupted to rerun" in second.stdout
    check_outputs(out, ["MRPC", "RTE"])
    detail = (out / "glue_table.md").read_text()
    assert detail.count("| 2 |") == 2  # each task's chosen learning rate has both seeds


def test_the_table_in_the_papers_form_and_its_average():
    """Cells from made-up results for every task: the paper's columns, its 9 numbers
    averaged (WNLI out), the statistic named in each cell."""
    from bert_tf.sweeps.glue_table import AVERAGED, TASKS, Cell, table

    cells = {}
    for i, (task, (_, metrics)) in enumerate(TASKS.items()):
        values = {key: 0.5 + 0.01 * i + 0.001 * j for j, (_, key) in enumerate(metrics)}
        runs = [(f"/runs/{task}/{s}", values) for s in range(5 if task == "RTE" else 1)]
        cells[task] = Cell(task, 2e-5, runs, values, (0.1, 0.9), runs[0][0])
    markdown, rows, average = table(cells, "median")
    want = sum(cells[t].values[k] for t, k in AVERAGED) / 9
    assert average == pytest.approx(want) and f"| {100 * want:.1f} |" in markdown
    assert markdown.splitlines()[0].startswith("| | CoLA | SST-2 | MRPC | STS-B | QQP | "
                                               "MNLI-m/mm | QNLI | RTE | WNLI | Average |")
    assert "(median of 5, 10.0-90.0)" in markdown and "(one run)" in markdown
    assert {r["task"] for r in rows} == set(TASKS) and len(rows) == 13


@pytest.mark.parametrize("args,message", [
    (["--tasks=NOPE"], "--tasks: unknown task 'NOPE'"),
    (["--tasks=MRPC", "--", "--seed=3"], "bert_tf.glue sets --seed itself"),
    (["--data_dir={tmp}"], "no GLUE task folder with a train.tsv"),
    (["--tasks=MRPC", "--seeds=0"], "--seeds and --trials_at_once must be at least 1"),
    (["--tasks=MRPC", "--", "--no_such_flag=1"], "run_classifier.py has no flag --no_such_flag"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, message):
    proc = glue(["--init_checkpoint=bert-base-uncased", f"--output_dir={tmp_path / 'o'}",
                 *[a.format(tmp=tmp_path) for a in args]])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr


def test_grid_sampling_in_a_search_space_file(tmp_path):
    """`sampling: {type: grid}`: choice parameters only; max_total_trials defaults to the grid
    and may not exceed it; the study's sampler walks the grid."""
    from bert_tf.sweeps import load
    from bert_tf.sweeps.spec import SweepError
    from bert_tf.sweeps.study import open_study

    base = ("script: run_classifier.py\nprimary_metric: eval/eval_accuracy\ngoal: maximize\n"
            "sampling: {type: grid}\nflags: {task: MRPC, do_train: true, do_eval: true}\n")
    path = tmp_path / "grid.yaml"
    path.write_text(base + "search_space:\n  learning_rate: {type: choice, values: [1.0e-5, 2.0e-5]}"
                    "\n  seed: {type: choice, values: [1, 2, 3]}\n")
    spec = load(str(path))
    assert spec.sampling == "grid" and spec.max_total_trials == spec.grid_size == 6
    study = open_study(spec, [], str(tmp_path / "study"))
    seen = set()
    for _ in range(6):
        trial = study.ask()
        point = (trial.suggest_categorical("learning_rate", [1e-5, 2e-5]),
                 trial.suggest_categorical("seed", [1, 2, 3]))
        study.tell(trial, 0.5)
        seen.add(point)
    assert len(seen) == 6
    path.write_text(base + "search_space:\n  learning_rate: {type: loguniform, min_value: 1e-5, "
                    "max_value: 1e-4}\n")
    with pytest.raises(SweepError, match="grid sampling takes choice parameters only"):
        load(str(path))
    path.write_text(base + "limits: {max_total_trials: 9}\nsearch_space:\n  seed: "
                    "{type: choice, values: [1, 2]}\n")
    with pytest.raises(SweepError, match="the grid has 2 points"):
        load(str(path))


def _azure_download_of(local_out, tmp_path, monkeypatch, task="MRPC"):
    """`azure/submit.py download --glue` over the local table's own runs: its MLflow store made
    to look like an Azure sweep's (each trial's run a child of the task's sweep job), read
    through a fake workspace. Returns the folder the download wrote."""
    import importlib.util
    import json
    import shutil
    import types

    from mlflow.tracking import MlflowClient

    from tests.test_azure_submit import fake_mlflow_workspace

    uri = f"sqlite:///{local_out / task / 'mlflow.db'}"
    store = MlflowClient(tracking_uri=uri)
    job_name = f"glue_{task}_sweep"
    for experiment in store.search_experiments():
        for run in store.search_runs([experiment.experiment_id]):
            store.set_tag(run.info.run_id, "mlflow.parentRunId", job_name)
    folder = tmp_path / "azure"
    shutil.copytree(local_out / "specs", folder / "specs")
    (folder / "glue_jobs.json").write_text(json.dumps(
        {"init_checkpoint": "x", "tasks": {task: job_name}}))
    fake_mlflow_workspace(monkeypatch, types.SimpleNamespace(
        name=job_name, type="sweep", experiment_name=None, status="Completed"), uri)
    spec = importlib.util.spec_from_file_location("submit_for_glue", REPO / "azure" / "submit.py")
    submit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(submit)
    assert submit.main(["download", "--glue", str(folder)]) == 0
    return folder
