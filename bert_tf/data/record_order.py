"""The order in which an epoch visits pre-training records: random access, constant memory.

Records are numbered 0..N-1 over all shards (shard by shard, in the sorted file order). An epoch
visits them in blocks of B consecutive records (`block_records`), the blocks in a random order
that is a function of (seed, epoch) alone:

    blocks 0..F-1 are the F = N // B full blocks; a partial block of the last N % B records,
    if any, goes to a slot drawn from (seed, epoch) among the F + 1 slots, so no record always
    comes last. Full blocks are placed by a keyed bijection of [0, F) (a 4-round Feistel
    network on the next power of two, cycle-walked back into range), so position p of the
    epoch maps to its record in O(1) time and memory: no permutation of the corpus is ever
    held, and resuming at 95% of an epoch costs what starting at 0% does.

Why blocks and not single records: a worker reads the records of its slice of each global
batch, and a slice is a run of consecutive positions, hence at most ceil(b / B) + 1 runs of
consecutive records on disk. With B >= the micro-batch, a worker's read for one micro-batch is
one or two sequential ranges (~40 KB at sequence 128 and b = 32), not b scattered 800-byte
reads: what blob storage and network file systems serve well. The mixing is still global:
a global batch of G records draws G / B blocks from anywhere in the corpus, and both Google's
and bert_tf's create_pretraining_data.py shuffle the instances before writing, so consecutive
records of a shard are unrelated. Records written in document order by another tool want
B = 1 (every record placed on its own; reads become random).
"""

from __future__ import annotations

import numpy as np

_ROUNDS = 4
_M1 = np.uint64(0xBF58476D1CE4E5B9)  # splitmix64's finaliser constants
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective 64-bit hash with good avalanche (uint64 arrays)."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


class KeyedPermutation:
    """A pseudo-random bijection of [0, n) chosen by `key` (a sequence of ints), evaluated on
    arrays: `perm(x)` for int arrays x with 0 <= x < n. Balanced Feistel network over 2h bits
    (4^h >= n) with cycle walking: values that land outside [0, n) are mapped again until they
    land inside, which keeps it a bijection of [0, n) (at most ~4 passes on average)."""

    def __init__(self, n: int, key):
        if n < 1:
            raise ValueError(f"a permutation of {n} elements")
        self.n = int(n)
        self.half = max(1, (max(self.n - 1, 1).bit_length() + 1) // 2)
        self.mask = np.uint64((1 << self.half) - 1)
        state = np.random.SeedSequence([int(k) for k in key]).generate_state(_ROUNDS, np.uint64)
        self.keys = [np.uint64(k) for k in state]

    def _once(self, x: np.ndarray) -> np.ndarray:
        h = np.uint64(self.half)
        left, right = x >> h, x & self.mask
        with np.errstate(over="ignore"):
            for k in self.keys:
                left, right = right, left ^ (_mix(right ^ k) & self.mask)
        return (left << h) | right

    def __call__(self, x) -> np.ndarray:
        x = np.asarray(x, np.uint64)
        if self.n == 1:
            return np.zeros(x.shape, np.int64)
        out = self._once(x)
        outside = out >= np.uint64(self.n)
        while outside.any():
            out[outside] = self._once(out[outside])
            outside = out >= np.uint64(self.n)
        return out.astype(np.int64)


class EpochOrder:
    """Position in an epoch -> global record number, for `num_records` records in blocks of
    `block_records`, as a function of (seed, epoch). See the module docstring.

    order = EpochOrder(N, block_records=64, seed=42)
    order.records(epoch, start, stop) -> int64 [stop - start], every record exactly once over
    positions [0, N) of an epoch."""

    def __init__(self, num_records: int, block_records: int, seed: int):
        if num_records < 1:
            raise ValueError("no records")
        if block_records < 1:
            raise ValueError(f"block_records={block_records} must be at least 1")
        self.num_records = int(num_records)
        self.block = int(block_records)
        self.seed = int(seed)
        self.full_blocks, self.tail = divmod(self.num_records, self.block)

    def _epoch(self, epoch: int):
        """(permutation of the full blocks or None, slot of the partial block)."""
        key = [self.seed & 0xFFFFFFFF, self.seed >> 32, int(epoch), 0x6274]
        perm = KeyedPermutation(self.full_blocks, key) if self.full_blocks else None
        slot = 0
        if self.tail and self.full_blocks:
            slot = int(np.random.default_rng(key + [1]).integers(0, self.full_blocks + 1))
        return perm, slot

    def records(self, epoch: int, start: int, stop: int) -> np.ndarray:
        """Global record numbers at positions [start, stop) of `epoch` (int64)."""
        if not 0 <= start <= stop <= self.num_records:
            raise ValueError(f"positions [{start}, {stop}) outside an epoch of "
                             f"{self.num_records} records")
        perm, slot = self._epoch(epoch)
        p = np.arange(start, stop, dtype=np.int64)
        out = np.empty_like(p)
        B = self.block
        tail_start = slot * B  # the partial block occupies [tail_start, tail_start + tail)
        in_tail = (p >= tail_start) & (p < tail_start + self.tail)
        out[in_tail] = self.full_blocks * B + (p[in_tail] - tail_start)
        rest = ~in_tail
        q = p[rest]
        q = np.where(q >= tail_start + self.tail, q - self.tail, q)  # skip over the tail block
        if perm is not None and len(q):
            out[rest] = perm(q // B) * B + q % B
        return out


def runs(records: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive record numbers -> [(first, stop), ...] ranges, in the given order."""
    if len(records) == 0:
        return []
    breaks = np.flatnonzero(np.diff(records) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(records)]])
    return [(int(records[a]), int(records[b - 1]) + 1) for a, b in zip(starts, stops)]
