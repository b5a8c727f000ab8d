"""build_vocab.py / bert_tf.tokenization.learn: a WordPiece vocabulary from the Python docs, in
Google's layout, checked with Hugging Face's BertTokenizer as the independent reader."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, shared


def run(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "build_vocab.py"), "--noprogress",
                           *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def docs_vocab(tmp_path_factory):
    out = tmp_path_factory.mktemp("vocab")
    result = run(f"--input_file={shared('corpus', 'python_docs_train.txt')}",
                 f"--output_dir={out}", "--vocab_size=8000",
                 f"--heldout_file={shared('corpus', 'python_docs_heldout.txt')}",
                 f"--compare_vocab_file={shared('vocab', 'uncased_vocab.txt')}")
    assert result.returncode == 0, result.stderr
    assert "Wrote" in result.stdout and "8000 entries" in result.stdout
    return out


def test_layout_is_googles_with_every_character_twice(docs_vocab):
    tokens = (docs_vocab / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert tokens[-1] == "" and "" not in tokens[:-1]  # one token a line, newline-terminated
    tokens = tokens[:-1]
    assert len(tokens) == 8000 == len(set(tokens))
    assert tokens[0] == "[PAD]"
    assert tokens[100:104] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    # The same rows as Google's uncased vocabulary up to [unused993].
    google = shared("vocab", "uncased_vocab.txt").read_text(encoding="utf-8").split("\n")
    assert tokens[:999] == google[:999]
    assert tokens[998] == "[unused993]" and not tokens[999].startswith("[")
    pieces = tokens[999:]
    assert all(t == t.strip() and t for t in pieces)
    chars = {c for t in pieces for c in t.removeprefix("##")}
    present = set(pieces)
    assert chars and all(c in present and f"##{c}" in present for c in chars)
    assert {"ß", "##ß", "π", "##π", "°", "##°"} <= present  # the twins the learner leaves out
    assert not any(t != t.lower() for t in pieces)  # uncased: nothing upper case
    config = json.loads((docs_vocab / "bert_config.json").read_text())
    assert config["vocab_size"] == 8000 and config["hidden_size"] == 768
    summary = json.loads((docs_vocab / "vocab_summary.json").read_text())
    assert "##ß" in summary["twins_added"]


def test_heldout_unk_rate_and_pieces_per_word_beat_googles(docs_vocab):
    """Counted by Hugging Face's BertTokenizer (its own basic + WordPiece code) on the held-out
    documents, for the new vocabulary and for Google's uncased one."""
    transformers = pytest.importorskip("transformers")
    text = shared("corpus", "python_docs_heldout.txt").read_text(encoding="utf-8")
    lines = [l for l in text.split("\n") if l.strip()]

    def rates(vocab_file):
        tok = transformers.BertTokenizer(str(vocab_file), do_lower_case=True)
        words = pieces = unk = 0
        for line in lines:
            for word in tok.basic_tokenizer.tokenize(line):
                split = tok.wordpiece_tokenizer.tokenize(word)
                words += 1
                pieces += len(split)
                unk += split.count("[UNK]")
        return unk / words, pieces / words

    ours = rates(docs_vocab / "vocab.txt")
    google = rates(shared("vocab", "uncased_vocab.txt"))
    assert ours[0] <= google[0]
    assert ours[1] < google[1]
    # The script's own report agrees with that count.
    summary = json.loads((docs_vocab / "vocab_summary.json").read_text())
    assert summary["heldout"]["this"]["pieces_per_word"] == pytest.approx(ours[1], rel=1e-9)
    assert summary["heldout"]["compared"]["pieces_per_word"] == pytest.approx(google[1],
                                                                              rel=1e-9)
    # A word with a character inside it that the learner saw only at word starts.
    tok = transformers.BertTokenizer(str(docs_vocab / "vocab.txt"), do_lower_case=True)
    assert "[UNK]" not in tok.tokenize("Die Straße ist 90° warm und πr")


def test_sampling_bounds_the_text_read(tmp_path):
    from bert_tf.tokenization.learn import VocabOptions, check_layout
    from bert_tf.vocab_building import build_vocab

    source = shared("corpus", "python_docs_train.txt")
    size = source.stat().st_size
    options = VocabOptions(vocab_size=3000, max_corpus_bytes=1_000_000, num_unused=99)
    sampled = build_vocab(str(source), str(tmp_path / "a"), options, show_progress=False)
    assert 0.8e6 < sampled["bytes_read"] < 1.2e6 < size
    full = build_vocab(str(source), str(tmp_path / "c"), VocabOptions(vocab_size=3000,
                                                                      num_unused=99),
                       show_progress=False)
    assert full["bytes_read"] == size
    for summary in (sampled, full):
        tokens = open(summary["vocab_file"], encoding="utf-8").read().split("\n")[:-1]
        assert len(tokens) == 3000
        check_layout(tokens, 99)


def test_bad_settings_give_one_line_and_write_nothing(tmp_path):
    source = shared("corpus", "python_docs_heldout.txt")
    out = tmp_path / "v"
    for args, fragment in [(["--vocab_size=1100"], "cannot hold"),
                           (["--num_unused=10"], "--num_unused=10: at least 99"),
                           ([f"--heldout_file={tmp_path}/none.txt"], "--heldout_file="),
                           ([f"--input_file={tmp_path}/none*.txt"], "no such file")]:
        result = run(f"--input_file={source}", f"--output_dir={out}", *args)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert fragment in result.stderr.strip().splitlines()[-1]
        assert not out.exists() or not os.listdir(out)
