"""Tests for create_pretraining_data: CachedTokenizer, TF-free TFRecords, instances and the script.

Real text from ../shared/data (skipped when absent); records are read back with TensorFlow's own
parser (tf.data.TFRecordDataset + tf.io.parse_single_example) with Google's schema.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, shared

UNCASED = ("vocab", "uncased_vocab.txt")
CASED = ("vocab", "cased_vocab.txt")
HELDOUT = ("corpus", "python_docs_heldout.txt")
SCRIPT = str(REPO / "create_pretraining_data.py")

TRICKY = [
    "Héllo Wörld, ÀÉÎÕÜ çà et là — “quoted” ‘text’…",
    "中文字符和日本語のテキスト，以及한국어 텍스트。",
    "control\x00chars\x07here\u200b and\ufeffzero width\x1f",
    "tab\tnew\nline\r\ncarriage \u00a0nbsp \u3000ideographic space \u2028 sep",
    "x" * 250 + " short " + "é" * 201 + "," + "y" * 200,
    "Punctuation¡¿«»‹›‐‑‒–—―⁅⁆⸗⸚⹂⹒⹝ and $^`+<=>|~ ascii",
    "ΣΟΦΟΣ ΟΔΟΣ final sigma, straße, İstanbul, ﬁ ligature, ½ fraction",
    "emoji 😀👍🏽 astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𠀋𠀀 and math 𝟘𝟙",
    "",
    "   ",
    "don't stop-believing (1999) [CLS] [SEP] [MASK] ##ing",
]


# ---- CachedTokenizer -------------------------------------------------------------------------


def _lines(*parts) -> list[str]:
    # Universal newlines, as FullTokenizer's users read them (WikiText-2 has CRLF line ends).
    return shared(*parts).read_text(encoding="utf-8").split("\n")


@pytest.mark.parametrize("vocab,lower", [(UNCASED, True), (CASED, False)], ids=["uncased", "cased"])
def test_cached_tokenizer_gives_full_tokenizers_ids(vocab, lower):
    from bert_tf.tokenization import FullTokenizer
    from bert_tf.tokenization.cached import CachedTokenizer

    full = FullTokenizer(shared(*vocab), lower)
    cached = CachedTokenizer(shared(*vocab), lower, max_cached_words=5_000)  # clears often
    texts = _lines("corpus", "wikitext2_test.raw") + _lines(*HELDOUT) + TRICKY
    want = [full.convert_tokens_to_ids(full.tokenize(t)) for t in texts]
    got = cached.tokenize_to_ids(texts)
    differing = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
    assert not differing, f"{len(differing)} texts differ, first {texts[differing[0]][:200]!r}"
    assert cached.tokenize(TRICKY[0]) == full.tokenize(TRICKY[0])
    assert len(cached._memo) <= 5_000


def test_tf_free_modules_do_not_import_tensorflow():
    code = ("import sys\n"
            "import bert_tf.tokenization.cached, bert_tf.data.tfrecord, bert_tf.data.pretraining\n"
            "import bert_tf.data.record_index, bert_tf.data.record_order\n"
            "import bert_tf.data.pretraining_reader\n"
            "import bert_tf.cli\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ---- TFRecords without TensorFlow ------------------------------------------------------------


def test_example_encoder_matches_tensorflow(tmp_path):
    import tensorflow as tf

    from bert_tf.data.tfrecord import ExampleEncoder, read_records, write_records

    rng = np.random.default_rng(0)
    rows = 50
    features = {
        "input_ids": rng.integers(0, 30522, (rows, 16)),
        "big_and_negative": rng.integers(-2**62, 2**62, (rows, 3)),
        "small": rng.integers(0, 2, (rows, 1)),
        "masked_lm_weights": rng.random((rows, 5)).astype(np.float32),
    }
    encoder = ExampleEncoder(list(features), float_features={"masked_lm_weights"})
    path = tmp_path / "ours.tfrecord"
    with open(path, "wb") as f:
        write_records(f, encoder.encode(features))

    def feature(name, values):
        if name == "masked_lm_weights":
            return tf.train.Feature(float_list=tf.train.FloatList(value=values))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    spec = {name: tf.io.FixedLenFeature([array.shape[1]],
                                        tf.float32 if name == "masked_lm_weights" else tf.int64)
            for name, array in features.items()}
    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    assert len(records) == rows
    for i, record in enumerate(records):
        expected = tf.train.Example(features=tf.train.Features(
            feature={name: feature(name, array[i]) for name, array in features.items()}))
        assert tf.train.Example.FromString(record) == expected
        parsed = tf.io.parse_single_example(record, spec)
        for name, array in features.items():
            np.testing.assert_array_equal(parsed[name].numpy(), array[i])
    assert list(read_records(str(path))) == records
    data = bytearray(path.read_bytes())
    data[30] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="CRC"):
        list(read_records(str(path)))


# ---- Google's rules in closed form ------------------------------------------------------------


def _google_truncate(tokens_a, tokens_b, max_num_tokens, rng):
    """Google's truncate_seq_pair, as its loop does it (the oracle for the closed form)."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        trunc = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del trunc[0]
        else:
            trunc.pop()


def test_truncation_takes_what_googles_loop_takes():
    import random

    from bert_tf.data.pretraining.instances import truncate_seq_pair

    rng = random.Random(0)
    for la in range(1, 30):
        for lb in range(1, 30):
            for max_num_tokens in (2, 5, 17, 40):
                a, b = list(range(la)), list(range(100, 100 + lb))
                want_a, want_b = list(a), list(b)
                _google_truncate(want_a, want_b, max_num_tokens, rng)
                got_a, got_b, removed = truncate_seq_pair(a, b, max_num_tokens, rng)
                assert (len(got_a), len(got_b)) == (len(want_a), len(want_b))
                assert removed == la + lb - len(got_a) - len(got_b)
                # What is left is a contiguous run of each side.
                assert got_a == a[got_a[0]:got_a[0] + len(got_a)] if got_a else not want_a
                assert got_b == b[got_b[0] - 100:got_b[0] - 100 + len(got_b)]
    # The front/back choice is a fair coin per removed token: fronts ~ Binomial(n, 1/2).
    fronts = [truncate_seq_pair(list(range(60)), [1], 21, rng)[0][0] for _ in range(2000)]
    assert abs(np.mean(fronts) - 20) < 0.5


# ---- Instances on real text ------------------------------------------------------------------


def _create(tmp_path, name, input_file=None, **kwargs):
    from bert_tf.data.pretraining import PretrainingOptions, create_pretraining_data

    option_names = {f for f in PretrainingOptions.__dataclass_fields__}
    options = PretrainingOptions(**{k: v for k, v in kwargs.items() if k in option_names})
    rest = {k: v for k, v in kwargs.items() if k not in option_names}
    rest.setdefault("num_workers", 2)
    rest.setdefault("num_output_shards", 2)
    output = rest.pop("output_file", tmp_path / name / "out.tfrecord")
    summary = create_pretraining_data(
        str(input_file or shared(*HELDOUT)), str(output), str(shared(*UNCASED)), True, options,
        show_progress=False, **rest)
    return summary, [s["file"] for s in summary["shards"]]


def _read(files, max_seq_length=128, max_predictions_per_seq=20, dynamic_masking=False):
    """Every record, parsed by TensorFlow with Google's schema: dict name -> array [N, L]."""
    import tensorflow as tf

    from bert_tf.data.pretraining import feature_lengths

    lengths = feature_lengths(max_seq_length, max_predictions_per_seq, dynamic_masking)
    spec = {name: tf.io.FixedLenFeature([length], tf.dtypes.as_dtype(dtype))
            for name, (length, dtype) in lengths.items()}
    records = list(tf.data.TFRecordDataset(files).as_numpy_iterator())
    example = tf.train.Example.FromString(records[0])
    kinds = {name: f.WhichOneof("kind") for name, f in example.features.feature.items()}
    assert kinds == {name: ("float_list" if dtype == "float32" else "int64_list")
                     for name, (_, dtype) in lengths.items()}
    parsed = collections.defaultdict(list)
    for record in records:
        for name, value in tf.io.parse_single_example(record, spec).items():
            parsed[name].append(value.numpy())
    return {name: np.stack(values) for name, values in parsed.items()}


@pytest.fixture(scope="module")
def vocab():
    from bert_tf.tokenization.wordpiece import load_vocab

    return load_vocab(shared(*UNCASED))


@pytest.fixture(scope="module")
def heldout_token_text():
    """The held-out corpus as ",id,id,...," per document, to find token runs in."""
    from bert_tf.tokenization import FullTokenizer

    full = FullTokenizer(shared(*UNCASED), True)
    documents, current = [], []
    for line in _lines(*HELDOUT) + [""]:
        if not line.strip():
            if current:
                documents.append("," + ",".join(map(str, current)) + ",")
            current = []
        else:
            current += full.convert_tokens_to_ids(full.tokenize(line))
    return "\n".join(documents)


@pytest.fixture(scope="module")
def masked_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("masked")
    summary, files = _create(tmp, "wordpiece", dupe_factor=2)
    return summary, _read(files)


@pytest.fixture(scope="module")
def whole_word_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wwm")
    summary, files = _create(tmp, "wwm", dupe_factor=2, do_whole_word_mask=True)
    return summary, _read(files)


def _originals(data):
    """input_ids with every masked position given back its masked_lm_ids: int64 [N, S]."""
    original = data["input_ids"].copy()
    rows, cols = np.nonzero(data["masked_lm_weights"])
    original[rows, data["masked_lm_positions"][rows, cols]] = data["masked_lm_ids"][rows, cols]
    return original


def test_schema_dtypes_and_layout(masked_run, vocab):
    summary, data = masked_run
    n = summary["instances"]
    assert n > 1000 and data["input_ids"].shape == (n, 128)
    assert data["masked_lm_weights"].dtype == np.float32
    assert data["next_sentence_labels"].shape == (n, 1)
    original = _originals(data)
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    for i in range(n):
        length = int(data["input_mask"][i].sum())
        assert data["input_mask"][i, :length].all() and not data["input_mask"][i, length:].any()
        assert (data["input_ids"][i, length:] == 0).all()
        assert original[i, 0] == cls
        seps = np.flatnonzero(original[i, :length] == sep)
        assert len(seps) == 2 and seps[1] == length - 1 and seps[0] >= 2, seps
        segments = data["segment_ids"][i]
        assert not segments[:seps[0] + 1].any() and segments[seps[0] + 1:length].all()
        assert not segments[length:].any()
        k = int(data["masked_lm_weights"][i].sum())
        positions = data["masked_lm_positions"][i]
        assert (np.diff(positions[:k]) > 0).all() and not positions[k:].any()
        assert not data["masked_lm_ids"][i, k:].any() and not data["masked_lm_weights"][i, k:].any()
        assert not np.isin(positions[:k], [0, seps[0], seps[1]]).any()


def test_masked_lm_ids_are_the_original_tokens(masked_run, heldout_token_text, vocab):
    """Segments A and B, masks undone, are runs of the tokenized corpus (so labels are right)."""
    _, data = masked_run
    original = _originals(data)
    sep = vocab["[SEP]"]
    for i in range(0, len(original), 7):
        length = int(data["input_mask"][i].sum())
        first_sep = int(np.flatnonzero(original[i] == sep)[0])
        for run in (original[i, 1:first_sep], original[i, first_sep + 1:length - 1]):
            assert "," + ",".join(map(str, run)) + "," in heldout_token_text, i


def test_masking_rates_and_next_sentence_balance(masked_run, vocab):
    summary, data = masked_run
    lengths = data["input_mask"].sum(axis=1)
    masked = data["masked_lm_weights"].sum(axis=1)
    uncapped = np.round(lengths * 0.15) <= 20
    fraction = masked[uncapped].sum() / (lengths[uncapped] - 3).sum()
    assert 0.14 < fraction < 0.17, fraction
    rows, cols = np.nonzero(data["masked_lm_weights"])
    positions = data["masked_lm_positions"][rows, cols]
    shown = data["input_ids"][rows, positions]
    labels = data["masked_lm_ids"][rows, cols]
    by_mask = np.mean(shown == vocab["[MASK]"])
    kept = np.mean(shown == labels)
    assert abs(by_mask - 0.8) < 0.02 and abs(kept - 0.1) < 0.015, (by_mask, kept)
    assert abs(1 - by_mask - kept - 0.1) < 0.015
    nsp = data["next_sentence_labels"].mean()
    assert 0.45 < nsp < 0.56, nsp
    # The summary says the same.
    stats = summary["masked_lm"]
    assert stats["masked_tokens"] == masked.sum()
    assert abs(stats["fraction_replaced_by_mask"] - by_mask) < 1e-9
    assert abs(summary["next_sentence"]["fraction_random_next"] - nsp) < 1e-9
    assert abs(stats["masked_fraction_uncapped"] - fraction) < 1e-9
    assert sum(s["instances"] for s in summary["shards"]) == summary["instances"]
    assert summary["documents"] == 67 and summary["sentences"] == 3304
    assert summary["truncation"]["truncated_instances"] > 0


def test_the_masking_stage_alone_follows_googles_rules():
    """mask_tokens on a synthetic batch, no text, no file: only real non-special tokens are
    masked, round(length x masked_lm_prob) of them (at least 1, at most P), positions sorted,
    labels the original ids, and [MASK] / kept / random at 80 / 10 / 10."""
    from bert_tf.data.pretraining import PretrainingOptions, VocabIds, mask_tokens
    from bert_tf.data.pretraining.options import COUNTERS

    rng = np.random.default_rng(1)
    I, S, P = 4000, 64, 10
    ids = VocabIds(cls=101, sep=102, mask=103, random_ids=np.arange(1000, 2000),
                   is_suffix=np.zeros(30522, bool))
    len_a = rng.integers(1, 25, I)
    lengths = len_a + rng.integers(1, 30, I) + 3
    positions = np.arange(S)
    valid = positions < lengths[:, None]
    tokens = np.where(valid, rng.integers(2000, 3000, (I, S)), 0)
    tokens[:, 0] = 101
    tokens[np.arange(I), len_a + 1] = 102
    tokens[np.arange(I), lengths - 1] = 102
    original = tokens.copy()
    counts = dict.fromkeys(COUNTERS, 0)
    options = PretrainingOptions(max_seq_length=S, max_predictions_per_seq=P)
    out = mask_tokens(tokens, valid, len_a, lengths, options, ids, rng, counts)
    weights = out["masked_lm_weights"]
    n = weights.sum(axis=1).astype(int)
    np.testing.assert_array_equal(n, np.minimum(P, np.maximum(1, np.round(lengths * 0.15))))
    rows, cols = np.nonzero(weights)
    where = out["masked_lm_positions"][rows, cols]
    assert (original[rows, where] >= 2000).all()  # never [CLS], [SEP] or padding
    padded_sorted = np.where(weights > 0, out["masked_lm_positions"], S + np.arange(P))
    assert (np.diff(padded_sorted, axis=1) > 0).all()  # sorted, as Google sorts them
    np.testing.assert_array_equal(out["masked_lm_ids"][rows, cols], original[rows, where])
    now = tokens[rows, where]
    total = len(now)
    assert abs((now == 103).sum() / total - 0.8) < 0.02
    assert abs((now == original[rows, where]).sum() / total - 0.1) < 0.015
    assert abs(((now >= 1000) & (now < 2000)).sum() / total - 0.1) < 0.015
    unmasked = np.ones_like(valid)
    unmasked[rows, where] = False
    np.testing.assert_array_equal(tokens[unmasked], original[unmasked])
    assert counts["masked_tokens"] == total


def test_whole_word_masking_never_masks_part_of_a_word(whole_word_run, vocab):
    summary, data = whole_word_run
    is_suffix = np.zeros(len(vocab), bool)
    for token, index in vocab.items():
        is_suffix[index] = token.startswith("##")
    original = _originals(data)
    sep, cls = vocab["[SEP]"], vocab["[CLS]"]
    suffixes_masked = 0
    for i in range(len(original)):
        length = int(data["input_mask"][i].sum())
        k = int(data["masked_lm_weights"][i].sum())
        masked = set(data["masked_lm_positions"][i, :k].tolist())
        # Words as Google groups them: a "##" piece joins the previous candidate (skipping the
        # [SEP] between A and B, as Google's loop does).
        words, previous = [], None
        for p in range(1, length - 1):
            if original[i, p] in (sep, cls):
                continue
            if is_suffix[original[i, p]] and previous is not None:
                words[-1].append(p)
            else:
                words.append([p])
            previous = p
        for word in words:
            hit = [p in masked for p in word]
            assert all(hit) or not any(hit), (i, word, masked)
            suffixes_masked += len(word) > 1 and all(hit)
    assert suffixes_masked > 50
    assert 0.13 < summary["masked_lm"]["masked_fraction_uncapped"] < 0.17


def test_same_seed_and_shards_give_identical_bytes_with_1_or_2_workers(tmp_path):
    # Small windows and buffers, so that documents leave the window (by count and by tokens)
    # and the shuffle buffer overflows within this small corpus.
    small = dict(dupe_factor=1, num_output_shards=3, document_window=6, window_tokens=3000,
                 shuffle_buffer=50)
    _, one = _create(tmp_path, "one", num_workers=1, **small)
    _, two = _create(tmp_path, "two", num_workers=2, **small)
    _, other_seed = _create(tmp_path, "seed", random_seed=1, **small)
    for a, b, c in zip(one, two, other_seed):
        with open(a, "rb") as fa, open(b, "rb") as fb, open(c, "rb") as fc:
            data = fa.read()
            assert data == fb.read() and data != fc.read()
    assert len(one) == 3 and not any(p.endswith(".partial") for p in os.listdir(tmp_path / "one"))


def test_dynamic_masking_writes_no_masked_lm_features(tmp_path):
    summary, files = _create(tmp_path, "dynamic", dupe_factor=1, dynamic_masking=True,
                             num_output_shards=1)
    data = _read(files, dynamic_masking=True)
    assert set(data) == {"input_ids", "input_mask", "segment_ids", "next_sentence_labels"}
    assert len(data["input_ids"]) == summary["instances"] and "masked_lm" not in summary
    assert (data["input_ids"] != 103).all()  # no [MASK]


def test_sentence_splitting_of_paragraphs(tmp_path):
    summary, _ = _create(tmp_path, "paragraphs", shared("corpus", "python_docs_raw_train.txt"),
                         input_format="paragraphs", dupe_factor=1, max_seq_length=256,
                         dynamic_masking=True)
    assert summary["documents"] == 1025  # as python_docs_train.txt
    assert abs(summary["sentences"] / 76497 - 1) < 0.01  # its sentences, split by hand
    assert 0.45 < summary["next_sentence"]["fraction_random_next"] < 0.56


def test_wikitext_documents_are_articles(tmp_path):
    path = shared("corpus", "wikitext2_test.raw")
    # Articles start at " = Title = " (not " = = Section = = "); count those with some text
    # before the next one.
    articles, has_text = 0, False
    for line in path.read_text(encoding="utf-8").splitlines() + [" = End = "]:
        line = line.strip()
        heading = line.startswith("= ") and line.endswith(" =")
        if heading and not line.startswith("= ="):
            articles += has_text
            has_text = False
        elif line and not heading:
            has_text = True
    summary, files = _create(tmp_path, "wikitext", path, input_format="wikitext", dupe_factor=1)
    assert summary["documents"] == articles > 50
    assert summary["sentences"] > 20 * articles
    assert len(_read(files)["input_ids"]) == summary["instances"]


# ---- The script: flags and bad input ---------------------------------------------------------


def _run_script(tmp_path, *args, input_file=None, vocab=None):
    output = tmp_path / "out" / "data.tfrecord"
    argv = [sys.executable, SCRIPT, f"--input_file={input_file or shared(*HELDOUT)}",
            f"--output_file={output}", f"--vocab_file={vocab or shared(*UNCASED)}",
            "--dupe_factor=1", "--noprogress", *args]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    return result, output


def test_script_writes_shards_and_summary(tmp_path):
    result, output = _run_script(tmp_path, "--num_output_shards=2", "--max_seq_length=64",
                                 "--max_predictions_per_seq=10", "--do_whole_word_mask")
    assert result.returncode == 0, result.stderr
    summary = json.loads(output.with_name("data.tfrecord.summary.json").read_text())
    names = sorted(os.listdir(output.parent))
    assert names == ["data.tfrecord-00000-of-00002", "data.tfrecord-00000-of-00002.idx",
                     "data.tfrecord-00001-of-00002", "data.tfrecord-00001-of-00002.idx",
                     "data.tfrecord.summary.json"]
    names = [n for n in names if not n.endswith(".idx")]
    assert summary["flags"]["do_whole_word_mask"] is True
    assert summary["flags"]["max_seq_length"] == 64
    data = _read([str(output.parent / n) for n in names[:2]], 64, 10)
    assert len(data["input_ids"]) == summary["instances"]
    # An existing output is not replaced without --overwrite_output.
    again, _ = _run_script(tmp_path, "--num_output_shards=2", "--max_seq_length=64",
                           "--max_predictions_per_seq=10")
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1] == (
        f"create_pretraining_data.py: error: {output}-00000-of-00002 exists; pass "
        "--overwrite_output to replace it (or choose another --output_file)")


def _bad_vocab(tmp_path, drop):
    lines = shared(*UNCASED).read_text(encoding="utf-8").splitlines()
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(t for t in lines if t != drop) + "\n", encoding="utf-8")
    return path


def _write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", [
    "empty_file", "binary_file", "nul_bytes", "glob_matches_nothing", "one_sentence_documents",
    "vocab_without_mask", "vocab_without_sep", "max_predictions_too_small", "max_seq_length_4",
])
def test_bad_input_is_one_clear_line_and_leaves_nothing(tmp_path, case):
    args, input_file, vocab = [], None, None
    if case == "empty_file":
        input_file, expected = _write(tmp_path, "empty.txt", b""), "empty.txt: no text"
    elif case == "binary_file":
        good = b"".join(shared(*HELDOUT).read_bytes().splitlines(keepends=True)[:40])
        input_file = _write(tmp_path, "binary.txt", good + b"\xff\xfe\x80binary\n")
        expected = "binary.txt:41: not UTF-8 text"
    elif case == "nul_bytes":
        input_file = _write(tmp_path, "nul.txt", b"A sentence.\nAnother\x00one.\n")
        expected = "nul.txt:2: NUL byte (byte 19 of the file): this looks like a binary file"
    elif case == "glob_matches_nothing":
        input_file, expected = tmp_path / "nothing-*.txt", "nothing-*.txt: no such file"
    elif case == "one_sentence_documents":
        input_file = _write(tmp_path, "ones.txt", b"One sentence.\n\nAnother one.\n\nA third.\n")
        expected = "every document has a single sentence"
    elif case in ("vocab_without_mask", "vocab_without_sep"):
        token = "[MASK]" if case == "vocab_without_mask" else "[SEP]"
        vocab, expected = _bad_vocab(tmp_path, token), f"vocab.txt has no {token} token"
    elif case == "max_predictions_too_small":
        args, expected = ["--max_predictions_per_seq=10"], "--max_predictions_per_seq=19"
    else:
        args, expected = ["--max_seq_length=4"], "--max_seq_length=4: need at least 5"
    result, output = _run_script(tmp_path, "--num_output_shards=2", *args,
                                 input_file=input_file, vocab=vocab)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("create_pretraining_data.py: error: ") and expected in last, last
    assert "Traceback" not in result.stderr
    assert not output.parent.exists() or os.listdir(output.parent) == []


def _tagged_corpus(path, vocab, documents=240, sentences=6):
    """Documents whose every token is one word of the vocab, different per document: the word
    at a record's position 1 (A's first token) says which document the record came from."""
    words = [w for w in vocab if w.isalpha() and w.isascii() and len(w) > 3][:documents]
    with open(path, "w", encoding="utf-8") as f:
        for word in words:
            for k in range(sentences):
                f.write(" ".join([word] * (8 + k)) + "\n")
            f.write("\n")
    return {vocab[w]: i for i, w in enumerate(words)}


@pytest.mark.parametrize("shuffle_buffer", [50, 100_000], ids=["spilled", "in-memory"])
def test_output_order_is_a_global_shuffle(tmp_path, vocab, shuffle_buffer):
    """Google shuffles all instances before writing. A file written through a bounded buffer
    instead runs through the corpus in order (Spearman ~0.99 here with a 50-record buffer):
    the position of a record in its shard must not predict which document it came from."""
    from scipy.stats import spearmanr

    doc_of = _tagged_corpus(tmp_path / "tagged.txt", vocab)
    summary, files = _create(tmp_path, "out", input_file=tmp_path / "tagged.txt", dupe_factor=3,
                             shuffle_buffer=shuffle_buffer, num_output_shards=2)
    for path in files:
        originals = _originals(_read([path]))
        docs = [doc_of[int(t)] for t in originals[:, 1]]
        assert len(docs) > 600
        rho = spearmanr(np.arange(len(docs)), docs).statistic
        assert abs(rho) < 0.1, (path, rho)
        # Neighbours come from the same document no more often than chance allows.
        same = np.mean(np.asarray(docs[1:]) == np.asarray(docs[:-1]))
        assert same < 5 * 2 / len(doc_of), (path, same)
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        [os.path.basename(f) + e for f in files for e in ("", ".idx")] +
        ["out.tfrecord.summary.json"])


def test_waiting_documents_are_capped_by_wordpieces():
    """Long documents: the window (processed and waiting documents) stays near window_tokens
    WordPieces instead of holding document_window // 2 waiting documents whatever their size.
    The instance stage alone: no vocabulary, no file."""
    import random

    from bert_tf.data.pretraining import InstanceMaker, PretrainingOptions
    from bert_tf.data.pretraining.options import COUNTERS

    options = PretrainingOptions(dupe_factor=1, document_window=2048, window_tokens=20_000)
    counts = dict.fromkeys(COUNTERS, 0)
    batches = []
    maker = InstanceMaker(options, random.Random(0), counts, sink=batches.append, batch_size=256)
    rng = np.random.default_rng(0)
    document = [list(rng.integers(1000, 2000, 40)) for _ in range(100)]  # 4,000 WordPieces
    peak = 0
    for _ in range(60):
        maker.add_document(document)
        assert maker.window_tokens == sum(len(s) for d in maker.window for s in d)
        peak = max(peak, maker.window_tokens)
    maker.flush()
    assert peak <= 20_000 + 4_000
    assert counts["documents"] == 60
    # Every instance handed over, in batches of at least 256 but the last; each fits.
    assert all(len(b) >= 256 for b in batches[:-1]) and maker.instances == []
    assert all(len(a) + len(b) <= 128 - 3 for batch in batches for a, b, _ in batch)


# ---- Interrupted runs ------------------------------------------------------------------------


def test_leftovers_of_a_killed_run_are_removed_not_appended_to(tmp_path):
    """A kill -9 leaves NAME.partial files and NAME.partial.shuffle/ buckets; the next run must
    start from nothing (it once appended to the buckets: more records than the summary said).
    Oracle: the bytes of a clean run."""
    from bert_tf.data.tfrecord import iter_framed

    kwargs = dict(dupe_factor=2, shuffle_buffer=300)  # small buffer: shards spill to buckets
    _, clean = _create(tmp_path, "clean", **kwargs)
    out = tmp_path / "killed"
    out.mkdir()
    junk = b"".join(iter_framed(clean[0]))[:5000]
    for s in range(2):
        stale = out / f"out.tfrecord-{s:05d}-of-00002.partial"
        stale.write_bytes(b"stale")
        (out / (stale.name + ".shuffle")).mkdir()
        (out / (stale.name + ".shuffle") / "00").write_bytes(junk)
    (out / "out.tfrecord-00003-of-00004.partial").write_bytes(b"a killed 4-shard run")
    summary, files = _create(tmp_path, "killed", **kwargs)
    assert sorted(os.listdir(out)) == [
        "out.tfrecord-00000-of-00002", "out.tfrecord-00000-of-00002.idx",
        "out.tfrecord-00001-of-00002", "out.tfrecord-00001-of-00002.idx",
        "out.tfrecord.summary.json"]
    assert sum(1 for f in files for _ in iter_framed(f)) == summary["instances"]
    for a, b in zip(clean, files):
        assert open(a, "rb").read() == open(b, "rb").read()


def test_shards_of_another_shard_count_are_refused_then_replaced(tmp_path):
    """A glob over the output (FILE-*) must never mix two runs, and only files the earlier
    run's summary lists are ever deleted."""
    from bert_tf.errors import UsageError

    _, four = _create(tmp_path, "run", num_output_shards=4)
    with pytest.raises(UsageError, match=r"out.tfrecord.summary.json exists; pass "):
        _create(tmp_path, "run", num_output_shards=2)
    assert all(os.path.exists(f) for f in four)  # refused: nothing lost
    _, two = _create(tmp_path, "run", num_output_shards=2, overwrite_output=True)
    # The earlier run's shards went, their indexes with them.
    assert sorted(os.listdir(tmp_path / "run")) == sorted(
        [os.path.basename(f) + e for f in two for e in ("", ".idx")] +
        ["out.tfrecord.summary.json"])
    # A look-alike no summary lists is refused, even with --overwrite_output, and kept.
    stray = tmp_path / "run" / "out.tfrecord-00007-of-00009"
    stray.write_bytes(b"not ours")
    with pytest.raises(UsageError, match=r"out.tfrecord-00007-of-00009 exists and no .*"
                                         r"out.tfrecord.summary.json lists it"):
        _create(tmp_path, "run", num_output_shards=4, overwrite_output=True)
    assert stray.read_bytes() == b"not ours"
    # The input is never an output.
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(shared(*HELDOUT).read_bytes())
    with pytest.raises(UsageError, match="would overwrite the input file"):
        _create(tmp_path, "x", input_file=corpus, num_output_shards=None,
                output_file=str(corpus), overwrite_output=True)
    assert corpus.read_bytes() == shared(*HELDOUT).read_bytes()



def _start_interruptible(tmp_path):
    """The script on a corpus big enough to be mid-run after its workers open their shards;
    SIGINT as a terminal delivers it (to the whole process group). Returns (process, worker
    pids, output folder) once the .partial shards exist."""
    import signal
    import time

    corpus = tmp_path / "corpus.txt"
    text = shared("corpus", "python_docs_train.txt").read_text(encoding="utf-8")
    corpus.write_text((text + "\n") * 4, encoding="utf-8")
    out = tmp_path / "out"
    argv = [sys.executable, SCRIPT, f"--input_file={corpus}", f"--output_file={out}/data.tfrecord",
            f"--vocab_file={shared(*UNCASED)}", "--num_output_shards=2", "--num_workers=2",
            "--dupe_factor=5", "--noprogress"]
    proc = subprocess.Popen(argv, cwd=REPO, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while time.time() < deadline and not (
            out.is_dir() and sum(n.endswith(".partial") for n in os.listdir(out)) == 2):
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1]
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    workers = [int(p) for p in children.stdout.split()]
    return proc, workers, out


def _gone(pid, seconds=10.0) -> bool:
    import time

    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ")[1].startswith("Z"):  # exited, not yet reaped
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and pgrep")
def test_ctrl_c_stops_the_workers_and_leaves_nothing(tmp_path):
    import signal

    proc, workers, out = _start_interruptible(tmp_path)
    try:
        assert len(workers) >= 3  # 2 workers and the resource tracker
        os.killpg(proc.pid, signal.SIGINT)
        os.killpg(proc.pid, signal.SIGINT)  # impatient: a second one during the cleanup
        _, stderr = proc.communicate(timeout=30)  # it once hung here for ever
    finally:
        _kill_group(proc)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith(
        "create_pretraining_data.py: interrupted; no output was written")
    assert all(_gone(pid) for pid in workers)
    assert os.listdir(out) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and pgrep")
def test_sigterm_stops_the_workers_and_leaves_nothing(tmp_path):
    import signal

    proc, workers, out = _start_interruptible(tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)  # the main process only, as `kill PID` does
        _, stderr = proc.communicate(timeout=30)
    finally:
        _kill_group(proc)
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1].startswith(
        "create_pretraining_data.py: interrupted (signal SIGTERM); no output was written")
    assert all(_gone(pid) for pid in workers)
    assert os.listdir(out) == []


def _kill_group(proc):
    """A failed test leaves no process behind."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and pgrep")
def test_kill_9_of_the_main_process_takes_the_workers_down(tmp_path):
    import signal

    proc, workers, out = _start_interruptible(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    try:
        assert all(_gone(pid) for pid in workers), "orphaned workers kept running"
    finally:
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.parametrize("vocab,lower,warned", [
    (CASED, True, "looks cased"), (UNCASED, False, "looks uncased"), (UNCASED, True, None),
    (CASED, False, None)])
def test_a_vocab_of_the_other_case_is_warned_about(tmp_path, caplog, vocab, lower, warned):
    from bert_tf.data.pretraining import create_pretraining_data

    with caplog.at_level("WARNING", logger="bert_tf.data.pretraining"):
        create_pretraining_data(str(shared(*HELDOUT)), str(tmp_path / "out.tfrecord"),
                                str(shared(*vocab)), lower, num_workers=1, show_progress=False)
    messages = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if warned:
        assert len(messages) == 1 and warned in messages[0], messages
    else:
        assert messages == []
