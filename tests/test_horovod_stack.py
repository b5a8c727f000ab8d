"""The Horovod build works with this TensorFlow and Keras 3 variables (two Gloo ranks on CPU),
in the way DESIGN.md prescribes: broadcast `v.value`, grouped_allreduce of plain gradients
(densified: embedding gradients arrive as IndexedSlices)."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

hvd = pytest.importorskip("horovod.tensorflow", reason="Horovod not installed: run `make horovod`")

WORKER = r"""
import os, numpy as np, tensorflow as tf, keras
import horovod.tensorflow as hvd
hvd.init()
from bert_tf.modeling import BertClassifier
from tests.conftest import tiny_config, random_batch
keras.utils.set_random_seed(100 + hvd.rank())          # different initial weights per rank
model = BertClassifier(tiny_config(), 2)
hvd.broadcast_variables([v.value for v in model.variables], root_rank=0)
batch = random_batch(tiny_config(), seed=hvd.rank())   # different data per rank
with tf.GradientTape() as tape:
    loss = tf.reduce_mean(model(batch, training=False)["logits"] ** 2)
grads = tape.gradient(loss, model.trainable_variables)
# Embedding gradients are IndexedSlices; Horovod 0.28.1's grouped_allreduce fails on a list mixing
# them with dense tensors, so densify first (NVIDIA's BERT does the same: sparse_as_dense).
grads = [tf.convert_to_tensor(g) for g in grads]
avg = hvd.grouped_allreduce(grads, op=hvd.Average)
out = os.environ["OUT"]
np.savez(f"{out}/rank{hvd.rank()}.npz", weights=np.concatenate([w.numpy().ravel() for w in model.weights]),
         grad=np.concatenate([g.numpy().ravel() for g in grads]),
         avg=np.concatenate([g.numpy().ravel() for g in avg]))
"""


def test_two_gloo_ranks_broadcast_and_average(tmp_path):
    import numpy as np

    horovodrun = shutil.which("horovodrun") or os.path.join(os.path.dirname(sys.executable),
                                                            "horovodrun")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, PYTHONPATH=str(REPO), OUT=str(tmp_path), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([horovodrun, "--gloo", "-np", "2", "-H", "localhost:2",
                           sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    np.testing.assert_array_equal(r0["weights"], r1["weights"])  # broadcast reached rank 1
    assert not np.allclose(r0["grad"], r1["grad"])  # the ranks saw different data
    np.testing.assert_allclose(r0["avg"], (r0["grad"] + r1["grad"]) / 2, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(r0["avg"], r1["avg"])


TRAIN_WORKER = r"""
import os, sys, numpy as np, keras
from bert_tf.data import records
from bert_tf.training.distributed import Distributed
from bert_tf.training.loop import TrainSettings, train
from bert_tf.training.tasks import classification_loss
from bert_tf.modeling import BertClassifier
from tests.conftest import tiny_config
from tests.test_training import _table
use_hvd, batch, out = sys.argv[1] == "1", int(sys.argv[2]), sys.argv[3]
dist = Distributed(use_hvd)
keras.utils.set_random_seed(100 + dist.rank)   # rank 1 starts elsewhere: the broadcast must fix it
model = BertClassifier(tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0), 2)
settings = TrainSettings(output_dir=out, train_batch_size=batch, num_train_steps=8,
                         learning_rate=1e-3, num_warmup_steps=1, log_steps=4)
source = records.table_batches(_table(), batch, settings.seed, rank=dist.rank,
                               num_workers=dist.size, max_seq_length=64)
train(model, classification_loss, source, settings, dist, progress=False)
np.save(f"{out}/weights-rank{dist.rank}.npy", np.concatenate([w.numpy().ravel() for w in model.weights]))
"""


def test_two_ranks_stay_identical_and_match_one_process_with_the_same_global_batch(tmp_path):
    import numpy as np

    horovodrun = shutil.which("horovodrun") or os.path.join(os.path.dirname(sys.executable),
                                                            "horovodrun")
    script = tmp_path / "train_worker.py"
    script.write_text(TRAIN_WORKER)
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    two = tmp_path / "two"
    proc = subprocess.run([horovodrun, "--gloo", "-np", "2", "-H", "localhost:2",
                           sys.executable, str(script), "1", "4", str(two)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    one = tmp_path / "one"
    proc = subprocess.run([sys.executable, str(script), "0", "8", str(one)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = np.load(two / "weights-rank0.npy"), np.load(two / "weights-rank1.npy")
    np.testing.assert_array_equal(r0, r1)
    np.testing.assert_allclose(r0, np.load(one / "weights-rank0.npy"), atol=1e-5)
    # only the chief writes checkpoints and logs
    assert (two / "metrics.jsonl").exists()
    assert len(list((two / "checkpoints").glob("*.index"))) == 1
