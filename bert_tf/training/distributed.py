"""Horovod, behind one small object; the only module that imports horovod.

Keras 3 variables lack `.ref()`, which `hvd.DistributedGradientTape` needs, so gradients are
computed with a plain tape and averaged here with `grouped_allreduce`. Embedding gradients arrive
as IndexedSlices; Horovod 0.28.1's grouped_allreduce fails on a list mixing them with dense
tensors, and a dense allreduce is what large-scale BERT recipes use anyway, so they are densified.
"""

from __future__ import annotations

import tensorflow as tf


class Distributed:
    """rank/size/is_chief and the collectives; a single process when use_horovod is False."""

    def __init__(self, use_horovod: bool = False):
        self.use_horovod = use_horovod
        self.hvd = None
        self.rank, self.size, self.local_rank = 0, 1, 0
        if use_horovod:
            try:
                import horovod.tensorflow as hvd
            except ImportError as e:
                raise RuntimeError(
                    "--use_horovod needs Horovod built against this TensorFlow: run `make "
                    f"horovod` (import failed: {e})") from None
            hvd.init()
            self.hvd = hvd
            self.rank, self.size, self.local_rank = hvd.rank(), hvd.size(), hvd.local_rank()
            gpus = tf.config.list_physical_devices("GPU")
            if gpus:  # one GPU per process, chosen by local rank
                tf.config.set_visible_devices(gpus[self.local_rank % len(gpus)], "GPU")
                tf.config.experimental.set_memory_growth(gpus[self.local_rank % len(gpus)], True)

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    def broadcast_variables(self, variables) -> None:
        """Rank 0's values (fresh or restored) to every rank."""
        if self.hvd is not None and self.size > 1:
            import keras
            # A Keras 3 variable wraps the tf.Variable Horovod can assign: pass `.value`.
            self.hvd.broadcast_variables(
                [v.value if isinstance(v, keras.Variable) else v for v in variables],
                root_rank=0)

    def average(self, tensors: list) -> list:
        tensors = [tf.convert_to_tensor(t) for t in tensors]
        if self.hvd is None or self.size == 1:
            return tensors
        return self.hvd.grouped_allreduce(tensors, op=self.hvd.Average)

    def average_scalar(self, value):
        if self.hvd is None or self.size == 1:
            return value
        return self.hvd.allreduce(tf.convert_to_tensor(value), op=self.hvd.Average)

    def barrier(self) -> None:
        if self.hvd is not None and self.size > 1:
            self.hvd.allreduce(tf.constant(0.0), name="barrier")
