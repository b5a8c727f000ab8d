"""Pre-training: the record reader (order, resume, worker slices, bad files), Google's loss,
run_pretraining.py end to end (kill -9 and resume, export into transformers, Horovod, bad
input). Records here are written with TensorFlow's own tf.train.Example and TFRecordWriter, so
the reader is checked against TensorFlow's format, not against bert_tf's writer."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import REPO, tiny_config

SCRIPT = str(REPO / "run_pretraining.py")
S, P, V = 32, 5, 99


def write_records(path, n, seed=0, seq=S, preds=P, schema="google", truncate=False):
    """n random pre-training examples in Google's schema; a `uid` hidden in input_ids[1] (row
    number + 1000 * seed) lets tests track single records."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)

    def ints(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x) for x in v]))

    with tf.io.TFRecordWriter(str(path)) as w:
        for i in range(n):
            length = int(rng.integers(8, seq + 1))
            ids = np.zeros(seq, np.int64)
            ids[:length] = rng.integers(5, V, length)
            ids[0], ids[length - 1] = 2, 3
            mask = (np.arange(seq) < length).astype(np.int64)
            segments = ((np.arange(seq) >= length // 2) & (mask > 0)).astype(np.int64)
            k = min(preds, length - 2)
            positions = np.zeros(preds, np.int64)
            positions[:k] = np.sort(rng.choice(np.arange(1, length - 1), k, replace=False))
            targets = np.zeros(preds, np.int64)
            targets[:k] = ids[positions[:k]]
            weights = np.zeros(preds, np.float32)
            weights[:k] = 1.0
            ids[positions[:k]] = 4  # [MASK]
            feature = {"input_ids": ints(ids), "input_mask": ints(mask),
                       "segment_ids": ints(segments), "masked_lm_positions": ints(positions),
                       "masked_lm_ids": ints(targets),
                       "masked_lm_weights": tf.train.Feature(
                           float_list=tf.train.FloatList(value=weights.tolist())),
                       "next_sentence_labels": ints([rng.integers(0, 2)]),
                       "uid": ints([i + 1000 * seed])}
            if schema == "google":
                del feature["uid"]
            elif schema == "other":
                del feature["next_sentence_labels"]
            w.write(tf.train.Example(features=tf.train.Features(feature=feature))
                    .SerializeToString())
    if truncate:
        data = open(path, "rb").read()
        open(path, "wb").write(data[:-7])
    return str(path)


def write_uid_records(root, files=3, per_file=20):
    """Records whose input_ids[1] is a unique id, to follow records through the pipeline."""
    import tensorflow as tf

    paths = []
    for f in range(files):
        path = os.path.join(root, f"uid-{f}.tfrecord")
        with tf.io.TFRecordWriter(path) as w:
            for i in range(per_file):
                def ints(v):
                    return tf.train.Feature(int64_list=tf.train.Int64List(value=v))
                ids = [2, f * per_file + i] + [0] * (S - 2)
                w.write(tf.train.Example(features=tf.train.Features(feature={
                    "input_ids": ints(ids), "input_mask": ints([1] * S),
                    "segment_ids": ints([0] * S), "masked_lm_positions": ints([1] * P),
                    "masked_lm_ids": ints([1] * P),
                    "masked_lm_weights": tf.train.Feature(float_list=tf.train.FloatList(
                        value=[1.0] * P)),
                    "next_sentence_labels": ints([0])})).SerializeToString())
        paths.append(path)
    return paths


def uids(batch):
    return np.asarray(batch["input_ids"])[:, 1].tolist()


# -- the reader ------------------------------------------------------------------------------------

def test_reader_order_resume_and_worker_slices(tmp_path):
    from bert_tf.data import records

    files = write_uid_records(str(tmp_path))  # 60 records
    recs = records.open_pretraining_records(files, S, P, progress=False)  # builds the indexes
    one = records.pretraining_batches(recs, 4, seed=5, accumulation=2, block_records=3)
    assert one.steps_per_epoch == 60 // 8
    stream = one(0)
    steps = [[uids(next(stream)[1]) + uids(next(stream)[1])] for _ in range(2 * 7)]
    steps = [s[0] for s in steps]
    epoch0 = sorted(u for s in steps[:7] for u in s)
    assert len(set(epoch0)) == 56 and set(epoch0) <= set(range(60))  # each record at most once
    assert steps[:7] != steps[7:]  # epoch 1 is another order ...
    again = one(0)
    assert [uids(next(again)[1]) + uids(next(again)[1]) for _ in range(7)] == steps[:7]  # ...
    # and the same seed gives the same order. A resumed run starts at the exact record:
    for start in (3, 7, 9):
        resumed = one(start)
        index, batch = next(resumed)
        assert index == start * 2
        assert uids(batch) + uids(next(resumed)[1]) == steps[start]
    # 2 workers x 4 rows see exactly the rows of the 1 worker x 2 accumulation step.
    workers = [records.pretraining_batches(recs, 4, seed=5, rank=r, num_workers=2,
                                           block_records=3)(0) for r in range(2)]
    for step in steps[:9]:
        assert uids(next(workers[0])[1]) + uids(next(workers[1])[1]) == step
    other_seed = records.pretraining_batches(recs, 4, seed=6, accumulation=2,
                                             block_records=3)(0)
    assert uids(next(other_seed)[1]) + uids(next(other_seed)[1]) != steps[0]


def test_parsed_batch_has_google_dtypes(tmp_path):
    import tensorflow as tf

    from bert_tf.data import records

    path = write_records(tmp_path / "a.tfrecord", 10)
    recs = records.open_pretraining_records([path], S, P, progress=False)
    _, batch = next(records.pretraining_batches(recs, 4, seed=0)(0))
    for name in ("input_ids", "input_mask", "segment_ids"):
        assert batch[name].shape == (4, S) and batch[name].dtype == tf.int32
    for name in ("masked_lm_positions", "masked_lm_ids"):
        assert batch[name].shape == (4, P) and batch[name].dtype == tf.int32
    assert batch["masked_lm_weights"].dtype == tf.float32
    assert batch["next_sentence_labels"].shape == (4,)


@pytest.mark.parametrize("kind,message", [
    ("seq", "input_ids has length 16 but --max_seq_length=32"),
    ("preds", "masked_lm_positions has length 7 but --max_predictions_per_seq=5"),
    ("schema", "missing ['next_sentence_labels']"),
    ("extra", "unexpected ['uid']"),
    ("truncated", "truncated or corrupt"),
    ("garbage", "not a TFRecord file"),
    ("empty", "holds no records"),
])
def test_bad_record_files_name_the_file_and_the_difference(tmp_path, kind, message):
    from bert_tf.data import records

    path = tmp_path / f"{kind}.tfrecord"
    if kind == "seq":
        write_records(path, 3, seq=16)
    elif kind == "preds":
        write_records(path, 3, preds=7)
    elif kind == "schema":
        write_records(path, 3, schema="other")
    elif kind == "extra":
        write_records(path, 3, schema="uid")
    elif kind == "truncated":
        write_records(path, 30, truncate=True)
    elif kind == "garbage":
        path.write_bytes(os.urandom(3000))
    else:
        path.write_bytes(b"")
    good = write_records(tmp_path / "good.tfrecord", 3)
    with pytest.raises(records.RecordError, match=re.escape(message)) as err:
        records.open_pretraining_records([good, str(path)], S, P, progress=False)
    assert str(err.value).startswith(str(path))
    with pytest.raises(records.RecordError, match="no file matches"):
        records.expand_files(str(tmp_path / "nothing-*.tfrecord"))


# -- the loss --------------------------------------------------------------------------------------

def test_sparse_cross_entropy_is_tensorflows_with_its_gradient():
    """The masked-LM cross-entropy (gradient written out) against TF's fused kernel: values and
    gradients on [B,P,V] logits with large and tied values, weighted as the loss weighs them;
    a label outside the vocabulary is NaN, not a silent finite loss."""
    import tensorflow as tf

    from bert_tf.training.tasks import sparse_cross_entropy

    rng = np.random.default_rng(4)
    logits = rng.normal(scale=20.0, size=(3, 4, 50)).astype("float32")
    logits[0, 0] = 1.0  # all tied
    logits = tf.constant(logits)
    labels = tf.constant(rng.integers(0, 50, (3, 4)).astype("int32"))
    weights = tf.constant(rng.uniform(size=(3, 4)).astype("float32"))
    out = []
    for fn in (sparse_cross_entropy,
               lambda y, x: tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=x)):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            ce = fn(labels, logits)
            loss = tf.reduce_sum(ce * weights)
        out.append((ce.numpy(), tape.gradient(loss, logits).numpy()))
    assert out[0][0].shape == (3, 4)
    np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-5, atol=1e-6)
    # a label outside the vocabulary gives NaN for its row (the loop's non-finite guard then
    # stops the run naming label ids), never a silent finite loss
    ce = sparse_cross_entropy(tf.constant([50, -1, 3]), tf.zeros((3, 50))).numpy()
    assert np.isnan(ce[0]) and np.isnan(ce[1]) and abs(ce[2] - np.log(50)) < 1e-6
    # large logits: computed relative to the max, so no ulp of 1000 (6e-5) is lost; what is left
    # is float32's log(1 + 5e-5), as in TF's kernel (5.16e-05 against 5.154e-05)
    big = sparse_cross_entropy(tf.constant([0]), tf.constant([[1000.0, 990.0, 988.0]]))
    np.testing.assert_allclose(big.numpy(), [np.log1p(np.exp(-10) + np.exp(-12))], rtol=5e-3)


def test_pretraining_loss_is_googles_formula():
    import keras
    import tensorflow as tf

    from bert_tf.modeling import BertPretrainer
    from bert_tf.training.tasks import pretraining_eval_metrics, pretraining_loss

    keras.utils.set_random_seed(3)
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertPretrainer(config)
    rng = np.random.default_rng(0)
    batch = {"input_ids": rng.integers(5, V, (3, 12)).astype("int32"),
             "input_mask": np.ones((3, 12), "int32"), "segment_ids": np.zeros((3, 12), "int32"),
             "masked_lm_positions": np.array([[1, 2, 0], [3, 0, 0], [4, 5, 6]], "int32"),
             "masked_lm_ids": np.array([[7, 8, 0], [9, 0, 0], [10, 11, 12]], "int32"),
             "masked_lm_weights": np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1]], "float32"),
             "next_sentence_labels": np.array([0, 1, 1], "int32")}
    loss, metrics = pretraining_loss(model, batch)
    out = model(batch, training=False)
    logp = tf.nn.log_softmax(out["mlm_logits"]).numpy()
    w = batch["masked_lm_weights"]
    ce = -np.take_along_axis(logp, batch["masked_lm_ids"][..., None], -1)[..., 0]
    mlm = (ce * w).sum() / (w.sum() + 1e-5)  # Google: padding predictions weigh 0
    nsp_logp = tf.nn.log_softmax(out["nsp_logits"]).numpy()
    nsp = -nsp_logp[np.arange(3), batch["next_sentence_labels"]].mean()
    np.testing.assert_allclose(float(metrics["mlm_loss"]), mlm, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["nsp_loss"]), nsp, rtol=1e-5)
    np.testing.assert_allclose(float(loss), mlm + nsp, rtol=1e-5)
    sums = pretraining_eval_metrics(model, batch)
    total, count = (float(x) for x in sums["masked_lm_loss"])
    assert count == 6 and abs(total / count - mlm) < 1e-4
    hits = (logp.argmax(-1) == batch["masked_lm_ids"]) * w
    assert float(sums["masked_lm_accuracy"][0]) == hits.sum()


# -- run_pretraining.py ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretraining")
    config = tiny_config(max_position_embeddings=S)
    config.to_json_file(str(root / "bert_config.json"))
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(V - 5)]
    (root / "vocab.txt").write_text("\n".join(tokens) + "\n")
    for i in range(3):
        write_records(root / f"train-{i}.tfrecord", 60, seed=i)
    write_records(root / "heldout.tfrecord", 24, seed=9)
    return root


def run_script(args, timeout=600, wait=True):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, SCRIPT, "--progress=false", *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def base_args(corpus, out):
    return [f"--input_file={corpus}/train-*.tfrecord",
            f"--eval_input_file={corpus}/heldout.tfrecord",
            f"--bert_config_file={corpus}/bert_config.json", f"--vocab_file={corpus}/vocab.txt",
            f"--output_dir={out}", f"--max_seq_length={S}", f"--max_predictions_per_seq={P}",
            "--train_batch_size=4", "--learning_rate=2e-3"]


@pytest.mark.slow  # 73 s; run_classifier's kill -9 test covers resume in the default run
def test_kill_9_mid_accumulation_then_rerun_matches_uninterrupted(tmp_path, corpus):
    """Steps of 2 micro-batches; killed after a checkpoint and mid-run, the same command ends
    with the same losses and bit-identical weights as an uninterrupted run."""
    def args(out):
        return base_args(corpus, out) + [
            "--do_train", "--do_eval", "--deterministic", "--num_train_steps=60",
            "--num_accumulation_steps=2", "--save_checkpoints_steps=10", "--log_steps=5",
            "--eval_every_steps=20", "--optimizer=lamb"]

    full = run_script(args(tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-3000:]
    out = tmp_path / "killed"
    proc = run_script(args(out), wait=False)
    deadline = time.time() + 300
    while not (out / "checkpoints" / "ckpt-30.index").exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "eval_results.json").exists()
    again = run_script(args(out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stderr

    def train_log(run):
        rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
        by_step = {}
        for r in rows:
            if r["split"] == "train":
                by_step[r["step"]] = (r["loss"], r["mlm_accuracy"], r["nsp_loss"])
        return by_step

    full_log, resumed_log = train_log(tmp_path / "full"), train_log(out)
    # Held-out rows during training and the final one carry the same keys.
    evals = [r for r in map(json.loads, (tmp_path / "full" / "metrics.jsonl").read_text()
                            .splitlines()) if r["split"] == "eval"]
    assert len(evals) >= 3 and all(set(r) == set(evals[0]) for r in evals), evals
    assert sorted(full_log) == list(range(5, 61, 5))
    for step, values in resumed_log.items():  # steps logged by both lives of the killed run
        assert values == full_log[step], step
    assert json.loads((out / "eval_results.json").read_text()) == json.loads(
        (tmp_path / "full" / "eval_results.json").read_text())
    import tensorflow as tf
    a = tf.train.load_checkpoint(str(tmp_path / "full" / "checkpoints" / "ckpt-60"))
    b = tf.train.load_checkpoint(str(out / "checkpoints" / "ckpt-60"))
    for name in a.get_variable_to_shape_map():
        if name != "_CHECKPOINTABLE_OBJECT_GRAPH":
            np.testing.assert_array_equal(a.get_tensor(name), b.get_tensor(name), err_msg=name)
    # It learned: the loss of the last window is below the first's.
    assert full_log[60][0] < full_log[5][0]

    # SIGTERM (a preempted node): a checkpoint at the step it stopped at, exit 143, and the
    # same command ends bit-identical too.
    termed = tmp_path / "sigterm"
    proc = run_script(args(termed), wait=False)
    while not (termed / "checkpoints" / "ckpt-20.index").exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline + 300
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    stopped = int(re.search(r"stopped by SIGTERM at step (\d+); checkpoint ", last).group(1))
    assert 20 <= stopped < 60 and "run the same command to resume" in last, last
    assert (termed / "checkpoints" / f"ckpt-{stopped}.index").exists()
    assert "Traceback" not in stderr
    again = run_script(args(termed))
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"(step {stopped})" in again.stderr
    c = tf.train.load_checkpoint(str(termed / "checkpoints" / "ckpt-60"))
    for name in a.get_variable_to_shape_map():
        # save_counter counts saves: the stop made one more.
        if name != "_CHECKPOINTABLE_OBJECT_GRAPH" and not name.startswith("save_counter"):
            np.testing.assert_array_equal(a.get_tensor(name), c.get_tensor(name), err_msg=name)
    assert json.loads((termed / "eval_results.json").read_text()) == json.loads(
        (tmp_path / "full" / "eval_results.json").read_text())


def test_export_loads_into_transformers_with_the_same_logits(tmp_path, corpus):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "run"
    proc = run_script(base_args(corpus, out) + ["--do_train", "--num_train_steps=4",
                                                "--export=google,huggingface"])
    assert proc.returncode == 0, proc.stderr[-3000:]

    from bert_tf import checkpoints
    from bert_tf.modeling import BertPretrainer
    from bert_tf.config import BertConfig

    config = BertConfig.from_json_file(str(out / "export" / "google" / "bert_config.json"))
    ours = BertPretrainer(config)
    report = checkpoints.load(ours, str(out / "export" / "google"))
    assert not report.missing and not report.unused
    from bert_tf.data.record_index import read_fingerprint, vocab_fingerprint

    for fmt in ("google", "huggingface"):  # the vocabulary travels with the weights
        stored = read_fingerprint(str(out / "export" / fmt))
        assert stored["sha256"] == vocab_fingerprint(str(corpus / "vocab.txt"))["sha256"]
    hf, info = transformers.BertForPreTraining.from_pretrained(
        str(out / "export" / "huggingface"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    hf.eval()
    rng = np.random.default_rng(1)
    ids = rng.integers(5, V, (2, S)).astype("int64")
    mask = np.ones((2, S), "int64")
    mask[1, 20:] = 0
    segments = (np.arange(S) >= 10).astype("int64")[None].repeat(2, 0)
    positions = np.array([[1, 5, 9, 12, 30], [2, 3, 4, 15, 19]], "int64")
    with torch.no_grad():
        got = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                 token_type_ids=torch.tensor(segments))
    mine = ours({"input_ids": ids.astype("int32"), "input_mask": mask.astype("int32"),
                 "segment_ids": segments.astype("int32"),
                 "masked_lm_positions": positions.astype("int32")})
    hf_mlm = np.take_along_axis(got.prediction_logits.numpy(), positions[..., None], 1)
    np.testing.assert_allclose(np.asarray(mine["mlm_logits"]), hf_mlm, atol=1e-4)
    np.testing.assert_allclose(np.asarray(mine["nsp_logits"]),
                               got.seq_relationship_logits.numpy(), atol=1e-4)


@pytest.mark.slow  # 13-23 s: the default run keeps to its 15-minute budget
def test_continued_pretraining_from_a_checkpoint_without_heads(tmp_path, corpus):
    """A Hugging Face encoder without MLM/NSP heads: the heads start fresh and the log says so."""
    from bert_tf import checkpoints
    from bert_tf.config import BertConfig
    from bert_tf.modeling import BertEncoder

    init = tmp_path / "encoder"
    encoder = BertEncoder(BertConfig.from_json_file(str(corpus / "bert_config.json")))
    checkpoints.save_huggingface(encoder, str(init))
    shutil.copy(corpus / "vocab.txt", init / "vocab.txt")
    args = [a for a in base_args(corpus, tmp_path / "out") if "bert_config" not in a
            and "vocab_file" not in a]
    proc = run_script(args + [f"--init_checkpoint={init}", "--do_train", "--do_eval",
                              "--num_train_steps=3"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "has no pre-training heads" in proc.stderr
    assert "cls.predictions.transform.dense.weight" in proc.stderr
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert results["global_step"] == 3 and 0 <= results["masked_lm_accuracy"] <= 1


# Each case is a process that imports TensorFlow (~5 s): three in the default run, the rest slow.
_BAD_INPUT_CASES = ["records_of_another_length", "truncated_records", "no_input_match",
                    "vocab_size", "max_predictions", "global_batch", "export_format",
                    "zero_steps", "eval_input_named"]
_DEFAULT_BAD_INPUT = {"records_of_another_length", "truncated_records", "eval_input_named"}


@pytest.mark.parametrize("case", [
    pytest.param(c, marks=[] if c in _DEFAULT_BAD_INPUT else [pytest.mark.slow])
    for c in _BAD_INPUT_CASES])
def test_bad_input_one_line_exit_2(tmp_path, corpus, case):
    other_vocab = tmp_path / "vocab50.txt"
    other_vocab.write_text("\n".join(f"t{i}" for i in range(50)) + "\n")
    if case == "records_of_another_length":
        seq16 = write_records(tmp_path / "seq16.tfrecord", 5, seq=16)
        extra, message = [f"--input_file={seq16}"], \
            f"{seq16}: input_ids has length 16 but --max_seq_length=32"
    elif case == "truncated_records":
        truncated = write_records(tmp_path / "cut.tfrecord", 30, truncate=True)
        extra, message = [f"--input_file={truncated}"], "truncated or corrupt"
    else:
        extra, message = {
            "no_input_match": ([f"--input_file={tmp_path}/none-*"], "no file matches"),
            "vocab_size": ([f"--vocab_file={other_vocab}"], "has 50 entries but"),
            "max_predictions": (["--max_predictions_per_seq=40"],
                                "--max_predictions_per_seq=40 exceeds"),
            "global_batch": (["--global_batch_size=10"],
                             "--global_batch_size=10 is not a multiple of"),
            "export_format": (["--export=onnx"], "--export=onnx: unknown format"),
            "zero_steps": (["--num_train_steps=0"], "--num_train_steps=0 must be at least 1"),
            # Named under its own flag (it was once reported as --input_file).
            "eval_input_named": (["--do_eval", f"--eval_input_file={tmp_path}/heldout-*"],
                                 f"--eval_input_file: {tmp_path}/heldout-*: no file matches"),
        }[case]
    out = tmp_path / "out"
    proc = run_script(base_args(corpus, out) + ["--do_train", "--num_train_steps=2"] + extra)
    assert proc.returncode == 2, (extra, proc.stderr[-2000:])
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("run_pretraining.py: error: ") and message in last, (extra, last)
    assert "Traceback" not in proc.stderr
    assert not (out / "checkpoints").exists()


def test_googles_readme_command_line_trains_without_a_vocab_file(tmp_path, corpus):
    """google-research/bert README's run_pretraining.py command, as written (bool flags as
    =True, no --vocab_file: the records hold ids)."""
    proc = run_script([
        f"--input_file={corpus}/train-0.tfrecord", f"--output_dir={tmp_path / 'out'}",
        "--do_train=True", "--do_eval=True", f"--bert_config_file={corpus}/bert_config.json",
        "--train_batch_size=8", f"--max_seq_length={S}", f"--max_predictions_per_seq={P}",
        "--num_train_steps=3", "--num_warmup_steps=1", "--learning_rate=2e-5"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert results["global_step"] == 3 and 0 <= results["masked_lm_accuracy"] <= 1


@pytest.mark.slow  # 13-23 s: the default run keeps to its 15-minute budget
def test_a_vocabulary_other_than_the_records_is_refused(tmp_path, corpus):
    """Records whose index names their vocabulary: another --vocab_file (same size, so the
    config check passes) is refused in one line; the right one trains."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(corpus / "train-0.tfrecord", data / "train.tfrecord")
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    built = subprocess.run([sys.executable, str(REPO / "index_records.py"), "build",
                            f"--input_file={data}/train.tfrecord",
                            f"--vocab_file={corpus}/vocab.txt", "--noprogress"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    other = tmp_path / "other_vocab.txt"
    other.write_text((corpus / "vocab.txt").read_text().replace("w7\n", "w7b\n"))
    common = [f"--input_file={data}/train.tfrecord", f"--bert_config_file={corpus}/bert_config.json",
              f"--max_seq_length={S}", f"--max_predictions_per_seq={P}", "--do_train",
              "--num_train_steps=2", "--train_batch_size=4"]
    proc = run_script(common + [f"--vocab_file={other}", f"--output_dir={tmp_path / 'a'}"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"run_pretraining.py: error: --vocab_file={other} is not the "
                           "vocabulary --input_file was made with"), last
    assert "Traceback" not in proc.stderr
    # A checkpoint folder that records its vocabulary (as run_pretraining's --export and
    # extend_vocab.py write it) of another vocabulary than the records': refused, even when
    # --vocab_file names the records' own vocabulary (the embedding rows are the checkpoint's).
    from bert_tf import checkpoints
    from bert_tf.config import BertConfig
    from bert_tf.data.record_index import vocab_fingerprint, write_fingerprint
    from bert_tf.modeling import BertPretrainer

    init = tmp_path / "init"
    model = BertPretrainer(BertConfig.from_json_file(str(corpus / "bert_config.json")))
    checkpoints.save_google(model, str(init / "bert_model.ckpt"))
    write_fingerprint(str(init), vocab_fingerprint(str(other)))
    proc = run_script([a for a in common if "bert_config" not in a] + [
        f"--init_checkpoint={init}", f"--output_dir={tmp_path / 'c'}",
        f"--vocab_file={corpus}/vocab.txt"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert f"--init_checkpoint={init} was trained on another vocabulary" in last, last
    assert "vocab_fingerprint.json" in last and "Traceback" not in proc.stderr
    ok = run_script(common + [f"--vocab_file={corpus}/vocab.txt", f"--output_dir={tmp_path / 'b'}"])
    assert ok.returncode == 0, ok.stderr[-2000:]


@pytest.mark.slow  # 15-26 s; keeps the default run under 15 min on this machine
def test_a_corrupt_record_mid_run_is_one_line_or_skipped_and_counted(tmp_path, corpus):
    from bert_tf.data import record_index

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(corpus / "train-0.tfrecord", data / "train.tfrecord")
    record_index.build_index(str(data / "train.tfrecord"))
    raw = bytearray((data / "train.tfrecord").read_bytes())
    middle = len(raw) // 2
    raw[middle] ^= 0x5A  # one flipped byte, after the index was made
    (data / "train.tfrecord").write_bytes(bytes(raw))
    offsets = record_index.load_index(str(data / "train.tfrecord")).offsets
    start = int(offsets[np.searchsorted(offsets, middle, side="right") - 1])
    common = [f"--input_file={data}/train.tfrecord", f"--bert_config_file={corpus}/bert_config.json",
              f"--max_seq_length={S}", f"--max_predictions_per_seq={P}", "--do_train",
              "--num_train_steps=15", "--train_batch_size=4", "--log_steps=5",
              "--save_checkpoints_steps=5"]  # 15 steps: one epoch of the 60 records
    proc = run_script(common + [f"--output_dir={tmp_path / 'stop'}"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"run_pretraining.py: error: {data}/train.tfrecord: the record at "
                           f"byte {start:,} is corrupt"), last
    assert "--skip_corrupt_records" in last and "Traceback" not in proc.stderr
    if "checkpoints so far" in last:  # the same command would stop at the same record
        assert "the same command with --skip_corrupt_records resumes" in last, last
    skip = run_script(common + ["--skip_corrupt_records", f"--output_dir={tmp_path / 'skip'}"])
    assert skip.returncode == 0, skip.stderr[-2000:]
    rows = [json.loads(l) for l in (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert train[-1]["corrupt_records_skipped"] == 1
    results = json.loads((tmp_path / "skip" / "eval_results.json").read_text())
    assert results["corrupt_records_skipped"] == 1


def test_a_glob_skips_the_summary_written_beside_the_records(tmp_path):
    """`out/train.tfrecord*` (run_pretraining.py's own example) also matches
    create_pretraining_data.py's train.tfrecord.summary.json."""
    from bert_tf.data import records

    data = write_records(tmp_path / "train.tfrecord", 3)
    summary = tmp_path / "train.tfrecord.summary.json"
    summary.write_text("{}")
    (tmp_path / "train.tfrecord-00000-of-00002.partial").write_bytes(b"")
    (tmp_path / "train.tfrecord-00000-of-00002.partial.shuffle").mkdir()
    assert records.expand_files(f"{tmp_path}/train.tfrecord*") == [str(data)]
    # Named exactly, it is read (and refused as not a TFRecord file by the checks).
    assert records.expand_files(str(summary)) == [str(summary)]


@pytest.mark.slow  # 28 s; Horovod stays in the default run through test_horovod_stack and
# run_classifier under horovodrun (the default run measured 14:26 of its 15 minutes)
def test_two_horovod_ranks_match_one_process_with_the_same_global_batch(tmp_path, corpus):
    pytest.importorskip("horovod.tensorflow", reason="Horovod not installed: run `make horovod`")
    horovodrun = shutil.which("horovodrun") or os.path.join(os.path.dirname(sys.executable),
                                                            "horovodrun")
    common = ["--do_train", "--num_train_steps=6", "--deterministic", "--log_steps=3"]
    one = run_script(base_args(corpus, tmp_path / "one") + common + ["--global_batch_size=8"])
    assert one.returncode == 0, one.stderr[-3000:]
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    two = subprocess.run(
        [horovodrun, "--gloo", "-np", "2", "-H", "localhost:2", sys.executable, SCRIPT,
         "--use_horovod", "--progress=false", *base_args(corpus, tmp_path / "two"), *common,
         "--global_batch_size=8"], env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, (two.stdout + two.stderr)[-4000:]
    assert "2 worker(s) x 4 x 1 accumulation" in two.stdout + two.stderr
    assert "1 worker(s) x 4 x 2 accumulation" in one.stderr
    import tensorflow as tf
    a = tf.train.load_checkpoint(str(tmp_path / "one" / "checkpoints" / "ckpt-6"))
    b = tf.train.load_checkpoint(str(tmp_path / "two" / "checkpoints" / "ckpt-6"))
    for name in a.get_variable_to_shape_map():
        if name.startswith("model/") and "OPTIMIZER" not in name:
            # The same records and the same global batch; summation order differs (allreduce
            # vs accumulation), so equal to float32 rounding.
            np.testing.assert_allclose(a.get_tensor(name), b.get_tensor(name), rtol=2e-4,
                                       atol=2e-5, err_msg=name)


def _rank_pid(marker: str, rank: int):
    """The pid of the Horovod rank whose command line holds `marker` (its output dir), or
    None while it has not started."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
            if marker not in cmdline or SCRIPT not in cmdline:
                continue
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if f"HOROVOD_RANK={rank}".encode() in environ:
            return int(pid)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_to_one_horovod_rank_stops_every_rank_at_the_same_step(tmp_path, corpus):
    """SIGTERM to rank 1 only: both ranks stop at the same step (agreed over the allreduce),
    the chief saves it, every rank exits 143; the same command then ends bit-identical to an
    uninterrupted 2-rank run."""
    pytest.importorskip("horovod.tensorflow", reason="Horovod not installed: run `make horovod`")
    horovodrun = shutil.which("horovodrun") or os.path.join(os.path.dirname(sys.executable),
                                                            "horovodrun")
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")

    def command(out):
        return [horovodrun, "--gloo", "-np", "2", "-H", "localhost:2", sys.executable, SCRIPT,
                "--use_horovod", "--progress=false", *base_args(corpus, out), "--do_train",
                "--num_train_steps=40", "--deterministic", "--log_steps=2",
                "--save_checkpoints_steps=1000", "--global_batch_size=16"]

    full = subprocess.run(command(tmp_path / "full"), env=env, capture_output=True, text=True,
                          timeout=600)
    assert full.returncode == 0, (full.stdout + full.stderr)[-4000:]
    out = tmp_path / "termed"
    proc = subprocess.Popen(command(out), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not ((out / "metrics.jsonl").exists() and
               len((out / "metrics.jsonl").read_text().splitlines()) >= 3):
        assert proc.poll() is None, proc.stdout.read()[-4000:]
        assert time.time() < deadline
        time.sleep(0.05)
    pid = _rank_pid(str(out), 1)
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    stops = re.findall(r"run_pretraining.py: stopped by SIGTERM at step (\d+)", output)
    assert len(stops) == 2 and stops[0] == stops[1], output[-4000:]  # both ranks, one step
    stopped = int(stops[0])
    assert stopped < 40 and (out / "checkpoints" / f"ckpt-{stopped}.index").exists()
    # No traceback from a rank (horovodrun prints its own when a rank exits non-zero).
    assert not re.search(r"\[\d\]<std(err|out)>:Traceback", output), output[-4000:]
    assert "Process 1 exit with status code 143" in output, output[-2000:]
    # Rank 0 stopped by itself too (exit 143), unless horovodrun's clean-up got there first
    # once rank 1 had exited: then it printed its stop line above all the same.
    assert re.search(r"Process 0 exit with status code 143", output), output[-2000:]
    again = subprocess.run(command(out), env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    import tensorflow as tf
    a = tf.train.load_checkpoint(str(tmp_path / "full" / "checkpoints" / "ckpt-40"))
    b = tf.train.load_checkpoint(str(out / "checkpoints" / "ckpt-40"))
    for name in a.get_variable_to_shape_map():
        if name != "_CHECKPOINTABLE_OBJECT_GRAPH" and not name.startswith("save_counter"):
            np.testing.assert_array_equal(a.get_tensor(name), b.get_tensor(name), err_msg=name)


# -- dynamic masking -------------------------------------------------------------------------------

def _real_batch(n=64, seq=128):
    """[CLS] A [SEP] B [SEP] rows of real text (python_docs_heldout, uncased WordPiece)."""
    from bert_tf.tokenization import FullTokenizer
    from tests.conftest import shared

    vocab = shared("vocab", "uncased_vocab.txt")
    tok = FullTokenizer(str(vocab))
    lines = [l for l in shared("corpus", "python_docs_heldout.txt").read_text().splitlines()
             if l.strip()]
    ids = np.zeros((n, seq), np.int32)
    mask = np.zeros((n, seq), np.int32)
    segments = np.zeros((n, seq), np.int32)
    rng = np.random.default_rng(0)
    for row in range(n):
        a = tok.convert_tokens_to_ids(tok.tokenize(lines[2 * row]))[:60]
        b = tok.convert_tokens_to_ids(tok.tokenize(lines[2 * row + 1]))[:60]
        cut = int(rng.integers(1, len(b) + 1))  # rows of many lengths
        b = b[:cut]
        row_ids = [101] + a + [102] + b + [102]  # [CLS]=101, [SEP]=102 in the uncased vocab
        ids[row, :len(row_ids)] = row_ids
        mask[row, :len(row_ids)] = 1
        segments[row, len(a) + 2:len(row_ids)] = 1
    return str(vocab), tok, {"input_ids": ids, "input_mask": mask, "segment_ids": segments,
                             "next_sentence_labels": np.zeros(n, np.int32)}


@pytest.mark.parametrize("whole_word", [False, True])
def test_dynamic_masking_follows_googles_rules(whole_word):
    import tensorflow as tf

    from bert_tf.data.dynamic_masking import DynamicMasker

    vocab, tok, batch = _real_batch()
    P = 20
    masker = DynamicMasker(vocab, P, 0.15, do_whole_word_mask=whole_word, seed=3)
    counts = {"mask": 0, "same": 0, "random": 0}
    masked_total = cand_total = 0
    for key in range(6):
        out = {k: np.asarray(v) for k, v in masker(batch, tf.constant(key, tf.int64)).items()}
        for row in range(len(batch["input_ids"])):
            original = batch["input_ids"][row]
            n = int(batch["input_mask"][row].sum())
            w = out["masked_lm_weights"][row]
            k = int(w.sum())
            pos = out["masked_lm_positions"][row][:k]
            want = min(P, max(1, round(n * 0.15)))
            if whole_word:
                assert 1 <= k <= want
            else:
                assert k == want  # single pieces always fit
            assert list(pos) == sorted(set(pos))
            assert (out["masked_lm_positions"][row][k:] == 0).all()
            assert (w[k:] == 0).all()
            np.testing.assert_array_equal(out["masked_lm_ids"][row][:k], original[pos])
            assert not set(original[pos]) & {101, 102, 0} and (pos < n).all()
            changed = np.flatnonzero(out["input_ids"][row] != original)
            assert set(changed) <= set(pos)  # only chosen positions change
            for p in pos:
                new = out["input_ids"][row][p]
                counts["mask" if new == 103 else "same" if new == original[p] else "random"] += 1
            if whole_word:  # never part of a word: a chosen word's pieces are all chosen
                tokens = tok.convert_ids_to_tokens(original[:n].tolist())
                chosen = set(pos.tolist())
                for i in range(1, n):
                    if tokens[i].startswith("##") and tokens[i - 1] not in ("[CLS]", "[SEP]"):
                        assert (i in chosen) == (i - 1 in chosen), (tokens[i - 1:i + 1])
            masked_total += k
            cand_total += n - 3
    total = sum(counts.values())
    assert abs(counts["mask"] / total - 0.8) < 0.04
    assert abs(counts["same"] / total - 0.1) < 0.03
    assert abs(counts["random"] / total - 0.1) < 0.03
    assert 0.12 < masked_total / cand_total < 0.19
    # Same key, same masks; another key (another epoch or batch), other masks.
    a = masker(batch, tf.constant(1, tf.int64))["masked_lm_positions"].numpy()
    b = masker(batch, tf.constant(1, tf.int64))["masked_lm_positions"].numpy()
    c = masker(batch, tf.constant(2, tf.int64))["masked_lm_positions"].numpy()
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_run_pretraining_masks_unmasked_records_in_the_pipeline(tmp_path, corpus):
    """Records without masks (create_pretraining_data.py --dynamic_masking) train and evaluate
    with masks drawn in the pipeline."""
    import tensorflow as tf

    def strip(src, dst):
        with tf.io.TFRecordWriter(str(dst)) as w:
            for raw in tf.data.TFRecordDataset(str(src)):
                example = tf.train.Example.FromString(raw.numpy())
                for name in ("masked_lm_positions", "masked_lm_ids", "masked_lm_weights"):
                    del example.features.feature[name]
                w.write(example.SerializeToString())

    for i in range(3):
        strip(corpus / f"train-{i}.tfrecord", tmp_path / f"train-{i}.tfrecord")
    strip(corpus / "heldout.tfrecord", tmp_path / "heldout.tfrecord")
    args = base_args(corpus, tmp_path / "out")
    args = [a.replace(str(corpus) + "/train", str(tmp_path) + "/train").replace(
        str(corpus) + "/heldout", str(tmp_path) + "/heldout") for a in args]
    proc = run_script(args + ["--do_train", "--do_eval", "--num_train_steps=4",
                              "--do_whole_word_mask"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert results["global_step"] == 4 and 0 <= results["masked_lm_accuracy"] <= 1


# -- records made by Google's own script -------------------------------------------------------------

GOOGLE_BERT_DIR = os.environ.get("GOOGLE_BERT_DIR", "/tmp/google-bert")


@pytest.mark.skipif(not os.path.exists(os.path.join(GOOGLE_BERT_DIR,
                                                    "create_pretraining_data.py")),
                    reason=f"no google-research/bert checkout at {GOOGLE_BERT_DIR} (set "
                           "GOOGLE_BERT_DIR; `git clone https://github.com/google-research/bert`)")
@pytest.mark.slow  # 26 s; the index build itself is tested on this project's records
def test_records_of_googles_script_train_after_their_index_is_built(tmp_path):
    """Google's create_pretraining_data.py, unmodified (bench/peers runs it under TF 2), on
    real text: index_records.py indexes its output (with the vocabulary it was made with) and
    Google's README pre-training command trains on it."""
    from tests.conftest import shared

    vocab = shared("vocab", "uncased_vocab.txt")
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    records = tmp_path / "google.tfrecord"
    made = subprocess.run(
        [sys.executable, str(REPO / "bench" / "peers" / "google_create_pretraining_data.py"),
         f"--google_bert_dir={GOOGLE_BERT_DIR}",
         f"--input_file={shared('corpus', 'python_docs_heldout.txt')}",
         f"--output_file={records}", f"--vocab_file={vocab}", "--do_lower_case=True",
         "--max_seq_length=64", "--max_predictions_per_seq=10", "--masked_lm_prob=0.15",
         "--random_seed=12345", "--dupe_factor=1"], env=env, capture_output=True, text=True,
        timeout=900)
    assert made.returncode == 0, made.stderr[-3000:]
    built = subprocess.run([sys.executable, str(REPO / "index_records.py"), "build",
                            f"--input_file={records}", f"--vocab_file={vocab}", "--noprogress"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    count = int(re.search(r"([\d,]+) records", built.stdout).group(1).replace(",", ""))
    import tensorflow as tf
    assert count == sum(1 for _ in tf.data.TFRecordDataset(str(records)))
    config = tiny_config(vocab_size=30522, max_position_embeddings=64)
    config.to_json_file(str(tmp_path / "bert_config.json"))
    proc = run_script([f"--input_file={records}", f"--output_dir={tmp_path / 'out'}",
                       "--do_train=True", "--do_eval=True",
                       f"--bert_config_file={tmp_path / 'bert_config.json'}",
                       "--train_batch_size=8", "--max_seq_length=64",
                       "--max_predictions_per_seq=10", "--num_train_steps=4",
                       "--num_warmup_steps=1", "--learning_rate=2e-5", "--max_eval_steps=4"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert results["global_step"] == 4 and results["eval_examples"] == 32
    # The vocabulary check now knows which vocabulary the records hold: another is refused.
    # (One token changed: the same size, so only the fingerprint tells them apart.)
    other = tmp_path / "other_vocab.txt"
    other.write_text(vocab.read_text(encoding="utf-8").replace("\nthe\n", "\nthee\n", 1),
                     encoding="utf-8")
    refused = run_script([f"--input_file={records}", f"--output_dir={tmp_path / 'other'}",
                          "--do_train", f"--bert_config_file={tmp_path / 'bert_config.json'}",
                          f"--vocab_file={other}", "--max_seq_length=64",
                          "--max_predictions_per_seq=10", "--num_train_steps=1"])
    assert refused.returncode == 2
    assert "is not the vocabulary --input_file was made with" in refused.stderr


@pytest.mark.slow  # 26 s, two short trainings; with the other slow tests in make test-slow
def test_records_moved_elsewhere_resume_the_same_run(tmp_path, corpus):
    """A rerun that finds the same records under another path (an Azure ML job mounts its
    inputs under a path of its own) resumes; other records are refused, named by content."""
    first = tmp_path / "jobA"
    first.mkdir()
    for name in ("train-0.tfrecord", "train-1.tfrecord"):
        shutil.copy(corpus / name, first / name)
    out = tmp_path / "out"

    def args(data, steps):
        return [f"--input_file={data}/*.tfrecord", f"--bert_config_file={corpus}/bert_config.json",
                f"--max_seq_length={S}", f"--max_predictions_per_seq={P}", "--do_train",
                f"--num_train_steps={steps}", "--train_batch_size=4", f"--output_dir={out}",
                "--save_checkpoints_steps=2"]

    assert run_script(args(first, 4)).returncode == 0
    moved = tmp_path / "jobB"
    first.rename(moved)  # the index (written beside them) moves with them
    again = run_script(args(moved, 4))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stderr and "(step 4)" in again.stderr
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(corpus / "train-2.tfrecord", other / "train-0.tfrecord")
    refused = run_script(args(other, 4))
    assert refused.returncode == 2
    last = refused.stderr.strip().splitlines()[-1]
    assert "holds checkpoints of another run (input_data: '2 files, 120 records" in last, last
