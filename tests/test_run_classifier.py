"""run_classifier.py / run_ner.py end to end on a tiny BERT with the real uncased vocabulary and
the real GLUE / CoNLL files: every task path, bad input, kill -9 and resume, Horovod ranks."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import REPO, shared

SCRIPT = str(REPO / "run_classifier.py")


def tiny_dir(root, dropout=0.1):
    """A random tiny BERT in Google's layout next to the real 30522-entry uncased vocab."""
    from bert_tf import BertConfig, checkpoints
    from bert_tf.modeling import BertPretrainer

    import keras
    keras.utils.set_random_seed(7)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=128,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    os.makedirs(root, exist_ok=True)
    checkpoints.save_google(BertPretrainer(config), os.path.join(root, "bert_model.ckpt"))
    shutil.copy(shared("vocab", "uncased_vocab.txt"), os.path.join(root, "vocab.txt"))
    return root


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return tiny_dir(str(tmp_path_factory.mktemp("tiny_bert")))


def run_script(args, script=SCRIPT, timeout=600, wait=True):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, script, "--progress=false", *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def base_args(tiny_bert, output_dir, task="MRPC", data=None):
    return [f"--task={task}", f"--data_dir={data or shared('glue', task)}",
            f"--init_checkpoint={tiny_bert}", f"--output_dir={output_dir}",
            "--max_seq_length=64"]


# -- every GLUE task we have real files for -------------------------------------------------------

@pytest.mark.parametrize("task,metric,test_rows,header", [
    ("MRPC", "eval_f1", 1725, "index\tprediction"),
    ("CoLA", "eval_mcc", 1063, "index\tprediction"),
    ("SST-2", "eval_accuracy", 1821, "index\tprediction"),
    ("RTE", "eval_accuracy", 3000, "index\tprediction"),
    ("STS-B", "eval_spearman", 1379, "index\tprediction"),
])
def test_eval_and_predict_every_task(tmp_path, tiny_bert, task, metric, test_rows, header):
    from bert_tf.finetune import RunArgs, run_classifier

    out = tmp_path / task
    args = RunArgs(task_name=task, data_dir=str(shared("glue", task)), init_checkpoint=tiny_bert,
                   output_dir=str(out), max_seq_length=64, do_eval=True, do_predict=True,
                   progress=False, eval_batch_size=128)
    results = run_classifier(args)
    assert metric in results and np.isfinite(results[metric])
    text = (out / "eval_results.txt").read_text()
    assert f"{metric} = " in text
    assert json.loads((out / "eval_results.json").read_text())[metric] == results[metric]
    from bert_tf.data.glue import get_processor

    processor = get_processor(task)
    submission = (out / processor.submission_filename()).read_text().splitlines()
    assert submission[0] == header and len(submission) == test_rows + 1
    # Google's test_results.tsv: per example its class probabilities (STS-B: the score).
    google = np.loadtxt(out / "test_results.tsv", delimiter="\t", ndmin=2)
    assert google.shape == (test_rows, 1 if task == "STS-B" else 2)
    if task == "STS-B":
        assert float(submission[1].split("\t")[1]) == pytest.approx(google[0, 0], abs=1e-3)
    else:
        assert submission[1].split("\t")[1] in {"0", "1", "entailment", "not_entailment"}
        np.testing.assert_allclose(google.sum(1), 1.0, atol=1e-5)
        assert submission[1].split("\t")[1] == processor.submission_label(google[0].argmax())


# -- bad input ------------------------------------------------------------------------------------

def test_bad_input_clear_errors(tmp_path, tiny_bert):
    proc = run_script(base_args(tiny_bert, tmp_path / "a", task="NOPE",
                                data=tmp_path) + ["--do_train"])
    assert proc.returncode == 2 and "unknown task 'NOPE'" in proc.stderr and "MRPC" in proc.stderr

    bad = tmp_path / "bad"
    bad.mkdir()
    lines = shared("glue", "MRPC", "train.tsv").read_text(encoding="utf-8-sig").splitlines()
    lines[4] = "\t".join(lines[4].split("\t")[:3])  # a row with too few columns
    (bad / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = run_script(base_args(tiny_bert, tmp_path / "c", data=bad) + ["--do_train"])
    assert proc.returncode == 2 and "train.tsv:5:" in proc.stderr


@pytest.mark.slow  # a process each (~5 s); the default run keeps the two above
def test_more_bad_input_clear_errors(tmp_path, tiny_bert):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_script(base_args(tiny_bert, tmp_path / "b", data=empty) + ["--do_train"])
    assert proc.returncode == 2 and "train.tsv" in proc.stderr and "--data_dir" in proc.stderr

    bad = tmp_path / "bad"
    bad.mkdir()
    lines = shared("glue", "MRPC", "train.tsv").read_text(encoding="utf-8-sig").splitlines()
    cols = lines[3].split("\t")
    lines[3] = "\t".join(["7"] + cols[1:])  # label outside {0, 1}
    (bad / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = run_script(base_args(tiny_bert, tmp_path / "d", data=bad) + ["--do_train"])
    assert proc.returncode == 2 and "train.tsv:4:" in proc.stderr and "'7'" in proc.stderr

    proc = run_script(base_args(tiny_bert, tmp_path / "e"))
    assert proc.returncode == 2 and "--do_train" in proc.stderr

    typo = tmp_path / "no_such_model"
    proc = run_script(base_args(str(typo), tmp_path / "f") + ["--do_train"])
    assert proc.returncode == 2 and f"--init_checkpoint={typo}: no such file" in proc.stderr
    assert "bert-base-uncased" in proc.stderr and not (tmp_path / "f").exists()


@pytest.mark.slow  # 15-26 s; keeps the default run under 15 min on this machine
def test_output_dir_of_another_run_is_refused_and_random_init_warns(tmp_path, tiny_bert):
    out = tmp_path / "run"
    common = [f"--task=RTE", f"--data_dir={shared('glue', 'RTE')}", f"--output_dir={out}",
              f"--bert_config_file={tiny_bert}/bert_config.json",
              f"--vocab_file={tiny_bert}/vocab.txt", "--max_seq_length=32",
              "--num_train_epochs=0.05", "--do_train"]
    proc = run_script(common)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "RANDOM weights" in proc.stderr
    before = sorted(os.listdir(out / "checkpoints"))
    proc = run_script(common[:-2] + ["--num_train_epochs=0.05", "--learning_rate=1e-4",
                                      "--do_train"])
    assert proc.returncode == 2 and "holds checkpoints of another run" in proc.stderr
    assert "learning_rate" in proc.stderr
    assert sorted(os.listdir(out / "checkpoints")) == before  # nothing overwritten


def test_resume_with_another_worker_count_is_refused(tmp_path):
    """The global batch (and with it the step count, the schedule and the data position) depends
    on the number of Horovod workers: a resume under another count is refused, naming it."""
    from bert_tf import BertConfig
    from bert_tf.errors import UsageError
    from bert_tf.finetune import RunArgs, guard_output_dir

    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64)
    args = RunArgs(output_dir=str(tmp_path), do_train=True)
    guard_output_dir(args, config, True, 4, num_labels=2)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "ckpt-10.index").write_bytes(b"")
    guard_output_dir(args, config, True, 4, num_labels=2)  # the same run resumes
    with pytest.raises(UsageError, match="num_workers: 4 -> 2"):
        guard_output_dir(args, config, True, 2, num_labels=2)


def test_training_results_leave_out_the_loss_of_a_run_that_took_no_step():
    from bert_tf.finetune import training_results

    assert training_results({}) == {}
    assert training_results({"step": 9, "loss": 0.5, "nonfinite_steps": 1}) == {
        "global_step": 9, "nonfinite_steps": 1, "train_loss": 0.5}
    # A rerun of a finished run restores step 9 and takes no step: no NaN in eval_results.json.
    assert training_results({"step": 9, "loss": float("nan"), "nonfinite_steps": 0}) == {
        "global_step": 9, "nonfinite_steps": 0}


# -- kill -9, then the same command again ---------------------------------------------------------

def test_kill_9_then_rerun_matches_uninterrupted(tmp_path, tiny_bert):
    def args(out):
        return base_args(tiny_bert, out) + [
            "--do_train", "--do_eval", "--deterministic", "--train_batch_size=16",
            "--num_train_epochs=0.5", "--save_checkpoints_steps=20", "--log_steps=5"]

    full = run_script(args(tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-3000:]

    out = tmp_path / "killed"
    proc = run_script(args(out), wait=False)
    deadline = time.time() + 300
    while not (out / "checkpoints" / "ckpt-40.index").exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "eval_results.json").exists()  # it really died mid-run

    again = run_script(args(out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stderr
    want = json.loads((tmp_path / "full" / "eval_results.json").read_text())
    got = json.loads((out / "eval_results.json").read_text())
    assert got == want

    import tensorflow as tf
    a = tf.train.load_checkpoint(str(tmp_path / "full" / "checkpoints" / "ckpt-114"))
    b = tf.train.load_checkpoint(str(out / "checkpoints" / "ckpt-114"))
    for name in a.get_variable_to_shape_map():
        if name != "_CHECKPOINTABLE_OBJECT_GRAPH":
            np.testing.assert_array_equal(a.get_tensor(name), b.get_tensor(name), err_msg=name)


# -- NER ------------------------------------------------------------------------------------------

def test_run_ner_end_to_end(tmp_path, tiny_bert):
    data = tmp_path / "conll"
    data.mkdir()
    # The real files, cut to their first documents to keep the test short.
    for name, n in (("eng.train", 1200), ("eng.testa", 400), ("eng.testb", 400)):
        lines = shared("conll2003", name).read_text().splitlines()[:n]
        (data / name).write_text("\n".join(lines) + "\n")
    out = tmp_path / "ner"
    proc = run_script([f"--data_dir={data}", f"--init_checkpoint={tiny_bert}",
                       f"--output_dir={out}", "--max_seq_length=32", "--do_train", "--do_eval",
                       "--do_predict", "--num_train_epochs=1", "--train_batch_size=16",
                       "--eval_every_steps=2"],
                      script=str(REPO / "run_ner.py"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "eval_results.json").read_text())
    for key in ("dev_f1", "dev_precision", "test_f1", "test_recall"):
        assert 0.0 <= results[key] <= 1.0
    pred_lines = (out / "test_predictions.txt").read_text().splitlines()
    gold_words = [l.split()[0] for l in (data / "eng.testb").read_text().splitlines()
                  if l.strip() and not l.startswith("-DOCSTART-")]
    words = [l.split()[0] for l in pred_lines if l.strip()]
    assert words == gold_words  # every word predicted once, in order
    assert all(len(l.split()) == 3 for l in pred_lines if l.strip())
    # The default MLflow store in the output folder: one finished run with the training curve,
    # the final scores, the flags and the model config.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("CoNLL-2003").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "CoNLL-2003-lr5e-05-bs16-seed42"
    assert run.data.params["train_batch_size"] == "16"
    assert run.data.params["bert_config.hidden_size"] == "32"
    assert run.data.params["num_labels"] == "9"
    assert "tracking_uri" not in run.data.params  # unset flags are left out
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == [
        "bert_config.json", "run_config.json"]
    assert run.data.metrics["eval/test_f1"] == results["test_f1"]
    train_rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in train_rows if r["split"] == "train"]
    history = sorted(client.get_metric_history(run.info.run_id, "train/loss"),
                     key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(r["step"], r["loss"]) for r in train_rows]
    # --eval_every_steps=2: dev F1 at steps 2, 4, ... before the end, then the final one.
    last = results["global_step"]
    dev_f1 = sorted(client.get_metric_history(run.info.run_id, "eval/dev_f1"),
                    key=lambda m: m.step)
    assert [m.step for m in dev_f1] == list(range(2, last, 2)) + [last]
    assert dev_f1[-1].value == results["dev_f1"]


@pytest.mark.slow  # 13-23 s: the default run keeps to its 15-minute budget
def test_eval_every_steps_logs_the_dev_metric_during_training(tmp_path, tiny_bert):
    """The curve a sweep prunes on: the task's metric on dev every N steps, under the names the
    final evaluation uses, in metrics.jsonl and MLflow; the flag needs --do_train and --do_eval."""
    data = tmp_path / "mrpc"
    data.mkdir()
    train = shared("glue", "MRPC", "train.tsv").read_text().splitlines()
    (data / "train.tsv").write_text("\n".join(train[:129]) + "\n")  # header + 128 pairs
    shutil.copy(shared("glue", "MRPC", "dev.tsv"), data / "dev.tsv")
    out = tmp_path / "out"
    proc = run_script(base_args(tiny_bert, out, data=data) + [
        "--do_train", "--do_eval", "--num_train_epochs=2", "--train_batch_size=32",
        "--eval_every_steps=3", "--max_seq_length=32"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "eval_results.json").read_text())
    assert results["global_step"] == 8
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6, 8]
    for r in evals:
        assert 0 <= r["eval_accuracy"] <= 1 and 0 <= r["eval_f1"] <= 1
        assert r["eval_examples"] == 408
    assert evals[-1]["eval_accuracy"] == results["eval_accuracy"]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("MRPC").experiment_id])
    history = client.get_metric_history(run.info.run_id, "eval/eval_accuracy")
    assert sorted((m.step, m.value) for m in history) == [
        (r["step"], r["eval_accuracy"]) for r in evals]
    bad = run_script(base_args(tiny_bert, tmp_path / "bad", data=data) + [
        "--do_train", "--eval_every_steps=3"])
    assert bad.returncode == 2 and "--eval_every_steps=3" in bad.stderr
    assert "--do_eval" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow  # 25 s; two Horovod ranks stay in the default run (test_horovod_stack.py)
def test_run_classifier_under_horovodrun(tmp_path, tiny_bert):
    pytest.importorskip("horovod.tensorflow", reason="Horovod not installed: run `make horovod`")
    horovodrun = shutil.which("horovodrun") or os.path.join(os.path.dirname(sys.executable),
                                                            "horovodrun")
    out = tmp_path / "hvd"
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [horovodrun, "--gloo", "-np", "2", "-H", "localhost:2", sys.executable, SCRIPT,
         "--use_horovod", "--progress=false", "--do_train", "--do_eval",
         "--num_train_epochs=0.1", "--train_batch_size=8", *base_args(tiny_bert, out, "RTE")],
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    results = json.loads((out / "eval_results.json").read_text())
    assert results["global_step"] == int(2490 / 16 * 0.1)  # global batch = 2 workers x 8
    assert "2 worker(s) x batch 8" in proc.stdout + proc.stderr
