"""Pre-training records at scale: the per-shard index (against TensorFlow's own reading of the
records), the epoch order, per-worker reads, constant-time resume, corruption found where it is
read, verify, and the index_records.py command. Records are written with TensorFlow's
TFRecordWriter or by create_pretraining_data from real text, and read back with
tf.data.TFRecordDataset as the oracle."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, shared

S, P = 32, 5
INDEX_SCRIPT = str(REPO / "index_records.py")


def write_uid_records(path, n, first_uid=0, seed=0):
    """n records in Google's schema, of varied lengths (so offsets are irregular); record k
    carries uid first_uid + k in input_ids[1]."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)

    def ints(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x) for x in v]))

    with tf.io.TFRecordWriter(str(path)) as w:
        for k in range(n):
            length = int(rng.integers(4, S + 1))
            ids = np.zeros(S, np.int64)
            ids[:length] = rng.integers(5, 99, length)
            ids[0], ids[1] = 2, first_uid + k
            mask = (np.arange(S) < length).astype(np.int64)
            w.write(tf.train.Example(features=tf.train.Features(feature={
                "input_ids": ints(ids), "input_mask": ints(mask),
                "segment_ids": ints(np.zeros(S)), "masked_lm_positions": ints([1] * P),
                "masked_lm_ids": ints([7] * P),
                "masked_lm_weights": tf.train.Feature(float_list=tf.train.FloatList(
                    value=[1.0] * P)),
                "next_sentence_labels": ints([k % 2])})).SerializeToString())
    return str(path)


def uid_files(root, files=3, per_file=64):
    return [write_uid_records(os.path.join(root, f"part-{f}.tfrecord"), per_file,
                              first_uid=f * per_file, seed=f) for f in range(files)]


def uids(batch):
    return np.asarray(batch["input_ids"])[:, 1].tolist()


def tf_records(files):
    import tensorflow as tf

    return [r.numpy() for r in tf.data.TFRecordDataset(list(files))]


# -- the index -------------------------------------------------------------------------------------

def test_index_of_tensorflow_records_reads_what_tensorflow_reads(tmp_path):
    from bert_tf.data import record_index, records

    files = uid_files(str(tmp_path))
    recs = records.open_pretraining_records(files, S, P, progress=False)  # builds the indexes
    for path in files:
        ix = record_index.load_index(path)
        assert ix.records == 64 and ix.header["file_size"] == os.path.getsize(path)
        assert ix.header["max_seq_length"] == S and ix.header["max_predictions_per_seq"] == P
        assert ix.header["masked"] is True and ix.header["vocab"] is None
        assert os.path.getsize(record_index.index_path(path)) < 2000
    assert recs.records == 192
    assert recs.read(0, 192)[0] == tf_records(files)  # every record, across file boundaries
    assert recs.read(60, 70)[0] == tf_records(files)[60:70]


def test_create_pretraining_data_writes_the_index_a_scan_would_build(tmp_path):
    """The writer's own index (offsets counted as it writes, the vocabulary's fingerprint)
    equals what scanning the shard gives; real text, real vocabulary."""
    from bert_tf.data import record_index, records
    from bert_tf.data.pretraining import PretrainingOptions, create_pretraining_data

    vocab = shared("vocab", "uncased_vocab.txt")
    summary = create_pretraining_data(
        str(shared("corpus", "python_docs_heldout.txt")), str(tmp_path / "out.tfrecord"),
        str(vocab), options=PretrainingOptions(max_seq_length=64, max_predictions_per_seq=10,
                                               dupe_factor=1),
        num_workers=1, num_output_shards=2, show_progress=False)
    files = records.expand_files(str(tmp_path / "out.tfrecord*"))
    assert len(files) == 2  # the .idx and .summary.json files are not records
    fingerprint = record_index.vocab_fingerprint(str(vocab))
    assert fingerprint["size"] == 30522
    for path in files:
        ix = record_index.load_index(path)
        np.testing.assert_array_equal(ix.offsets, record_index.scan_offsets(path))
        assert ix.header["vocab"] == fingerprint
        assert ix.header["created_by"] == "create_pretraining_data.py"
        assert (ix.header["max_seq_length"], ix.header["max_predictions_per_seq"]) == (64, 10)
    recs = records.open_pretraining_records(files, 64, 10)
    assert recs.records == summary["instances"]
    assert recs.read(0, recs.records)[0] == tf_records(files)


def test_vocab_fingerprint_is_the_tokens_not_the_bytes(tmp_path):
    from bert_tf.data.record_index import vocab_fingerprint

    a = tmp_path / "a.txt"
    a.write_bytes(b"[PAD]\n[UNK]\nhello\n")
    b = tmp_path / "b.txt"
    b.write_bytes(b"[PAD]\r\n[UNK]\r\nhello")  # CRLF, no final newline: the same ids
    c = tmp_path / "c.txt"
    c.write_bytes(b"[PAD]\n[UNK]\nworld\n")
    assert vocab_fingerprint(str(a)) == vocab_fingerprint(str(b))
    assert vocab_fingerprint(str(a)) != vocab_fingerprint(str(c))


def test_stale_index_names_shard_index_and_command(tmp_path):
    from bert_tf.data import records

    path = write_uid_records(tmp_path / "a.tfrecord", 20)
    records.open_pretraining_records([path], S, P, progress=False)
    with open(path, "ab") as f:  # the shard changed after its index was made
        f.write(b"\0" * 100)
    with pytest.raises(records.RecordError) as err:
        records.open_pretraining_records([path], S, P, progress=False)
    message = str(err.value)
    assert message.startswith(f"{path} has ") and f"{path}.idx was made for" in message
    assert "python index_records.py build --rebuild" in message


# -- the epoch order -------------------------------------------------------------------------------

@pytest.mark.parametrize("n,block", [(1, 4), (7, 4), (100, 8), (101, 8), (64, 64), (1000, 1),
                                     (12345, 64)])
def test_every_record_once_per_epoch_and_random_access(n, block):
    from bert_tf.data.record_order import EpochOrder, KeyedPermutation

    order = EpochOrder(n, block, seed=3)
    epochs = [order.records(e, 0, n) for e in range(3)]
    for full in epochs:
        assert sorted(full.tolist()) == list(range(n))
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = int(rng.integers(0, n))
        b = int(rng.integers(a, n + 1))
        np.testing.assert_array_equal(order.records(1, a, b), epochs[1][a:b])
    if n >= 4 * block:
        assert not np.array_equal(epochs[0], epochs[1])  # another order every epoch
        assert not np.array_equal(epochs[0], EpochOrder(n, block, seed=4).records(0, 0, n))
        # Blocks are read whole: positions [k B, (k + 1) B) are consecutive records (blocks
        # before the partial one).
        first_block = epochs[0][:block]
        assert np.all(np.diff(first_block) == 1) or n % block
    perm = KeyedPermutation(1000, [1, 2])(np.arange(1000))  # a real shuffle of 1000
    assert sorted(perm.tolist()) == list(range(1000)) and not np.array_equal(perm, np.arange(1000))


@pytest.mark.parametrize("n,block", [(256, 8), (263, 8), (1000, 64)])
def test_blocks_are_whole_runs_and_the_partial_block_moves(n, block):
    """Every block of positions is B consecutive records starting at a multiple of B; the
    partial block (n % B records) is consecutive too, and its place changes with the epoch."""
    from bert_tf.data.record_order import EpochOrder

    order = EpochOrder(n, block, seed=5)
    full, tail = divmod(n, block)
    places = set()
    for epoch in range(8):
        records = order.records(epoch, 0, n)
        position = 0
        while position < n:
            first = int(records[position])
            size = tail if first == full * block else block
            run = records[position:position + size]
            np.testing.assert_array_equal(run, np.arange(first, first + size))
            assert first % block == 0
            if size == tail and tail:
                places.add(position)
            position += size
    if tail:
        assert len(places) > 1  # not always last (nor always at the same place)


# -- workers, resume -------------------------------------------------------------------------------

@pytest.mark.parametrize("block", [4, 64])
def test_eight_simulated_workers_read_an_eighth_each_and_cover_every_record_once(tmp_path,
                                                                                 block):
    from bert_tf.data import records

    files = uid_files(str(tmp_path), per_file=128)  # 384 records: 12 steps of 8 workers x 4
    total_bytes = sum(os.path.getsize(f) for f in files)
    seen, steps_by_rank = [], []
    for rank in range(8):
        recs = records.open_pretraining_records(files, S, P, progress=False)
        # No read-ahead beyond one micro-batch, so the bytes are those of the epoch.
        source = records.pretraining_batches(recs, 4, seed=11, rank=rank, num_workers=8,
                                             block_records=block, threads=1, prefetch=1)
        assert source.steps_per_epoch == 12
        stream = source(0)
        steps = [uids(next(stream)[1]) for _ in range(12)]
        steps_by_rank.append(steps)
        seen += [u for s in steps for u in s]
        # 12 micro-batches and the one read ahead: about 13/12 of an eighth.
        assert recs.bytes_read <= 1.25 * total_bytes / 8, (rank, recs.bytes_read)
    assert sorted(seen) == list(range(384))  # the union: every record exactly once
    # The same global batches as one worker accumulating 8 micro-batches of 4.
    recs = records.open_pretraining_records(files, S, P, progress=False)
    stream = records.pretraining_batches(recs, 4, seed=11, accumulation=8,
                                         block_records=block)(0)
    for step in range(12):
        micro = [uids(next(stream)[1]) for _ in range(8)]
        assert micro == [steps_by_rank[r][step] for r in range(8)]


def test_resume_reads_only_the_batch_it_resumes_at(tmp_path):
    from bert_tf.data import records

    files = uid_files(str(tmp_path), files=4, per_file=100)
    recs = records.open_pretraining_records(files, S, P, progress=False)
    record_bytes = sum(os.path.getsize(f) for f in files) / 400
    source = records.pretraining_batches(recs, 8, seed=2, threads=1, prefetch=1)
    per_epoch = source.steps_per_epoch  # 50
    stream = source(0)
    epoch = [uids(next(stream)[1]) for _ in range(per_epoch + 2)]
    for start in (0, per_epoch // 2, int(0.95 * per_epoch), per_epoch + 1):
        recs.bytes_read = 0
        index, batch = next(source(start))
        assert index == start and uids(batch) == epoch[start]
        # The batch of 8 records and the one read ahead, never the records before them.
        assert recs.bytes_read < 2 * 8 * record_bytes * 1.5, (start, recs.bytes_read)


# -- corruption ------------------------------------------------------------------------------------

def _flip_middle_byte(path):
    data = bytearray(open(path, "rb").read())
    middle = len(data) // 2
    data[middle] ^= 0x5A
    open(path, "wb").write(bytes(data))
    return middle


def test_a_flipped_byte_is_named_with_file_and_offset_or_skipped_and_counted(tmp_path):
    from bert_tf.data import record_index, records

    files = uid_files(str(tmp_path), files=2, per_file=64)
    recs = records.open_pretraining_records(files, S, P, progress=False)
    middle = _flip_middle_byte(files[1])
    offsets = record_index.load_index(files[1]).offsets
    record_start = int(offsets[np.searchsorted(offsets, middle, side="right") - 1])
    source = records.pretraining_batches(recs, 8, seed=0)
    with pytest.raises(records.CorruptRecordError) as err:
        stream = source(0)
        for _ in range(source.steps_per_epoch):
            next(stream)
    assert err.value.path == files[1] and err.value.offset == record_start
    assert str(err.value).startswith(f"{files[1]}: the record at byte {record_start:,} is "
                                     "corrupt")
    assert "--skip_corrupt_records" in str(err.value)
    skipping = records.pretraining_batches(recs, 8, seed=0, skip_corrupt=True)
    stream = skipping(0)
    rows = sum(len(uids(next(stream)[1])) for _ in range(skipping.steps_per_epoch))
    assert rows == 127 and skipping.stats() == {"corrupt_records_skipped": 1}


def test_verify_lists_bad_crcs_and_ids_outside_the_vocabulary(tmp_path):
    from bert_tf.data import records

    good = write_uid_records(tmp_path / "good.tfrecord", 30)
    assert records.verify_records([good], vocab_size=99, progress=False)["problem_count"] == 0
    flipped = write_uid_records(tmp_path / "flipped.tfrecord", 30)
    records.ensure_indexes([flipped], progress=False)  # indexed when written, then damaged
    _flip_middle_byte(flipped)
    result = records.verify_records([good, flipped], vocab_size=99, progress=False)
    assert result["records"] == 60 and result["problem_count"] == 1
    assert result["problems"][0]["file"] == flipped
    assert result["problems"][0]["what"].startswith(("data CRC mismatch",
                                                     "frame header CRC mismatch",
                                                     "its frame length disagrees"))
    # uids 90..119 sit in input_ids[1]: those from 99 on are outside a vocabulary of 99.
    high = write_uid_records(tmp_path / "high.tfrecord", 30, first_uid=90)
    result = records.verify_records([high], vocab_size=99, progress=False)
    assert result["problem_count"] == 21
    assert all("input_ids outside the vocabulary" in p["what"] for p in result["problems"])


# -- index_records.py ------------------------------------------------------------------------------

def run_index(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, INDEX_SCRIPT, "--noprogress", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_index_records_script(tmp_path):
    files = uid_files(str(tmp_path), files=2, per_file=40)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] +
                               [f"w{i}" for i in range(94)]) + "\n")
    glob = f"{tmp_path}/part-*"
    built = run_index("build", f"--input_file={glob}", f"--vocab_file={vocab}")
    assert built.returncode == 0, built.stderr
    assert re.search(r"2 file\(s\), 80 records, .*indexed 2 in", built.stdout), built.stdout
    from bert_tf.data import record_index
    assert record_index.load_index(files[0]).header["vocab"]["size"] == 99
    again = run_index("build", f"--input_file={glob}")
    assert "indexed 0" in again.stdout and "2 already up to date" in again.stdout
    ok = run_index("verify", f"--input_file={glob}")
    assert ok.returncode == 0 and "0 problem(s)" in ok.stdout, ok.stdout + ok.stderr
    _flip_middle_byte(files[1])
    bad = run_index("verify", f"--input_file={glob}")
    assert bad.returncode == 1
    assert re.search(re.escape(files[1]) + r": byte [\d,]+: ", bad.stdout), bad.stdout
    assert "1 problem(s)" in bad.stdout
    for args, message in [(["check", f"--input_file={glob}"], "give one command"),
                          (["build"], "--input_file is required"),
                          (["build", f"--input_file={tmp_path}/none-*"], "no file matches")]:
        proc = run_index(*args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("index_records.py: error: ")
        assert message in proc.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_records_in_a_read_only_folder_get_their_index_under_index_dir(tmp_path):
    _read_only_case(tmp_path)


def test_read_only_folder_simulated(tmp_path, monkeypatch):
    """As above, for root (which os.access reports every folder writable to): the folder's
    writability is what decides."""
    from bert_tf.data import record_index

    real = os.access
    monkeypatch.setattr(record_index.os, "access",
                        lambda p, mode: False if str(p).endswith("ro") else real(p, mode))
    _read_only_case(tmp_path)


def _read_only_case(tmp_path):
    from bert_tf.data import record_index, records

    ro = tmp_path / "ro"
    ro.mkdir()
    files = [write_uid_records(ro / "a.tfrecord", 20), write_uid_records(ro / "b.tfrecord", 20)]
    ro.chmod(0o555)
    try:
        with pytest.raises(records.RecordError, match="cannot be written: pass --index_dir"):
            records.open_pretraining_records(files, S, P, progress=False)
        recs = records.open_pretraining_records(files, S, P, progress=False,
                                                index_dir=str(tmp_path / "idx"))
        assert recs.records == 40 and recs.read(0, 40)[0] == tf_records(files)
        assert not os.path.exists(record_index.index_path(files[0]))
        assert os.path.exists(record_index.fallback_index_path(files[0], str(tmp_path / "idx")))
    finally:
        ro.chmod(0o755)


def test_more_files_than_kept_open_are_read_and_closed(tmp_path, monkeypatch):
    """Beyond the descriptors it keeps open, a read opens and closes its own (threads may be
    reading through the kept ones, so they are never closed under them)."""
    from bert_tf.data import pretraining_reader, records

    monkeypatch.setattr(pretraining_reader, "_MAX_OPEN", 1)
    files = uid_files(str(tmp_path), files=4, per_file=16)
    recs = records.open_pretraining_records(files, S, P, progress=False)
    stream = records.pretraining_batches(recs, 8, seed=1, block_records=4, threads=2)(0)
    seen = sorted(u for _ in range(8) for u in uids(next(stream)[1]))
    assert seen == list(range(64))
    stream.close()

    def open_record_files():
        out = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                out.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                pass
        return [p for p in out if p in files]

    assert len(recs._fds) == 1 and len(open_record_files()) == 1
    recs.close()
    assert open_record_files() == []


def test_a_damaged_index_is_named_not_the_shard(tmp_path):
    """The index is checked too: a damaged header or offsets give one RecordError naming the
    index and the rebuild command, never a traceback or a healthy shard called corrupt."""
    import struct

    from bert_tf.data import record_index, records

    path = write_uid_records(tmp_path / "a.tfrecord", 40)
    records.ensure_indexes([path], progress=False)
    ipath = record_index.index_path(path)
    good = open(ipath, "rb").read()
    (length,) = struct.unpack("<Q", good[8:16])
    damaged = {
        "huge header length": good[:8] + struct.pack("<Q", 1 << 62) + good[16:],
        "header not an object": good[:16] + b"[1]".ljust(length) + good[16 + length:],
        "a field missing": good[:16] + good[16:16 + length].replace(b'"masked"', b'"maskex"')
        + good[16 + length:],
    }
    for what, data in damaged.items():
        open(ipath, "wb").write(data)
        with pytest.raises(records.RecordError, match="rebuild it with python index_records.py "
                                                      "build --rebuild") as err:
            records.open_pretraining_records([path], S, P, progress=False)
        assert str(err.value).startswith(ipath), what
    # Offsets: the high byte of record 20's start flipped.
    data = bytearray(good)
    data[16 + length + 8 * 20 + 7] ^= 0x40
    open(ipath, "wb").write(bytes(data))
    recs = records.open_pretraining_records([path], S, P, progress=False)
    with pytest.raises(records.RecordError) as err:
        recs.read(0, 40)
    assert str(err.value).startswith(f"{ipath}: the offsets of records")
    assert not isinstance(err.value, records.CorruptRecordError)
    assert "index_records.py build --rebuild" in str(err.value)
    with pytest.raises(records.RecordError, match="the offsets of records"):  # verify too
        records.verify_records([path], progress=False)


def test_indexing_one_shard_from_several_processes_at_once(tmp_path):
    """Ranks (or jobs) that index the same shard at the same time each write their own
    temporary file and rename it into place: no one fails."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    path = write_uid_records(tmp_path / "a.tfrecord", 3000)
    code = ("import sys\nfrom bert_tf.data import record_index\n"
            "for _ in range(20):\n    record_index.build_index(sys.argv[1])\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, path], env=env,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    from bert_tf.data import record_index
    assert record_index.load_index(path).records == 3000
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
