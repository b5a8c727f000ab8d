"""The training engine: optimizers against the published update rules, schedule, accumulation,
mixed precision, non-finite steps, input order and resumption."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import random_feature_table, tiny_config

from bert_tf.data import records  # noqa: E402
from bert_tf.modeling import BertClassifier  # noqa: E402
from bert_tf.training import optimization  # noqa: E402
from bert_tf.training.distributed import Distributed  # noqa: E402
from bert_tf.training.loop import TrainingError, TrainSettings, train  # noqa: E402
from bert_tf.training.precision import set_dtype  # noqa: E402
from bert_tf.training.tasks import classification_loss  # noqa: E402


# -- optimizers, checked against the update rules written out in numpy --------------------------

def _reference(kind, w, grads, lr, decay, b1=0.9, b2=0.999, eps=1e-6):
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        if kind == "adamw":  # Google: no bias correction
            w = w - lr * (m / (np.sqrt(v) + eps) + decay * w)
        else:  # LAMB
            u = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps) + decay * w
            ratio = np.linalg.norm(w) / np.linalg.norm(u) if decay else 1.0
            w = w - lr * ratio * u
    return w


@pytest.mark.parametrize("kind", ["adamw", "lamb"])
def test_optimizer_update_rules(kind):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((4, 3)).astype("float32")
    b0 = rng.standard_normal((3,)).astype("float32")
    grads = [(rng.standard_normal((4, 3)).astype("float32"),
              rng.standard_normal((3,)).astype("float32")) for _ in range(4)]
    kernel = keras.Variable(w0, name="kernel")
    bias = keras.Variable(b0, name="bias")  # biases: no decay, no trust ratio
    opt = optimization.OPTIMIZERS[kind](0.01, weight_decay_rate=0.1)
    for gk, gb in grads:
        opt.apply([tf.constant(gk), tf.constant(gb)], [kernel, bias])
    want_k = _reference(kind, w0.astype("float64"), [g[0] for g in grads], 0.01, 0.1)
    want_b = _reference(kind, b0.astype("float64"), [g[1] for g in grads], 0.01, 0.0)
    np.testing.assert_allclose(kernel.numpy(), want_k, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias.numpy(), want_b, rtol=1e-5, atol=1e-6)


def test_bias_corrected_adamw_matches_torch():
    """With --adam_bias_correction, our AdamW is torch.optim.AdamW (an independent oracle)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((5, 4)).astype("float32")
    grads = [rng.standard_normal((5, 4)).astype("float32") for _ in range(5)]
    ours = keras.Variable(w0, name="kernel")
    opt = optimization.AdamWeightDecay(0.01, bias_correction=True, weight_decay_rate=0.1)
    theirs = torch.nn.Parameter(torch.tensor(w0))
    topt = torch.optim.AdamW([theirs], lr=0.01, betas=(0.9, 0.999), eps=1e-6,
                             weight_decay=0.1)
    for g in grads:
        opt.apply([tf.constant(g)], [ours])
        theirs.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_no_decay_for_layer_norm_and_bias():
    model = BertClassifier(tiny_config(), 2)
    excluded = {v.path for v in model.trainable_variables if optimization.excluded(v)}
    assert any("LayerNorm/gamma" in p for p in excluded)
    assert any(p.endswith("bias") for p in excluded)
    assert not any(p.endswith("kernel") or "embeddings/word" in p for p in excluded)


def test_warmup_then_linear_decay():
    """Google's create_optimizer: polynomial (power 1) decay from the peak over all
    num_train_steps, replaced by the linear ramp during warm-up; so just after warm-up the rate
    is already peak * (1 - warmup / total)."""
    sched = optimization.WarmupLinearDecay(1e-3, num_train_steps=100, num_warmup_steps=10)
    values = [float(sched(s)) for s in (0, 5, 10, 55, 100, 120)]
    assert values == pytest.approx([0.0, 5e-4, 9e-4, 4.5e-4, 0.0, 0.0])
    decay = keras.optimizers.schedules.PolynomialDecay(1e-3, 100, end_learning_rate=0.0, power=1)
    for s in range(10, 101, 7):
        assert float(sched(s)) == pytest.approx(float(decay(s)), rel=1e-6), s
    with pytest.raises(ValueError, match="num_warmup_steps"):
        optimization.WarmupLinearDecay(1e-3, 10, 20)


# -- data order -----------------------------------------------------------------------------------

def _table(n=96, seed=0, vocab=99, max_len=48):
    return random_feature_table(n, seed, vocab, max_len)


def test_micro_batches_slice_one_global_batch():
    table = _table()
    one = records.train_micro_batches(table, 8, seed=3, max_seq_length=64)
    split = records.train_micro_batches(table, 4, seed=3, accumulation=2, max_seq_length=64)
    ranks = [records.train_micro_batches(table, 2, seed=3, rank=r, num_workers=2,
                                         accumulation=2, max_seq_length=64) for r in range(2)]
    for step in range(15):  # crosses an epoch boundary (12 steps per epoch)
        _, big = next(one)
        a, b = next(split)[1], next(split)[1]
        np.testing.assert_array_equal(big["input_ids"],
                                      np.concatenate([a["input_ids"], b["input_ids"]]))
        parts = [next(ranks[r])[1]["input_ids"] for r in range(2) for _ in range(2)]
        # micro-batch a of rank r is slice a * 2 + r
        np.testing.assert_array_equal(big["input_ids"],
                                      np.concatenate([parts[0], parts[2], parts[1], parts[3]]))
        assert big["input_ids"].shape[1] % 32 == 0 or big["input_ids"].shape[1] == 64
    resumed = records.train_micro_batches(table, 8, seed=3, start_step=13, max_seq_length=64)
    fresh = records.train_micro_batches(table, 8, seed=3, max_seq_length=64)
    for _ in range(13):
        next(fresh)
    np.testing.assert_array_equal(next(resumed)[1]["input_ids"], next(fresh)[1]["input_ids"])


def test_epoch_covers_every_row_once_and_buckets_pad_little():
    table = _table(n=320)
    rows = np.concatenate(records.epoch_global_batches(table, 32, seed=1, epoch=0))
    assert sorted(rows.tolist()) == list(range(320))
    widths = [records.bucket(table.lengths[b].max(), 32, 64)
              for b in records.epoch_global_batches(table, 32, seed=1, epoch=0)]
    assert set(widths) <= {32, 64}


# -- the loop -------------------------------------------------------------------------------------

def _run(tmp_path, name, table, config=None, steps=6, dtype="fp32", batch=8, accum=1,
         init_weights=None, eval_fn_and_every=(None, 0), **overrides):
    set_dtype(dtype)
    try:
        keras.utils.set_random_seed(0)
        model = BertClassifier(config or tiny_config(), 2)
        if init_weights is not None:
            model.set_weights(init_weights)
        settings = TrainSettings(output_dir=str(tmp_path / name), train_batch_size=batch,
                                 num_train_steps=steps, learning_rate=1e-3, num_warmup_steps=1,
                                 dtype=dtype, num_accumulation_steps=accum, log_steps=1,
                                 **overrides)
        source = records.table_batches(table, batch, settings.seed, accumulation=accum,
                                       max_seq_length=64)
        summary = train(model, classification_loss, source, settings, Distributed(False),
                        progress=False, eval_fn=eval_fn_and_every[0],
                        eval_every_steps=eval_fn_and_every[1])
    finally:
        set_dtype("fp32")
    return model, summary


def test_accumulation_equals_the_big_batch(tmp_path):
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    table = _table()
    big, big_summary = _run(tmp_path, "big", table, config, batch=8)
    acc, acc_summary = _run(tmp_path, "acc", table, config, batch=4, accum=2)
    for a, b in zip(big.weights, acc.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-6)
    # The logged loss is the step's (mean of its two micro-batches), not the last micro-batch's.
    assert acc_summary["loss"] == pytest.approx(big_summary["loss"], rel=1e-5)


def test_loss_goes_down_and_logs_are_written(tmp_path):
    table = _table()
    trained, summary = _run(tmp_path, "run", table, steps=24)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    import json
    losses = [json.loads(line)["loss"] for line in lines]
    assert len(losses) == 24 and np.mean(losses[-6:]) < np.mean(losses[:6])
    assert (tmp_path / "run" / "tensorboard").is_dir()
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.index"))
    assert ckpts == ["ckpt-24.index"]
    # A run's ckpt-N loads whole (head included) into its model class, through checkpoints.load;
    # into another class (same head shapes), only the encoder.
    from bert_tf import checkpoints
    from bert_tf.modeling import BertTokenClassifier

    again = BertClassifier(tiny_config(), 2)
    report = checkpoints.load(again, str(tmp_path / "run" / "checkpoints" / "ckpt-24"))
    assert report.missing == [] and len(report.loaded) == len(trained.weights)
    for a, b in zip(trained.weights, again.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    tagger = BertTokenClassifier(tiny_config(), 2)
    report = checkpoints.load(tagger, str(tmp_path / "run" / "checkpoints"))
    assert len(report.missing) == 2 and len(report.loaded) == len(tagger.encoder.weights)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_mixed_precision_loss_close_to_fp32(tmp_path, dtype):
    table = _table()
    init = BertClassifier(tiny_config(), 2).get_weights()
    _, want = _run(tmp_path, "fp32", table, steps=12, init_weights=init)
    _, got = _run(tmp_path, dtype, table, steps=12, dtype=dtype, init_weights=init)
    assert got["nonfinite_steps"] == 0
    assert abs(got["loss"] - want["loss"]) < 0.05, (got["loss"], want["loss"])


def test_fp16_overflow_is_skipped_and_recovers(tmp_path):
    table = _table()
    # A loss scale of 2^24 overflows float16 gradients: those steps must be skipped (weights
    # untouched) while the scale halves, then training proceeds.
    model, summary = _run(tmp_path, "fp16", table, steps=20, dtype="fp16",
                          initial_loss_scale=2.0 ** 24, max_consecutive_nonfinite=30)
    import json
    logs = [json.loads(line) for line in
            (tmp_path / "fp16" / "metrics.jsonl").read_text().splitlines()]
    assert summary["nonfinite_steps"] > 0
    assert logs[0]["loss_scale"] < 2.0 ** 24
    assert math.isfinite(summary["loss"])
    assert all(np.isfinite(w.numpy()).all() for w in model.weights)
    assert logs[-1]["nonfinite_steps"] == summary["nonfinite_steps"] < 20
    # Skipped steps advance the schedule with the step: the last step runs at the schedule's
    # rate for step 20 (not for step 20 - skipped), and the optimizer counted all 20.
    last_rate = float(optimization.WarmupLinearDecay(1e-3, 20, 1)(19))
    assert logs[-1]["learning_rate"] == pytest.approx(last_rate)  # the rate of step 20
    reader = tf.train.load_checkpoint(str(tmp_path / "fp16" / "checkpoints" / "ckpt-20"))
    iterations = reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")
    assert int(iterations) == int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == 20


def test_micro_batches_draw_disjoint_dropout_seeds():
    """Micro-batch m's dropout layers draw seeds that micro-batch m+1 never draws again, even
    for a layer called twice per forward pass (the block's hidden dropout)."""
    from bert_tf.training.step import SEED_STRIDE, seed_dropout, seed_variables

    model = BertClassifier(tiny_config(), 2)
    batch = _table().batch(np.arange(4), 32)
    seed_vars = seed_variables(model)
    assert seed_vars
    drawn, calls = {}, []
    for m in (0, 1):
        seed_dropout(seed_vars, np.int64(5), tf.constant(m, tf.int64))
        model(batch, training=True)
        drawn[m] = {(int(v.numpy()[0]), c) for v in seed_vars
                    for c in range(m * SEED_STRIDE, int(v.numpy()[1]))}
        calls += [int(v.numpy()[1]) - m * SEED_STRIDE for v in seed_vars]
    assert max(calls) >= 2  # some layer is called twice: the case a stride of 1 got wrong
    assert drawn[0] and drawn[1] and not drawn[0] & drawn[1]


@pytest.mark.parametrize("update", ["cpu", pytest.param("gpu", marks=pytest.mark.slow)])
def test_xla_compiled_step_and_update_match_eager_kernels(tmp_path, monkeypatch, update):
    """--use_xla compiles the grad step, and on a GPU the optimizer update too (norm, clip,
    AdamW, the non-finite skip): same weights as the uncompiled run; fp16's overflow skip still
    works. "gpu" compiles the update here as a GPU run would."""
    from bert_tf.training import step

    assert step.compile_update(True) == bool(tf.config.list_logical_devices("GPU"))
    assert not step.compile_update(False)
    if update == "gpu":
        monkeypatch.setattr(step, "compile_update", lambda use_xla: bool(use_xla))
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    table = _table()
    plain, _ = _run(tmp_path, "plain", table, config, steps=6)
    xla, _ = _run(tmp_path, "xla", table, config, steps=6, use_xla=True)
    for a, b in zip(plain.weights, xla.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-5)
    _, summary = _run(tmp_path, "xla16", table, config, steps=12, dtype="fp16", use_xla=True,
                      initial_loss_scale=2.0 ** 24, max_consecutive_nonfinite=30)
    assert 0 < summary["nonfinite_steps"] < 12 and math.isfinite(summary["loss"])


def test_diverging_run_stops_with_advice(tmp_path):
    table = _table()

    def nan_loss(model, batch):
        return classification_loss(model, batch) * float("nan")

    set_dtype("fp32")
    model = BertClassifier(tiny_config(), 2)
    before = [w.numpy().copy() for w in model.weights]
    settings = TrainSettings(output_dir=str(tmp_path / "nan"), train_batch_size=8,
                             num_train_steps=50, learning_rate=1e-3, num_warmup_steps=1,
                             max_consecutive_nonfinite=3)
    source = records.table_batches(table, 8, settings.seed, max_seq_length=64)
    with pytest.raises(TrainingError, match="lower --learning_rate") as err:
        train(model, nan_loss, source, settings, Distributed(False), progress=False)
    # More than 3 in a row: the 4th consecutive bad step stops it, and the flag is named.
    assert str(err.value).startswith("4 consecutive steps with non-finite gradients up to step 4")
    assert "--max_consecutive_nonfinite" in str(err.value)
    for w, b in zip(model.weights, before):  # no NaN step was ever applied
        np.testing.assert_array_equal(w.numpy(), b)


def test_resume_from_checkpoint_matches_uninterrupted(tmp_path):
    table = _table()
    """A run restarted from its step-4 checkpoint ends bit-identical to the uninterrupted one
    (weights, optimizer slots, schedule, data position and dropout masks all resume)."""
    full, _ = _run(tmp_path, "full", table, steps=10, save_checkpoints_steps=4)
    import shutil
    part = tmp_path / "part"
    shutil.copytree(tmp_path / "full", part)
    for f in (part / "checkpoints").glob("ckpt-8*"):
        f.unlink()
    for f in (part / "checkpoints").glob("ckpt-10*"):
        f.unlink()
    (part / "checkpoints" / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-4"\nall_model_checkpoint_paths: "ckpt-4"\n')
    resumed, summary = _run(tmp_path, "part", table, steps=10, save_checkpoints_steps=4)
    assert summary["step"] == 10
    for a, b in zip(full.weights, resumed.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# -- stopping on a signal ----------------------------------------------------------------------------

def _stop_script(tmp_path, body: str) -> str:
    import textwrap

    path = tmp_path / "stop.py"
    path.write_text("import os, signal, sys, time\n"
                    "from bert_tf.training.preemption import StopRequest\n"
                    + textwrap.dedent(body))
    return str(path)


def _run_and_signal(script, delay, signum):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    def shell_like_signals():
        # The child starts as a shell would start it: nothing blocked, SIGINT and SIGTERM at
        # their defaults. A blocked or ignored signal is inherited through exec, and twice a
        # full CI run under load hung here (60 s) as if SIGINT never arrived.
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)

    env = dict(os.environ, PYTHONPATH=str(REPO))
    inherited = (signal.pthread_sigmask(signal.SIG_BLOCK, []), signal.getsignal(signal.SIGINT))
    proc = subprocess.Popen([sys.executable, script], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=shell_like_signals)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(delay)
    sent = time.monotonic()
    proc.send_signal(signum)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"no exit within 60 s of {signal.Signals(signum).name}; the test "
                             f"process had blocked {inherited[0]}, SIGINT handler "
                             f"{inherited[1]}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, time.monotonic() - sent, out, err


def test_the_grace_period_counts_from_the_signal_even_inside_a_long_tensorflow_call(tmp_path):
    """The main thread is inside one TensorFlow call of a minute (Python runs no signal
    handler until it returns; a hung allreduce looks the same): the watchdog still sees SIGTERM
    at once, and the process exits 143 when the grace runs out, long before the call ends."""
    import signal

    script = _stop_script(tmp_path, """
        import tensorflow as tf

        @tf.function
        def long_call():
            def body(i, x):
                return i + 1, tf.matmul(x, x) / 256.0
            return tf.while_loop(lambda i, x: i < 200000, body,
                                 (tf.constant(0), tf.ones([256, 256])))

        with StopRequest(grace_seconds=1.0):
            long_call.get_concrete_function()
            print("ready", flush=True)
            long_call()
        print("the call ended", flush=True)
    """)
    code, seconds, out, err = _run_and_signal(script, 0.3, signal.SIGTERM)
    assert code == 143 and "the call ended" not in out, (code, out, err)
    assert 0.9 < seconds < 10, seconds
    assert "SIGTERM: stopping at the end of this step" in err
    assert "no step boundary within 1 s of SIGTERM" in err


def test_the_first_ctrl_c_is_a_request_and_the_second_interrupts(tmp_path):
    import signal

    script = _stop_script(tmp_path, """
        with StopRequest(grace_seconds=0) as request:
            print("ready", flush=True)
            while not request.requested:
                time.sleep(0.01)
            print("requested", request.signum, flush=True)
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            except KeyboardInterrupt:
                print("interrupted", flush=True)
    """)
    code, _, out, err = _run_and_signal(script, 0.2, signal.SIGINT)
    assert code == 0, err
    assert out.split("\n")[:2] == [f"requested {int(signal.SIGINT)}", "interrupted"], out


def test_a_stop_during_evaluation_cuts_it_short_and_stops_at_the_next_step(tmp_path):
    """A stop requested while the chief evaluates: the evaluation ends at its next batch
    instead of running on (the grace would run out), and the run stops at the next step
    boundary with a checkpoint of it."""
    import signal

    from bert_tf.training import loop
    from bert_tf.training.preemption import Preempted

    table = _table()
    seen = []

    def eval_fn(step):
        def endless():
            os_kill_sent = False
            while True:
                if not os_kill_sent:
                    import os
                    os.kill(os.getpid(), signal.SIGTERM)
                    os_kill_sent = True
                seen.append(step)
                yield {"x": tf.zeros([1])}

        return loop.evaluate(None, lambda model, batch: {"n": (tf.constant(1.0),
                                                                tf.constant(1.0))}, endless())

    with pytest.raises(Preempted) as err:
        _run(tmp_path, "eval", table, steps=10, save_checkpoints_steps=100,
             eval_fn_and_every=(eval_fn, 3))
    assert err.value.signum == signal.SIGTERM and err.value.step == 4
    assert len(seen) < 5  # cut short at once, not run for ever
    assert (tmp_path / "eval" / "checkpoints" / "ckpt-4.index").exists()
