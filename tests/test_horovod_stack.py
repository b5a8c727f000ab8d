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
