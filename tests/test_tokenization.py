"""Tests for bert_tf.tokenization: Google's BERT tokenization, exactly.

The oracle is Hugging Face's `BertTokenizer` (transformers), the reference port of
google-research/bert's tokenization.py, with its three departures from Google undone:
it NFC-normalises text first (switched off here), caps words at 100 characters
instead of 200 (set to 200), and its public `tokenize` keeps "[CLS]"-like strings
whole and lower-cases before cleaning (so `_tokenize(..., split_special_tokens=True)`
is called instead). One departure stays: it drops every code point of category C*,
while Google drops only Cc and Cf and keeps private-use, unassigned and surrogate
ones; texts with those are compared with hand-written expectations instead.

Real data comes from ../shared/data (override with BERT_TF_SHARED_DATA); tests that
need it skip when it is absent. Hugging Face's ids for the shared corpora take ~30 s
to compute, so they are cached in pytest's cache directory, keyed by a hash of the
texts, vocabulary and transformers version (`pytest --cache-clear` recomputes them).

Slow tests (`-m slow`): every one of the 1.1M code points through FastTokenizer and
FullTokenizer, and the remaining GLUE tasks against Hugging Face.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
import unicodedata
from pathlib import Path

import pytest

from bert_tf.tokenization import (
    BasicTokenizer,
    FullTokenizer,
    WordpieceTokenizer,
    check_do_lower_case,
    load_vocab,
)

SHARED_DATA = Path(
    os.environ.get("BERT_TF_SHARED_DATA")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)
needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason=f"shared test data not found at {SHARED_DATA} (set BERT_TF_SHARED_DATA to its location)",
)

# case name -> (vocab file inside shared data, do_lower_case)
VOCABS = {"uncased": ("vocab/uncased_vocab.txt", True), "cased": ("vocab/cased_vocab.txt", False)}


# ---- Shared corpora ----------------------------------------------------------------


def _lines(relative_path: str) -> list[str]:
    # Universal newlines, as Google's readers use: WikiText-2 has CRLF line ends.
    return (SHARED_DATA / relative_path).read_text(encoding="utf-8").split("\n")


def _conll_sentences(relative_path: str) -> list[str]:
    """CoNLL-2003 sentences: the first column of each line, words joined by spaces."""
    sentences, words = [], []
    for line in _lines(relative_path) + [""]:
        if not line.strip():
            if words:
                sentences.append(" ".join(words))
                words = []
        elif not line.startswith("-DOCSTART-"):
            words.append(line.split(" ")[0])
    return sentences


def _tsv_columns(relative_path: str, columns: list[str | int], header: bool = True) -> list[str]:
    """The given columns (header names, or indices) of every row, column by column."""
    rows = [line.split("\t") for line in _lines(relative_path) if line]
    if header:
        names = [name.lstrip("\ufeff") for name in rows.pop(0)]
        columns = [names.index(c) if isinstance(c, str) else c for c in columns]
    return [row[c] for c in columns for row in rows]


CORPORA = {
    "wikitext2_test": lambda: _lines("corpus/wikitext2_test.raw"),
    "wikitext2_valid": lambda: _lines("corpus/wikitext2_valid.tokens"),
    "sample_text": lambda: _lines("corpus/sample_text.txt"),
    "conll2003_train": lambda: _conll_sentences("conll2003/eng.train"),
    "conll2003_testa": lambda: _conll_sentences("conll2003/eng.testa"),
    "conll2003_testb": lambda: _conll_sentences("conll2003/eng.testb"),
    "mrpc_train": lambda: _tsv_columns("glue/MRPC/train.tsv", ["#1 String", "#2 String"]),
    "mrpc_dev": lambda: _tsv_columns("glue/MRPC/dev.tsv", ["#1 String", "#2 String"]),
    "mrpc_test": lambda: _tsv_columns("glue/MRPC/test.tsv", ["#1 String", "#2 String"]),
}
# Only in the slow run: the other GLUE tasks.
MORE_CORPORA = {
    **{
        f"sst2_{split}": (lambda split=split: _tsv_columns(f"glue/SST-2/{split}.tsv", ["sentence"]))
        for split in ("train", "dev", "test")
    },
    **{
        # No header; the sentence is the 4th column.
        f"cola_{split}": (
            lambda split=split: _tsv_columns(f"glue/CoLA/{split}.tsv", [3], header=False)
        )
        for split in ("train", "dev")
    },
    "cola_test": lambda: _tsv_columns("glue/CoLA/test.tsv", ["sentence"]),
    **{
        f"{task.lower()}_{split}": (
            lambda task=task, split=split: _tsv_columns(
                f"glue/{task}/{split}.tsv", ["sentence1", "sentence2"]
            )
        )
        for task in ("RTE", "STS-B")
        for split in ("train", "dev", "test")
    },
}

_corpus_memo: dict[str, list[str]] = {}


def corpus(name: str) -> list[str]:
    if name not in _corpus_memo:
        _corpus_memo[name] = {**CORPORA, **MORE_CORPORA}[name]()
    return _corpus_memo[name]


def vocab_path(case: str) -> Path:
    return SHARED_DATA / VOCABS[case][0]


# ---- Tokenizers under test and the reference ----------------------------------------


@pytest.fixture(scope="module")
def full_tokenizers():
    return {case: FullTokenizer(vocab_path(case), lower) for case, (_, lower) in VOCABS.items()}


@pytest.fixture(scope="module")
def fast_tokenizers():
    from bert_tf.tokenization import FastTokenizer

    return {case: FastTokenizer(vocab_path(case), lower) for case, (_, lower) in VOCABS.items()}


class _UnicodedataWithoutNFC:
    """`unicodedata` for transformers' BasicTokenizer, minus the NFC step Google does not have."""

    def __getattr__(self, name):
        return getattr(unicodedata, name)

    @staticmethod
    def normalize(form, text):
        return text if form == "NFC" else unicodedata.normalize(form, text)


class HuggingFaceReference:
    """transformers.BertTokenizer with Google's behaviour; ids for whole corpora are cached."""

    CACHE_VERSION = 1  # bump when the way the reference is configured changes

    def __init__(self, monkeypatch, cache):
        self._monkeypatch = monkeypatch
        self._cache_dir = cache.mkdir("bert_tf_tokenization_hf_ids") if cache is not None else None
        self._tokenizers = {}

    def tokenizer(self, case: str):
        if case not in self._tokenizers:
            transformers = pytest.importorskip("transformers")
            from transformers.models.bert import tokenization_bert

            self._monkeypatch.setattr(tokenization_bert, "unicodedata", _UnicodedataWithoutNFC())
            hf = tokenization_bert.BertTokenizer(
                str(vocab_path(case)), do_lower_case=VOCABS[case][1]
            )
            hf.wordpiece_tokenizer.max_input_chars_per_word = 200  # Google's limit (HF: 100)
            # The patch must reach the code: with NFC, e + combining acute would become é.
            basic = tokenization_bert.BasicTokenizer(do_lower_case=False)
            if basic.tokenize("e\u0301") != ["e\u0301"]:
                pytest.fail(
                    f"transformers {transformers.__version__} still applies NFC; "
                    "update the reference patch"
                )
            self._tokenizers[case] = hf
        return self._tokenizers[case]

    def ids(self, case: str, text: str) -> list[int]:
        hf = self.tokenizer(case)
        return hf.convert_tokens_to_ids(hf._tokenize(text, split_special_tokens=True))

    def corpus_ids(self, case: str, name: str, texts: list[str]) -> list[list[int]]:
        import importlib.metadata

        key = hashlib.sha256()
        for part in (
            str(self.CACHE_VERSION),
            importlib.metadata.version("transformers"),
            sys.version.split()[0],  # unicodedata's tables come with Python
            vocab_path(case).read_text(encoding="utf-8"),
            "\x00".join(texts),
        ):
            key.update(part.encode("utf-8", "surrogatepass") + b"\x01")
        cached = None
        if self._cache_dir is not None:
            cached = self._cache_dir / f"{name}-{case}-{key.hexdigest()[:20]}.json.gz"
            try:
                return json.loads(gzip.decompress(cached.read_bytes()))
            except (OSError, EOFError, ValueError):  # absent or unreadable: recompute
                pass
        ids = [self.ids(case, text) for text in texts]
        if cached is not None:  # write-then-rename: parallel runs never read half a file
            partial = cached.with_suffix(f".{os.getpid()}.partial")
            partial.write_bytes(gzip.compress(json.dumps(ids).encode()))
            partial.replace(cached)
        return ids


@pytest.fixture(scope="module")
def hf_reference(request):
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield HuggingFaceReference(monkeypatch, getattr(request.config, "cache", None))


def full_ids(tokenizer: FullTokenizer, texts: list[str]) -> list[list[int]]:
    return [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text)) for text in texts]


def assert_same_ids(texts, got, want, got_name: str, want_name: str, tokenizer) -> None:
    """Fails with the first differing text and its tokens both ways."""
    assert len(got) == len(want) == len(texts)
    differing = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
    if not differing:
        return
    i = differing[0]
    g, w = got[i], want[i]
    at = next((k for k, (a, b) in enumerate(zip(g, w)) if a != b), min(len(g), len(w)))
    window = slice(max(0, at - 5), at + 10)
    pytest.fail(
        f"{got_name} and {want_name} differ on {len(differing)} of {len(texts)} texts. "
        f"First: text #{i} {texts[i][:300]!r}\n"
        f"  from token {at}: {got_name}: {tokenizer.convert_ids_to_tokens(g[window])}\n"
        f"  from token {at}: {want_name}: {tokenizer.convert_ids_to_tokens(w[window])}"
    )


# ---- Real data: FullTokenizer and FastTokenizer against Hugging Face ----------------


@needs_shared_data
@pytest.mark.parametrize("name", list(CORPORA))
@pytest.mark.parametrize("case", list(VOCABS))
def test_full_and_fast_match_huggingface_on_every_line(
    case, name, full_tokenizers, fast_tokenizers, hf_reference
):
    texts = corpus(name)
    want = hf_reference.corpus_ids(case, name, texts)
    _check_against(want, texts, full_tokenizers[case], fast_tokenizers[case])
    if name.startswith("wikitext2"):
        assert sum(map(len, want)) > 200_000  # the real file, not an empty read


@pytest.mark.slow
@needs_shared_data
@pytest.mark.parametrize("name", list(MORE_CORPORA))
@pytest.mark.parametrize("case", list(VOCABS))
def test_full_and_fast_match_huggingface_on_more_glue(
    case, name, full_tokenizers, fast_tokenizers, hf_reference
):
    texts = corpus(name)
    _check_against(hf_reference.corpus_ids(case, name, texts), texts, full_tokenizers[case],
                   fast_tokenizers[case])


def _check_against(want, texts, full, fast):
    assert_same_ids(texts, full_ids(full, texts), want, "FullTokenizer", "transformers", full)
    assert_same_ids(texts, fast.tokenize_to_ids(texts), want, "FastTokenizer", "transformers", full)


# ---- Every code point --------------------------------------------------------------
# FastTokenizer relies on tensorflow-text splitting (after `normalize`) exactly where
# Google does, with tensorflow-text's ICU tables; every character is tried in a few
# contexts, packed 256 to a text (each occurrence space-separated from the next).

PATTERNS = {"between_letters": "a{c}a", "alone": "{c}", "after_capital_umlaut": "\u00c4{c}"}


def _code_points(everything: bool) -> list[int]:
    """All code points, or (default run) the BMP plus every assigned astral code point
    except the private-use planes 15-16."""
    return [
        cp
        for cp in range(sys.maxunicode + 1)
        if everything or cp <= 0xFFFF or (cp < 0xF0000 and unicodedata.category(chr(cp)) != "Cn")
    ]


def _packed_texts(pattern: str, code_points: list[int]) -> list[str]:
    return [
        " ".join(pattern.format(c=chr(cp)) for cp in code_points[i : i + 256])
        for i in range(0, len(code_points), 256)
    ]


def _check_code_points(case, pattern, everything, full_tokenizers, fast_tokenizers):
    texts = _packed_texts(PATTERNS[pattern], _code_points(everything))
    full, fast = full_tokenizers[case], fast_tokenizers[case]
    want = full_ids(full, texts)
    got = fast.tokenize_to_ids(texts)
    assert_same_ids(texts, got, want, "FastTokenizer", "FullTokenizer", full)


@pytest.mark.parametrize("pattern", list(PATTERNS))
@needs_shared_data
@pytest.mark.parametrize("case", list(VOCABS))
def test_fast_matches_full_on_assigned_code_points(case, pattern, full_tokenizers, fast_tokenizers):
    _check_code_points(case, pattern, False, full_tokenizers, fast_tokenizers)


@pytest.mark.slow
@pytest.mark.parametrize("pattern", list(PATTERNS))
@needs_shared_data
@pytest.mark.parametrize("case", list(VOCABS))
def test_fast_matches_full_on_every_code_point(case, pattern, full_tokenizers, fast_tokenizers):
    _check_code_points(case, pattern, True, full_tokenizers, fast_tokenizers)


@needs_shared_data
@pytest.mark.parametrize("case", list(VOCABS))
def test_full_matches_huggingface_on_assigned_code_points(case, full_tokenizers, hf_reference):
    # Not private use (Co), unassigned (Cn) or surrogates (Cs): HF drops those, Google keeps them.
    code_points = [
        cp for cp in _code_points(False) if unicodedata.category(chr(cp)) not in ("Co", "Cn", "Cs")
    ]
    texts = _packed_texts(PATTERNS["between_letters"], code_points)
    full = full_tokenizers[case]
    want = hf_reference.corpus_ids(case, "assigned_code_points", texts)
    assert_same_ids(texts, full_ids(full, texts), want, "FullTokenizer", "transformers", full)


@needs_shared_data
def test_fast_tokenizer_knows_what_tf_text_misses(fast_tokenizers):
    # tensorflow-text's ICU predates these Unicode 13/14 punctuation marks; if it ever
    # learns them the list shrinks, which is fine, but they must still be split off.
    tokenizer = fast_tokenizers["uncased"]
    for char in tokenizer.missed_by_tf_text:
        assert tokenizer.tokenize(f"a{char}a") == tokenizer.convert_ids_to_tokens(
            tokenizer.convert_tokens_to_ids(["a", char, "a"])
        )


# ---- Hand-written edge cases ---------------------------------------------------------
# name -> (text, expected pieces); uncased vocab with do_lower_case=True, then cased/False.

UNCASED_EDGE_CASES = {
    "empty": ("", []),
    "only whitespace": (" \t\n\r\u3000\u00a0\u2028 ", []),
    "accents stripped when lower-casing": ("Héllo Wörld Ça", ["hello", "world", "ca"]),
    "combining accent stripped": ("e\u0301", ["e"]),
    "dotted capital I lower-cases to i": ("İstanbul", ["istanbul"]),
    "CJK ideographs are words": ("我爱北京abc", ["我", "[UNK]", "北", "京", "abc"]),
    "Hangul is not CJK (NFD jamo)": ("한국어", ["ᄒ", "##ᅡ", "##ᆫ", "##ᄀ", "##ᅮ", "##ᆨ", "##ᄋ", "##ᅥ"]),
    "controls, NUL, U+FFFD, zero-width space dropped": ("a\x00b\x01c\u200bd\ufffde\x7f", ["abc", "##de"]),
    "tab newline return are whitespace": ("a\tb\nc\rd", ["a", "b", "c", "d"]),
    "line separator splits": ("a\u2028b", ["a", "b"]),
    "ASCII symbols are punctuation": ("$5^2`+~", ["$", "5", "^", "2", "`", "+", "~"]),
    "Unicode punctuation": ("«hi»—ok…", ["«", "hi", "»", "—", "ok", "…"]),
    "apostrophe splits": ("don't", ["don", "'", "t"]),
    "special-token text is split": ("[CLS] x [SEP]", ["[", "cl", "##s", "]", "x", "[", "sep", "]"]),
    "greedy longest match first": ("unaffable", ["una", "##ffa", "##ble"]),
    "emoji and variation selector": ("I ❤️ 🤗!", ["i", "[UNK]", "[UNK]", "!"]),
    "unknown piece makes the whole word [UNK]": ("x🤗", ["[UNK]"]),
    "final sigma stays final sigma": ("ΟΔΥΣΣΕΥΣ", ["ο", "##δ", "##υ", "##σ", "##σ", "##ε", "##υ", "##ς"]),
    "sigma before a dropped control is not final": ("AΣ\x01B", ["a", "##σ", "##b"]),
    "no NFKC: one half and ellipsis kept": ("½ …", ["½", "…"]),
    "no NFKC: fi ligature kept": ("ﬁne", ["ﬁ", "##ne"]),
    "no NFKC: DZ caron has no canonical decomposition": ("Ǆ", ["[UNK]"]),
    "non-breaking hyphen is punctuation": ("a\u2011b", ["a", "\u2011", "b"]),
    "Greek question mark decomposes to ;": ("a\u037eb", ["a", ";", "b"]),
    "Unicode 14 punctuation (unknown to tensorflow-text)": ("a\u2e52b", ["a", "[UNK]", "b"]),
    "private use character kept": ("a\ue000b", ["[UNK]"]),
    "lone surrogate is a letter": ("a\ud800b c", ["[UNK]", "c"]),
    "201-character word is [UNK]": ("a" * 201, ["[UNK]"]),
}
CASED_EDGE_CASES = {
    "cased keeps accents": ("Héllo", ["H", "##é", "##llo"]),
    "cased keeps case": ("HELLO World", ["H", "##EL", "##L", "##O", "World"]),
    "cased keeps combining marks": ("e\u0301", ["e", "##\u0301"]),
    "cased CJK": ("我爱北京", ["[UNK]", "[UNK]", "北", "京"]),
    "cased 150 two-byte chars (300 bytes) are not too long": ("é" * 150, ["é"] + ["##é"] * 149),
    "cased 201 two-byte chars are [UNK]": ("é" * 201, ["[UNK]"]),
}
EDGE_CASES = {
    **{name: ("uncased", *case) for name, case in UNCASED_EDGE_CASES.items()},
    **{name: ("cased", *case) for name, case in CASED_EDGE_CASES.items()},
}
# transformers drops private-use, unassigned and surrogate code points; Google keeps them.
TRANSFORMERS_DIFFERS = {"private use character kept", "lone surrogate is a letter"}


@needs_shared_data
@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_edge_case(name, full_tokenizers, fast_tokenizers, hf_reference):
    case, text, expected = EDGE_CASES[name]
    assert full_tokenizers[case].tokenize(text) == expected
    assert fast_tokenizers[case].tokenize(text) == expected
    hf_tokens = hf_reference.tokenizer(case)._tokenize(text, split_special_tokens=True)
    assert (hf_tokens == expected) == (name not in TRANSFORMERS_DIFFERS), hf_tokens


@needs_shared_data
@pytest.mark.parametrize("case", list(VOCABS))
def test_word_length_limit_is_200_characters(case, full_tokenizers, fast_tokenizers):
    full, fast = full_tokenizers[case], fast_tokenizers[case]
    letter = "a"
    for text, unknown in [
        (letter * 200, False),
        (letter * 201, True),
        (f"{letter * 150}.{letter * 150}", False),  # punctuation splits it into two words
        (f"x {letter * 300} y", True),
    ]:
        pieces = full.tokenize(text)
        assert ("[UNK]" in pieces) == unknown, text
        assert fast.tokenize(text) == pieces
        if not unknown:
            assert "".join(p.removeprefix("##") for p in pieces) == text.replace(" ", "")


# ---- FastTokenizer as a pipeline stage ---------------------------------------------


@needs_shared_data
def test_fast_tokenizer_ragged_and_tf_data(full_tokenizers, fast_tokenizers):
    import tensorflow as tf

    fast, full = fast_tokenizers["uncased"], full_tokenizers["uncased"]
    texts = corpus("mrpc_dev")[:50] + ["", "Ünïcödé ΣΑΣ 中文 a\u2e52b", "a" * 250]
    want = full_ids(full, texts)

    ragged = fast.tokenize_to_ragged(texts)
    assert isinstance(ragged, tf.RaggedTensor)
    assert ragged.dtype == tf.int32 and ragged.shape[0] == len(texts)
    assert ragged.to_list() == want

    dataset = (
        tf.data.Dataset.from_generator(
            lambda: (fast.normalize(text) for text in texts),
            output_signature=tf.TensorSpec([], tf.string),
        )
        .batch(16)
        .map(fast.ids_from_normalized)
    )
    assert [row for batch in dataset for row in batch.to_list()] == want

    graph_fn = tf.function(
        fast.ids_from_normalized, input_signature=[tf.TensorSpec([None], tf.string)]
    )
    assert graph_fn(tf.constant([fast.normalize(t) for t in texts])).to_list() == want
    assert fast.tokenize_to_ids([]) == []
    with pytest.raises(TypeError, match="list of texts"):
        fast.tokenize_to_ids("a single string")


# ---- Vocabulary, conversions and errors ---------------------------------------------


def _write_vocab(tmp_path, tokens, name="vocab.txt"):
    path = tmp_path / name
    path.write_text("".join(f"{t}\n" for t in tokens), encoding="utf-8")
    return path


TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "runn", "##ing", ",",
              "want", "##want", "##ed", "wa", "!"]


def test_load_vocab_ids_are_line_numbers(tmp_path):
    path = _write_vocab(tmp_path, ["[UNK]", "  padded  ", "dup", "x", "dup"])
    vocab = load_vocab(path)
    assert type(vocab).__name__ == "OrderedDict"
    # Lines are stripped; a repeated token keeps its last line.
    assert vocab == {"[UNK]": 0, "padded": 1, "dup": 4, "x": 3}
    assert list(vocab) == ["[UNK]", "padded", "dup", "x"]


def test_load_vocab_line_ends_and_encoding(tmp_path):
    crlf = tmp_path / "crlf_vocab.txt"
    crlf.write_bytes(b"[UNK]\r\n\r\nhello\r\nlast")  # CRLF, an empty line, no final newline
    assert load_vocab(crlf) == {"[UNK]": 0, "": 1, "hello": 2, "last": 3}
    binary = tmp_path / "spm.model"
    binary.write_bytes(b"\x0a\xff\xfe\x00binary")
    with pytest.raises(ValueError, match=r"spm\.model.*not UTF-8"):
        load_vocab(binary)


def test_full_tokenizer_on_tiny_vocab(tmp_path):
    tokenizer = FullTokenizer(_write_vocab(tmp_path, TINY_VOCAB), do_lower_case=True)
    tokens = tokenizer.tokenize("UNwant\u00e9d,running!")
    assert tokens == ["un", "##want", "##ed", ",", "runn", "##ing", "!"]
    ids = tokenizer.convert_tokens_to_ids(tokens)
    assert ids == [4, 11, 12, 9, 7, 8, 14]
    assert tokenizer.convert_ids_to_tokens(ids) == tokens
    assert tokenizer.convert_tokens_to_ids(["nope"]) == [1]  # unknown tokens map to [UNK]
    # Bytes are UTF-8; invalid bytes are dropped.
    assert tokenizer.tokenize("UNwant\u00e9d".encode() + b"\xff") == ["un", "##want", "##ed"]
    with pytest.raises(TypeError, match="str or bytes"):
        tokenizer.tokenize(None)
    assert tokenizer.inv_vocab[4] == "un" and tokenizer.vocab["un"] == 4
    with pytest.raises(ValueError, match="Token id 99 is not in the vocabulary"):
        tokenizer.convert_ids_to_tokens([99])


def test_components_are_usable_alone(tmp_path):
    text = " \tHeLLo!how  \n Are yoU?  "
    assert BasicTokenizer(True).tokenize(text) == ["hello", "!", "how", "are", "you", "?"]
    assert BasicTokenizer(False).tokenize(text) == ["HeLLo", "!", "how", "Are", "yoU", "?"]
    wordpiece = WordpieceTokenizer(vocab=load_vocab(_write_vocab(tmp_path, TINY_VOCAB)))
    assert wordpiece.tokenize("") == []
    assert wordpiece.tokenize("unwanted running") == ["un", "##want", "##ed", "runn", "##ing"]
    assert wordpiece.tokenize("unwantedX running") == ["[UNK]", "runn", "##ing"]


@pytest.mark.parametrize("kind", ["full", "fast"])
def test_missing_vocab_file_says_what_to_pass(tmp_path, kind):
    missing = tmp_path / "no_such_dir" / "vocab.txt"
    with pytest.raises(FileNotFoundError) as error:
        _make_tokenizer(kind, missing)
    assert str(missing) in str(error.value) and "vocab_file" in str(error.value)


@pytest.mark.parametrize("kind", ["full", "fast"])
def test_vocab_without_unk_is_an_error_naming_the_file(tmp_path, kind):
    path = _write_vocab(tmp_path, ["[PAD]", "hello", "##s"], name="no_unk_vocab.txt")
    with pytest.raises(ValueError, match=r"no_unk_vocab\.txt.*\[UNK\]"):
        _make_tokenizer(kind, path)


def test_empty_vocab_is_an_error(tmp_path):
    path = _write_vocab(tmp_path, [], name="empty_vocab.txt")
    with pytest.raises(ValueError, match="empty_vocab.txt.*empty"):
        load_vocab(path)


def test_fast_tokenizer_with_repeated_and_empty_vocab_lines(tmp_path):
    # Ids a repeated token no longer owns, and an empty line, must not break tf-text.
    tokens = TINY_VOCAB + ["un", ""]
    path = _write_vocab(tmp_path, tokens)
    full, fast = _make_tokenizer("full", path), _make_tokenizer("fast", path)
    texts = ["UNwanted, running!", "un unaffable", ""]
    assert fast.tokenize_to_ids(texts) == full_ids(full, texts)
    assert full.vocab["un"] == len(TINY_VOCAB)


def _make_tokenizer(kind, path):
    if kind == "full":
        return FullTokenizer(path, do_lower_case=True)
    from bert_tf.tokenization import FastTokenizer

    return FastTokenizer(path, do_lower_case=True)


# ---- check_do_lower_case -----------------------------------------------------------


@pytest.mark.parametrize(
    "do_lower_case, checkpoint",
    [
        (True, "gs://bucket/uncased_L-12_H-768_A-12/bert_model.ckpt"),
        (False, "/models/cased_L-12_H-768_A-12/bert_model.ckpt"),
        (False, "/models/multi_cased_L-12_H-768_A-12/bert_model.ckpt"),
        (True, "bert-base-uncased"),
        (False, "bert-base-cased"),
        (True, "/models/chinese_L-12_H-768_A-12/bert_model.ckpt"),
        (True, "/ckpts/my_model/model.ckpt-1000"),  # says nothing about casing
        (False, "/ckpts/my_model/model.ckpt-1000"),
        (True, None),
        (False, ""),
        (True, "/data/cased_runs/uncased_L-4_H-256_A-4/bert_model.ckpt"),  # nearest name wins
        (False, "/home/encased/model.ckpt"),  # "encased" is not "cased"
    ],
)
def test_check_do_lower_case_accepts(do_lower_case, checkpoint):
    assert check_do_lower_case(do_lower_case, checkpoint) is None


@pytest.mark.parametrize(
    "do_lower_case, checkpoint, advice",
    [
        (False, "gs://bucket/uncased_L-12_H-768_A-12/bert_model.ckpt", "--do_lower_case=True"),
        (True, "/models/cased_L-12_H-768_A-12/bert_model.ckpt", "--do_lower_case=False"),
        (True, "/models/multi_cased_L-12_H-768_A-12/bert_model.ckpt", "--do_lower_case=False"),
        (False, "bert-base-uncased", "--do_lower_case=True"),
        (True, "BERT-Base-Cased", "--do_lower_case=False"),
        (False, "/models/multilingual_L-12_H-768_A-12/bert_model.ckpt", "--do_lower_case=True"),
        (True, "/data/uncased_runs/cased_L-12_H-768_A-12/bert_model.ckpt", "--do_lower_case=False"),
    ],
)
def test_check_do_lower_case_rejects_mismatch(do_lower_case, checkpoint, advice):
    with pytest.raises(ValueError) as error:
        check_do_lower_case(do_lower_case, checkpoint)
    message = str(error.value)
    assert f"do_lower_case={do_lower_case}" in message
    assert checkpoint in message and advice in message


# ---- GraphTokenizer: Google's ids from TensorFlow ops alone (for SavedModels) ----------------

_graph_memo: dict = {}


def _graph_tokenizer(case: str):
    if case not in _graph_memo:
        from bert_tf.tokenization.graph import GraphTokenizer

        _graph_memo[case] = GraphTokenizer(vocab_path(case), do_lower_case=VOCABS[case][1])
    return _graph_memo[case]


def _graph_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    import tensorflow as tf

    out = []
    for i in range(0, len(texts), 512):
        out += tokenizer.tokenize(tf.constant(texts[i:i + 512])).to_list()
    return out


def _differences(case: str, texts: list[str]) -> list:
    reference = FullTokenizer(str(vocab_path(case)), do_lower_case=VOCABS[case][1])
    got = _graph_ids(_graph_tokenizer(case), texts)
    return [(text, ids) for text, ids in zip(texts, got)
            if ids != reference.convert_tokens_to_ids(reference.tokenize(text))]


@needs_shared_data
@pytest.mark.parametrize("case", sorted(VOCABS))
@pytest.mark.parametrize("name", ["wikitext2_test", "mrpc_dev", "conll2003_testa"])
def test_graph_tokenizer_gives_googles_ids_on_real_text(case, name):
    texts = [t for t in corpus(name) if t.strip()]
    assert len(texts) > 500
    bad = _differences(case, texts)
    assert not bad, f"{len(bad)} of {len(texts)} differ, first {bad[0][0][:200]!r}"


@needs_shared_data
def test_graph_tokenizer_edge_cases():
    """Empty and blank texts, a word over 200 characters (one [UNK], as Google), accents,
    CJK, control characters, U+2028 (Python's str.split splits there, Google's whitespace
    rule does not clean it), a literal [UNK] in the text."""
    texts = ["", "   \t\n", "x" * 201 + " ok", "é" * 200 + "!", "Ünïcödé naïve café",
             "日本語のテキスト", "a\x00b\u200bc\x7fd", "one\u2028two\u2029three", "[UNK] [MASK]",
             "Ǆ ǅ ǆ İstanbul ΟΔΟΣ ß ﬁ ½",
             # Final_Sigma: context within a word, across punctuation, across dropped
             # characters (gone before Google lower-cases) and case-ignorable ones
             "ΟΔΟΣ, ΑΣΣ Σ ΣΑΣ's Α\x01Σ ΑΣ\x01Α ΑΣ\u00adΑ ΑΣ'Α Σ. ΑΣ1 1Σ 가Σ ΑΣ\u0301",
             "\uf900\u037e\u1fee 한국어 ÅNGSTRÖM",
             # nothing but what cleaning or accent stripping drops: no word at all
             "\x01\x02", "\u0301", "\x00 \ufffd"]
    assert not _differences("uncased", texts)
    assert not _differences("cased", texts)
    for text in ("\x01\x02", "\u0301"):  # alone in a batch, too
        assert not _differences("uncased", [text])


@needs_shared_data
@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(VOCABS))
def test_graph_tokenizer_every_code_point(case):
    """Every code point below U+30000 (surrogates aside) inside a word and alone, upper-cased
    too: the character classes, lower-casing and NFD agree with Python's tables."""
    chars = [chr(cp) for cp in range(0x20, 0x30000) if not 0xD800 <= cp <= 0xDFFF]
    texts = [f"a{c}b {c.upper()} {c}" for c in chars]
    bad = _differences(case, texts)
    assert not bad, f"{len(bad)} differ: {[hex(ord(t[1])) for t, _ in bad[:20]]}"


@needs_shared_data
def test_graph_tokenizer_in_a_savedmodel_needs_only_tensorflow_and_tensorflow_text(tmp_path):
    """Saved with tf.saved_model.save and loaded in a fresh process that imports tensorflow and
    tensorflow_text only (bert_tf is never imported there: checked): FullTokenizer's ids."""
    import subprocess

    import tensorflow as tf

    tokenizer = _graph_tokenizer("uncased")
    tf.saved_model.save(tokenizer, str(tmp_path / "tok"))
    texts = [t for t in corpus("mrpc_dev") if t.strip()][:50] + ["Ünïcödé naïve café!"]
    (tmp_path / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    code = (
        "import json, sys\n"
        "import tensorflow as tf, tensorflow_text  # noqa: F401 (registers its ops)\n"
        f"m = tf.saved_model.load({str(tmp_path / 'tok')!r})\n"
        f"texts = json.load(open({str(tmp_path / 'texts.json')!r}, encoding='utf-8'))\n"
        "print(json.dumps(m.tokenize(tf.constant(texts)).to_list()))\n"
        "assert 'bert_tf' not in sys.modules\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reference = FullTokenizer(str(vocab_path("uncased")), do_lower_case=True)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [
        reference.convert_tokens_to_ids(reference.tokenize(t)) for t in texts]


@needs_shared_data
@pytest.mark.parametrize("case", sorted(VOCABS))
def test_graph_tokenizer_words_and_their_offsets_on_real_text(case):
    """The words are Google's BasicTokenizer's, and each one's span in its text, cleaned and
    put through the casing step, is the word: what NER serving reports entities with."""
    import tensorflow as tf

    from bert_tf.tokenization.graph import _is_dropped, _uncased
    from bert_tf.tokenization.wordpiece import BasicTokenizer

    lower = VOCABS[case][1]
    texts = [t for t in corpus("conll2003_testa") + corpus("mrpc_dev") if t.strip()][:3000]
    texts += ["ΟΔΟΣ, naïve café\x00s 日本語 İstanbul", "a\u2028b", " lead and trail "]
    basic = BasicTokenizer(do_lower_case=lower)
    words, starts, ends, tokens = _graph_tokenizer(case).words_with_offsets(tf.constant(texts))
    checked = 0
    for text, ws, ss, es, ts in zip(texts, words.to_list(), starts.to_list(), ends.to_list(),
                                    tokens.to_list()):
        assert [w.decode() for w in ws] == basic.tokenize(text), text
        # Token k's words are the basic tokenizer's words of the k-th whitespace token.
        by_token = [basic.tokenize(t) for t in text.split()]
        assert [w for k, t in enumerate(by_token) for w in t] == basic.tokenize(text)
        assert ts == [k for k, t in enumerate(by_token) for _ in t], text
        for word, start, end in zip(ws, ss, es):
            span = "".join(c for c in text[start:end] if not _is_dropped(c))
            if lower:
                span = "".join(_uncased(c) for c in span)
                word = word.decode().replace("\u03c2", "\u03c3")  # final sigma
            else:
                word = word.decode()
            assert span == word, (text, start, end)
            checked += 1
    assert checked > 30000


@needs_shared_data
def test_graph_tokenizer_ops_are_core_tensorflow_but_fast_wordpiece(tmp_path):
    """The SavedModel's graph, read in a process that never imports tensorflow_text: every op
    is registered by TensorFlow itself but FastWordpieceTokenizeWithOffsets (which
    TensorFlow Serving links since 2.12). No NormalizeUTF8, whose ICU data Serving builds have
    failed to find."""
    import subprocess

    import tensorflow as tf

    for case in VOCABS:
        tf.saved_model.save(_graph_tokenizer(case), str(tmp_path / case))
    code = (
        "import json, sys\n"
        "import tensorflow as tf\n"
        "from tensorflow.core.protobuf import saved_model_pb2\n"
        "from tensorflow.python.framework import op_def_registry\n"
        "out = {}\n"
        "for case in sys.argv[1:]:\n"
        "    sm = saved_model_pb2.SavedModel()\n"
        "    sm.ParseFromString(open(case + '/saved_model.pb', 'rb').read())\n"
        "    graph = sm.meta_graphs[0].graph_def\n"
        "    ops = {n.op for n in graph.node}\n"
        "    for f in graph.library.function:\n"
        "        ops |= {n.op for n in f.node_def}\n"
        "    names = {f.signature.name for f in graph.library.function}\n"
        "    out[case] = sorted(o for o in ops - names if op_def_registry.get(o) is None)\n"
        "assert 'tensorflow_text' not in sys.modules\n"
        "print(json.dumps(out))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([sys.executable, "-c", code, *VOCABS], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {
        case: ["FastWordpieceTokenizeWithOffsets"] for case in VOCABS}
