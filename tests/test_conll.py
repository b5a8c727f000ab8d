"""CoNLL-2003 reader on the real files, IOB1 -> IOB2, malformed files, and word-piece features
with window splitting, checked against transformers' tokenizers and seqeval."""

import pytest

from bert_tf import metrics
from bert_tf.data import conll
from bert_tf.data.conll import LABELS, Sentence, iob1_to_iob2, read_conll
from bert_tf.data.glue import DataError

seqeval_seq = pytest.importorskip("seqeval.metrics.sequence_labeling",
                                  reason="seqeval is the oracle for entity spans")


@pytest.fixture(scope="module")
def vocab_file():
    from tests.conftest import SHARED_DATA

    path = SHARED_DATA / "vocab" / "cased_vocab.txt"
    if not path.exists():
        pytest.skip(f"real data not available: {path} (set BERT_TF_SHARED_DATA)")
    return str(path)


@pytest.fixture(scope="module")
def tokenizer(vocab_file):
    transformers = pytest.importorskip("transformers", reason="BertTokenizer is the oracle")
    return transformers.BertTokenizer(vocab_file, do_lower_case=False)


@pytest.fixture(scope="module")
def test_sentences():
    from tests.conftest import SHARED_DATA

    path = SHARED_DATA / "conll2003" / "eng.testb"
    if not path.exists():
        pytest.skip(f"real data not available: {path} (set BERT_TF_SHARED_DATA)")
    return read_conll(str(path))


# -- reading ------------------------------------------------------------------------------------
@pytest.mark.parametrize("split,count", [("train", 14041), ("dev", 3250), ("test", 3453)])
def test_real_sentence_counts(shared_data, split, count):
    sentences = conll.load_split(str(shared_data("conll2003")), split)
    assert len(sentences) == count
    assert all(s.words and len(s.words) == len(s.tags) for s in sentences)
    assert not any("-DOCSTART-" in s.words for s in sentences)
    assert {t for s in sentences for t in s.tags} == set(LABELS)
    if split == "train":
        assert sum(len(s) for s in sentences) == 203621  # tokens in CoNLL-2003 train
        assert sentences[0].words[:3] == ["EU", "rejects", "German"]
        assert sentences[0].tags[:3] == ["B-ORG", "O", "B-MISC"]
        assert sentences[-1].document == 945  # 946 documents


def test_real_iob1_to_iob2(shared_data):
    path = str(shared_data("conll2003", "eng.train"))
    raw = read_conll(path, to_iob2=False)
    converted = read_conll(path)
    raw_tags = [t for s in raw for t in s.tags]
    # The released file is IOB1: entities mostly start with I-, B- only between two neighbours.
    assert sum(t.startswith("B-") for t in raw_tags) == 70
    for r, c in zip(raw, converted):
        assert r.words == c.words
        # Valid IOB2: every I-X continues a B-X/I-X of the same type.
        for prev, tag in zip(["O"] + c.tags, c.tags):
            if tag.startswith("I-"):
                assert prev != "O" and prev[2:] == tag[2:]
        # Same entities under conlleval's reading (seqeval's default mode) before and after.
        assert (seqeval_seq.get_entities(r.tags) == seqeval_seq.get_entities(c.tags)
                == [(k, s, e - 1) for k, s, e in metrics.get_entities(c.tags)])


@pytest.mark.parametrize("iob1,iob2", [
    (["I-PER", "I-PER", "O", "I-LOC"], ["B-PER", "I-PER", "O", "B-LOC"]),
    (["I-PER", "B-PER", "I-PER"], ["B-PER", "B-PER", "I-PER"]),   # B- splits two neighbours
    (["I-PER", "I-LOC", "I-LOC"], ["B-PER", "B-LOC", "I-LOC"]),   # type change starts an entity
    (["B-ORG", "I-ORG", "O"], ["B-ORG", "I-ORG", "O"]),           # already IOB2
    (["O", "B-MISC", "I-ORG"], ["O", "B-MISC", "B-ORG"]),
    ([], []),
])
def test_iob1_to_iob2_cases(iob1, iob2):
    assert iob1_to_iob2(iob1) == iob2
    assert iob1_to_iob2(iob2) == iob2  # idempotent


def test_iob1_to_iob2_rejects_bad_tags():
    with pytest.raises(ValueError, match="'PER'"):
        iob1_to_iob2(["O", "PER"])


def test_documents_and_blank_lines(tmp_path):
    path = tmp_path / "eng.mini"
    path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP I-NP I-ORG\nrejects VBZ I-VP O\n\n\n"
                    "Peter NNP I-NP I-PER\n-DOCSTART- -X- O O\n\nBRUSSELS NNP I-NP I-LOC",
                    encoding="utf-8")
    sentences = read_conll(str(path))
    assert [(s.words, s.tags, s.line, s.document) for s in sentences] == [
        (["EU", "rejects"], ["B-ORG", "O"], 3, 0),
        (["Peter"], ["B-PER"], 7, 0),
        (["BRUSSELS"], ["B-LOC"], 10, 1),  # no final newline: still read
    ]


@pytest.mark.parametrize("text,message", [
    ("EU NNP I-NP I-ORG\nrejects VBZ O\n", r"eng.bad:2: expected 4 space-separated columns .* found 3"),
    ("EU NNP I-NP I-ORG\n\nrejects VBZ I-VP ORG\n", r"eng.bad:3: tag 'ORG' in the last column"),
    ("EU NNP I-NP X-ORG\n", r"eng.bad:1: tag 'X-ORG'"),
    ("EU\n", r"eng.bad:1: expected a word and its tag"),
])
def test_malformed_lines(tmp_path, text, message):
    path = tmp_path / "eng.bad"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_conll(str(path))


def test_missing_split_file(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        conll.load_split(str(tmp_path), "dev")
    assert str(tmp_path / "eng.testa") in str(info.value) and "--data_dir" in str(info.value)


# -- features -----------------------------------------------------------------------------------
def test_features_match_fast_tokenizer_word_ids(test_sentences, tokenizer, vocab_file):
    transformers = pytest.importorskip("transformers")
    fast = transformers.BertTokenizerFast(vocab_file=vocab_file, do_lower_case=False)
    sentences = test_sentences[:300]
    features = conll.convert_sentences_to_features(sentences, LABELS, 512, tokenizer)
    assert len(features) == len(sentences)  # every sentence fits: one feature each
    for s_index, (sentence, feature) in enumerate(zip(sentences, features)):
        encoding = fast(sentence.words, is_split_into_words=True)
        assert feature["input_ids"] == encoding["input_ids"]
        word_ids = encoding.word_ids()
        first_piece = [w is not None and (i == 0 or word_ids[i - 1] != w)
                       for i, w in enumerate(word_ids)]
        assert feature["label_mask"] == [int(f) for f in first_piece]
        assert feature["label_ids"] == [LABELS.index(sentence.tags[w]) if first else -1
                                        for w, first in zip(word_ids, first_piece)]
        assert feature["segment_ids"] == [0] * feature["length"]
        assert feature["input_mask"] == [1] * feature["length"]
        assert (feature["sentence_index"], feature["word_start"], feature["num_words"]) == (
            s_index, 0, len(sentence.words))


@pytest.mark.parametrize("max_seq_length", [5, 12, 40])
def test_windows_reassemble_every_word(test_sentences, tokenizer, max_seq_length):
    sentences = test_sentences[:800]
    features = conll.convert_sentences_to_features(sentences, LABELS, max_seq_length, tokenizer)
    assert all(f["length"] <= max_seq_length for f in features)
    assert len(features) > len(sentences)  # real sentences were split
    cls_id, sep_id = tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]"])
    # Windows tile each sentence in order, and their pieces are exactly the sentence's pieces.
    by_sentence = {}
    for f in features:
        assert f["input_ids"][0] == cls_id and f["input_ids"][-1] == sep_id
        assert sum(f["label_mask"]) == f["num_words"] >= 1
        by_sentence.setdefault(f["sentence_index"], []).append(f)
    assert sorted(by_sentence) == list(range(len(sentences)))
    for s_index, windows in by_sentence.items():
        starts = [f["word_start"] for f in windows]
        ends = [f["word_start"] + f["num_words"] for f in windows]
        assert starts[0] == 0 and ends[-1] == len(sentences[s_index].words)
        assert starts[1:] == ends[:-1]
        # A word with more pieces than a window holds keeps its first max_seq_length - 2.
        pieces = [p for w in sentences[s_index].words
                  for p in tokenizer.tokenize(w)[:max_seq_length - 2]]
        assert [i for f in windows for i in f["input_ids"][1:-1]] == \
            tokenizer.convert_tokens_to_ids(pieces)
    # Gold label ids as "predictions" give back every word's tag.
    predictions = [[max(i, 0) for i in f["label_ids"]] + [0] * 3 for f in features]  # padded
    assert conll.assemble_predictions(features, predictions, sentences, LABELS) == \
        [s.tags for s in sentences]


def test_long_words_and_empty_words(tokenizer):
    long_word = "Pneumonoultramicroscopicsilicovolcanoconiosis"
    assert len(tokenizer.tokenize(long_word)) > 3
    sentences = [Sentence([long_word, "in", "\u200b", "Paris"], ["O", "O", "O", "B-LOC"])]
    features = conll.convert_sentences_to_features(sentences, LABELS, 5, tokenizer)
    assert all(f["length"] <= 5 for f in features)
    # The long word fills a window alone with its first 3 pieces; the empty word becomes [UNK].
    expected = [tokenizer.tokenize(long_word)[:3], ["in", "[UNK]", "Paris"]]
    assert [f["input_ids"][1:-1] for f in features] == [
        tokenizer.convert_tokens_to_ids(pieces) for pieces in expected]
    assert [f["label_mask"] for f in features] == [[0, 1, 0, 0, 0], [0, 1, 1, 1, 0]]
    tags = conll.assemble_predictions(
        features, [[max(i, 0) for i in f["label_ids"]] for f in features], sentences, LABELS)
    assert tags == [["O", "O", "O", "B-LOC"]]


def test_unlabelled_and_bad_labels(tokenizer):
    (f,) = conll.convert_sentences_to_features([Sentence(["Hello", "Paris"], None)], LABELS, 16,
                                               tokenizer)
    assert f["label_ids"] == [-1] * f["length"] and sum(f["label_mask"]) == 2
    with pytest.raises(ValueError, match="tag 'I-PERSON' is not in the label list"):
        conll.convert_sentences_to_features([Sentence(["Bob"], ["I-PERSON"])], LABELS, 16,
                                            tokenizer)


def test_assemble_predictions_checks_coverage(tokenizer):
    sentences = [Sentence(["a", "b"], ["O", "O"]), Sentence(["c"], ["O"])]
    features = conll.convert_sentences_to_features(sentences, LABELS, 16, tokenizer)
    predictions = [f["label_ids"] for f in features]
    with pytest.raises(ValueError, match="sentence 1: no prediction"):
        conll.assemble_predictions(features[:1], predictions[:1], sentences, LABELS)
    with pytest.raises(ValueError, match="more than one feature"):
        conll.assemble_predictions(features + features[:1], predictions + predictions[:1],
                                   sentences, LABELS)


def test_write_predictions_for_conlleval(tmp_path, test_sentences):
    sentences = test_sentences[:50]
    predicted = [["O"] * len(s) for s in sentences]
    predicted[2][0] = "B-PER"
    path = tmp_path / "predictions.txt"
    conll.write_predictions(str(path), sentences, predicted)
    blocks = path.read_text(encoding="utf-8").split("\n\n")
    assert blocks[-1] == "" and len(blocks) == len(sentences) + 1
    for sentence, pred, block in zip(sentences, predicted, blocks):
        rows = [line.split(" ") for line in block.split("\n")]
        assert [r[0] for r in rows] == sentence.words
        assert [r[1] for r in rows] == sentence.tags
        assert [r[2] for r in rows] == pred
    # Scores read back from the file equal the scores of the tags in memory.
    gold_back = [[r.split(" ")[1] for r in b.split("\n")] for b in blocks[:-1]]
    pred_back = [[r.split(" ")[2] for r in b.split("\n")] for b in blocks[:-1]]
    assert metrics.entity_scores(gold_back, pred_back) == metrics.entity_scores(
        [s.tags for s in sentences], predicted)
    with pytest.raises(ValueError, match="sentence 0: .* words but 1 predicted"):
        conll.write_predictions(str(tmp_path / "bad.txt"), sentences[:1], [["O"]])
    assert not (tmp_path / "bad.txt").exists()
