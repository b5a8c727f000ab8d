"""SQuAD: features, answers and scores against Google's run_squad.py (the bert-tensorflow wheel, run
by bench/peers/google_squad.py) and the official evaluate-v1.1.py / evaluate-v2.0.py on the real
files in ../shared/data/squad; run_squad.py end to end on a tiny BERT; bad input."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, shared
from tests.test_run_classifier import run_script, tiny_dir

GOOGLE = str(REPO / "bench" / "peers" / "google_squad.py")
SCRIPT = str(REPO / "run_squad.py")


def vocab():
    return str(shared("vocab", "uncased_vocab.txt"))


def official(version, data, predictions, null_odds=None):
    cmd = [sys.executable, str(shared("squad", f"evaluate-v{version}.py")), str(data),
           str(predictions)]
    if null_odds:  # -t: no threshold on top of the one the predictions were made with
        cmd += ["-n", str(null_odds), "-t", "1e30"]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def google(*args):
    pytest.importorskip("bert", reason="bert-tensorflow (Google's scripts) is not installed")
    proc = subprocess.run([sys.executable, GOOGLE, *map(str, args)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def store(path, tmp_path, training=False, v2=False, workers=1, **settings):
    from bert_tf.data import squad

    data = squad.read_squad(str(path), v2, for_training=training)
    features = squad.convert_to_store(data, vocab(), True,
                                      squad.FeatureSettings(for_training=training, **settings),
                                      str(tmp_path / "cache"), num_workers=workers)
    return data, features


def answers(data, features, start, end, **settings):
    from bert_tf.data import squad_answers
    from bert_tf.tokenization import make_tokenizer

    return squad_answers.predict_answers(data, features, start, end,
                                         make_tokenizer(vocab(), True),
                                         squad_answers.AnswerSettings(**settings))


# -- against Google and the official scripts --------------------------------------------------------

def test_gold_spans_round_trip_to_googles_ceiling_on_dev_v11(tmp_path):
    """Gold answer spans through our pre- and post-processing score what Google's pipeline can
    score at most on dev-v1.1 at 384/128 (EM 99.688 / F1 99.750 by evaluate-v1.1.py), from
    Google's 10,833 features."""
    dev = shared("squad", "dev-v1.1.json")
    data, features = store(dev, tmp_path)
    _, gold = store(dev, tmp_path, training=True)  # the same windows, with the first answer's
    assert len(features) == len(gold) == 10833
    assert np.array_equal(features["span_start"], gold["span_start"])
    start = np.zeros((len(features), 384), np.float32)
    end = np.zeros_like(start)
    rows = np.flatnonzero(np.asarray(gold["start_positions"]) > 0)
    start[rows, np.asarray(gold["start_positions"])[rows]] = 10.0
    end[rows, np.asarray(gold["end_positions"])[rows]] = 10.0
    predictions, _, _ = answers(data, features, start, end)
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps(predictions))
    scores = official("1.1", dev, path)
    assert (round(scores["exact_match"], 3), round(scores["f1"], 3)) == (99.688, 99.750)

    from bert_tf.metrics import squad_scores
    ours = squad_scores(data.examples, predictions)
    assert ours["exact_match"] == pytest.approx(scores["exact_match"], abs=1e-9)
    assert ours["f1"] == pytest.approx(scores["f1"], abs=1e-9)


def test_training_features_equal_googles(tmp_path):
    """Every window of the 2.0 train slice (answers, unanswerable questions, long contexts) as
    Google's convert_examples_to_features makes it: ids, segments, answer positions."""
    # Sino-Tibetan .. Spectre: 1,454 questions, all 348 of the slice's unanswerable ones
    train = _articles(shared("squad", "slices", "train-v2.0-first10articles.json"), 2, 6,
                      tmp_path)
    google("features", train, vocab(), tmp_path / "google.jsonl", "--training", "--v2")
    theirs = [json.loads(line) for line in open(tmp_path / "google.jsonl")]
    data, features = store(train, tmp_path, training=True, v2=True, workers=2)
    assert len(features) == len(theirs) > len(data.examples) == 1454
    assert sum(ex.is_impossible for ex in data.examples) == 348
    for i, g in enumerate(theirs):
        batch = features.batch(np.array([i]), 384)
        n = int(features.lengths[i])
        assert batch["input_ids"][0, :n].tolist() == g["input_ids"], i
        assert batch["segment_ids"][0, :n].tolist() == g["segment_ids"], i
        assert batch["input_mask"][0].sum() == n
        assert int(features["example_index"][i]) == g["example_index"]
        assert (int(batch["start_positions"][0]), int(batch["end_positions"][0])) == \
            (g["start_position"], g["end_position"]), i


def _articles(path, start, stop, tmp_path):
    """A copy of a SQuAD file with articles [start, stop) only (quicker oracle runs)."""
    raw = json.loads(path.read_text())
    raw["data"] = raw["data"][start:stop]
    out = tmp_path / f"articles{start}-{stop}-{path.name}"
    out.write_text(json.dumps(raw))
    return out


def _designed_logits(features, seed=0, cls_below_top20=True):
    """Random logits on the positions Google's n-best can keep (document pieces; for starts,
    where the window has the most context), -1000 elsewhere.

    cls_below_top20: [CLS] sits just below each window's 20th best start and end, so Google's
    top 20 over all 384 positions holds exactly the candidates ours draws from the valid
    positions and the n-best lists must agree entry for entry (the null answer then rarely
    wins). Otherwise [CLS] is drawn around the spans' level and often wins; when it is in
    Google's top 20 it takes one of its 20 slots (ours does not), so only the prediction, the
    null odds and the first n-best entry must agree."""
    from bert_tf.data.squad_answers import max_context

    rng = np.random.default_rng(seed)
    n = len(features)
    start = np.full((n, 384), -1000.0, np.float32)
    end = np.full((n, 384), -1000.0, np.float32)
    example = np.asarray(features["example_index"])
    span_start = np.asarray(features["span_start"])
    span_length = np.asarray(features["span_length"])
    for i in range(n):
        rows = np.flatnonzero(example == example[i])
        offset = int(features["query_length"][i]) + 2
        length = int(span_length[i])
        ok = max_context(span_start[rows], span_length[rows], int(np.flatnonzero(rows == i)[0]))
        doc = slice(offset, offset + length)
        start[i, doc] = np.where(ok, rng.normal(0, 1, length), -1000.0)
        end[i, doc] = rng.normal(0, 1, length)
        for logits in (start, end):
            logits[i, 0] = (np.sort(logits[i])[-20] - rng.uniform(0.05, 1.0)
                            if cls_below_top20 else rng.normal(1.7, 1.0))
    return start, end


@pytest.mark.parametrize("v2", [True, False], ids=["v2.0", "v1.1"])
def test_answers_equal_googles_write_predictions(tmp_path, v2):
    """predictions.json, nbest_predictions.json and null_odds.json as Google's write_predictions
    writes them from the same logits (dev-v2.0 slice; for 1.1 its answerable questions)."""
    from bert_tf.data import squad_answers

    dev = _articles(shared("squad", "slices", "dev-v2.0-first5articles.json"), 0, 3, tmp_path)
    if not v2:
        raw = json.loads(dev.read_text())
        for article in raw["data"]:
            for paragraph in article["paragraphs"]:
                paragraph["qas"] = [{"id": q["id"], "question": q["question"],
                                     "answers": q["answers"]}
                                    for q in paragraph["qas"] if not q["is_impossible"]]
        dev = tmp_path / "dev-answerable.json"
        dev.write_text(json.dumps(raw))
    data, features = store(dev, tmp_path, v2=v2)
    designs = [True, False] if v2 else [True]
    logits = {}
    for below in designs:
        logits[below] = _designed_logits(features, cls_below_top20=below)
        (tmp_path / f"below{below}").mkdir()
        np.savez(tmp_path / f"below{below}" / "logits.npz", start_logits=logits[below][0],
                 end_logits=logits[below][1])
    google("predict", dev, vocab(), *[p for below in designs for p in (
        tmp_path / f"below{below}" / "logits.npz", tmp_path / f"below{below}" / "google")],
        *(["--v2"] if v2 else []))
    for below in designs:
        start, end = logits[below]
        side = tmp_path / f"below{below}"
        predictions, nbest, null_odds = answers(data, features, start, end,
                                                version_2_with_negative=v2)
        squad_answers.write_predictions(str(side / "ours"), predictions, nbest, null_odds)

        def read(who, name):
            return json.loads((side / who / name).read_text())

        theirs = read("google", "nbest_predictions.json")
        ours = read("ours", "nbest_predictions.json")
        assert list(ours) == list(theirs)
        google_predictions = read("google", "predictions.json")
        differ = [q for q in predictions if predictions[q] != google_predictions[q]]
        if below:
            assert not differ
        else:  # where [CLS] took one of Google's 20 slots, ours may find a better span
            assert len(differ) <= len(predictions) // 100, differ

            def best(entries):
                return max(e["start_logit"] + e["end_logit"] for e in entries if e["text"])
            assert all(best(ours[q]) > best(theirs[q]) for q in differ)
        for qid in set(theirs) - set(differ):
            count = len(theirs[qid]) if below else 1
            assert [e["text"] for e in ours[qid][:count]] == \
                [e["text"] for e in theirs[qid][:count]], qid
            for key in ("start_logit", "end_logit") + (("probability",) if below else ()):
                np.testing.assert_allclose([e[key] for e in ours[qid][:count]],
                                           [e[key] for e in theirs[qid][:count]],
                                           rtol=1e-6, atol=1e-9)
        if v2:
            theirs = read("google", "null_odds.json")
            assert list(null_odds) == list(theirs)
            same = [q for q in theirs if q not in differ]
            np.testing.assert_allclose([null_odds[q] for q in same], [theirs[q] for q in same],
                                       atol=1e-4)
            if not below:  # the null path is exercised
                assert 0.15 < np.mean([p == "" for p in predictions.values()]) < 0.85


def _perturbed_predictions(data, seed=0):
    """Predictions of every kind: exact gold, gold with extra words, punctuation and articles,
    partial overlaps, wrong text, "" and missing ids."""
    rng = np.random.default_rng(seed)
    out = {}
    for ex in data.examples:
        gold = ex.answers[rng.integers(len(ex.answers))]["text"] if ex.answers else \
            "no such answer"
        kind = rng.integers(7)
        if kind == 6:
            continue  # no prediction
        out[ex.qas_id] = [gold, f"The {gold}.", gold.split()[0], "something else entirely",
                          "", f"an {gold.upper()} of", " ".join(gold.split()[::-1])][kind]
    return out


def test_scores_equal_the_official_scripts(tmp_path):
    from bert_tf.metrics import squad_scores

    dev1 = shared("squad", "dev-v1.1.json")
    data, _ = store(dev1, tmp_path)
    preds = _perturbed_predictions(data)
    (tmp_path / "p1.json").write_text(json.dumps(preds))
    theirs = official("1.1", dev1, tmp_path / "p1.json")
    ours = squad_scores(data.examples, preds)
    assert ours == pytest.approx(theirs, abs=1e-9)

    from bert_tf.data import squad
    dev2 = shared("squad", "slices", "dev-v2.0-first5articles.json")
    data = squad.read_squad(str(dev2), True)
    preds = _perturbed_predictions(data, seed=1)
    preds.update({ex.qas_id: "" for ex in data.examples if ex.qas_id not in preds})
    rng = np.random.default_rng(2)
    odds = {ex.qas_id: float(rng.normal()) for ex in data.examples}
    (tmp_path / "p2.json").write_text(json.dumps(preds))
    (tmp_path / "n2.json").write_text(json.dumps(odds))
    theirs = official("2.0", dev2, tmp_path / "p2.json", tmp_path / "n2.json")
    ours = squad_scores(data.examples, preds, odds, version_2=True)
    assert set(ours) == set(theirs)
    assert ours == pytest.approx(theirs, abs=1e-9)


# -- features and answers on their own --------------------------------------------------------------

def test_store_is_reused_keyed_by_settings_and_identical_across_worker_counts(tmp_path):
    from bert_tf.data import squad

    dev = shared("squad", "slices", "dev-v2.0-first5articles.json")
    _, one = store(dev, tmp_path, v2=True, workers=1)
    original = squad._write_store
    squad._write_store = lambda *a, **k: pytest.fail("converted again instead of reused")
    try:
        _, again = store(dev, tmp_path, v2=True, workers=2)
    finally:
        squad._write_store = original
    assert again.directory == one.directory
    _, two = store(dev, tmp_path / "other", v2=True, workers=2)
    for name in one.columns:
        assert np.array_equal(one[name], two[name]), name
    _, strided = store(dev, tmp_path, v2=True, max_seq_length=128, doc_stride=32)
    assert strided.directory != one.directory and len(strided) > len(one)
    assert not [n for n in os.listdir(tmp_path / "cache") if ".tmp" in n]
    # Other questions of the same file (--max_train_examples) are another store.
    data = squad.read_squad(str(dev), True)
    data.examples = data.examples[:16]
    first16 = squad.convert_to_store(data, vocab(), True, squad.FeatureSettings(),
                                     str(tmp_path / "cache"))
    assert first16.directory != one.directory and first16.meta["examples"] == 16
    assert squad.SquadFeatures(one.directory).meta["features"] == len(one) == 1414


def test_improve_answer_span_and_windows():
    from bert_tf.data.squad import doc_spans, doc_tokens, improve_answer_span

    pieces = ["(", "1895", "-", "1943", ")", "."]
    assert improve_answer_span(pieces, 0, 5, ["1895"]) == (1, 1)
    assert improve_answer_span(["japanese"], 0, 0, ["japan"]) == (0, 0)
    assert doc_spans(10, 4, 3) == [(0, 4), (3, 4), (6, 4)]
    assert doc_spans(3, 4, 3) == [(0, 3)]
    words, char_to_word = doc_tokens("a bc\u202fd ")
    assert words == ["a", "bc", "d"] and char_to_word.tolist() == [0, 0, 1, 1, 1, 2, 2]


def test_null_only_nbest_predicts_empty_string(tmp_path):
    """A 2.0 question whose n-best holds only the null answer (n_best_size 1, [CLS] scoring
    highest): Google's script fails on it (no best non-null entry); here it is answered ""."""
    dev = shared("squad", "slices", "dev-v2.0-first5articles.json")
    data, features = store(dev, tmp_path, v2=True)
    start, end = _designed_logits(features)
    start[:, 0] = end[:, 0] = 100.0
    predictions, nbest, null_odds = answers(data, features, start, end, n_best_size=1,
                                            version_2_with_negative=True)
    assert set(predictions.values()) == {""}
    assert all([e["text"] for e in v] == [""] for v in nbest.values())
    assert all(v > 100 for v in null_odds.values())


# -- run_squad.py --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return tiny_dir(str(tmp_path_factory.mktemp("tiny_bert")))


def squad_args(tiny_bert, out, *extra):
    return [f"--init_checkpoint={tiny_bert}", f"--output_dir={out}", "--max_seq_length=128",
            "--max_query_length=32", "--doc_stride=64", "--tracking_uri=none", *extra]


def test_run_squad_v2_end_to_end(tmp_path, tiny_bert):
    """Train two steps and predict the 2.0 dev slice: Google's files, the official scores in
    eval_results (headline at the run's threshold, best_f1 apart) equal evaluate-v2.0.py's, and
    --do_predict alone reloads the trained checkpoint and predicts the same."""
    train = shared("squad", "slices", "train-v2.0-first10articles.json")
    raw = json.loads(shared("squad", "slices", "dev-v2.0-first5articles.json").read_text())
    raw["data"] = raw["data"][:1]  # Normans: 2.0 questions of both kinds, a quicker test
    dev = tmp_path / "dev-normans.json"
    dev.write_text(json.dumps(raw))
    questions = sum(len(p["qas"]) for p in raw["data"][0]["paragraphs"])
    out = tmp_path / "run"
    proc = run_script(squad_args(tiny_bert, out, "--do_train", f"--train_file={train}",
                                 "--max_train_examples=64", "--train_batch_size=16",
                                 "--num_train_epochs=0.5", "--version_2_with_negative",
                                 "--do_predict", f"--predict_file={dev}",
                                 "--predict_batch_size=64"), script=SCRIPT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "eval_results.json").read_text())
    assert results["global_step"] == 2 and results["eval_examples"] == questions
    theirs = official("2.0", dev, out / "predictions.json", out / "null_odds.json")
    for key in ("exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh"):
        assert results[key] == pytest.approx(theirs[key], abs=1e-9), key
    nbest = json.loads((out / "nbest_predictions.json").read_text())
    assert len(nbest) == questions and all(1 <= len(v) <= 21 for v in nbest.values())  # + null
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["best_f1"] for r in rows if r["split"] == "eval"] == [results["best_f1"]]

    first = json.loads((out / "predictions.json").read_text())
    first_odds = json.loads((out / "null_odds.json").read_text())
    # Google's second 2.0 step: predict only, with its TPU flags as its README writes them.
    proc = run_script(squad_args(tiny_bert, out, "--version_2_with_negative", "--do_predict",
                                 f"--predict_file={dev}", "--predict_batch_size=64",
                                 "--use_tpu=False", "--iterations_per_loop=1000"),
                      script=SCRIPT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "accepted and ignored" in proc.stderr
    assert json.loads((out / "predictions.json").read_text()) == first
    odds = json.loads((out / "null_odds.json").read_text())
    assert list(odds) == list(first_odds)
    np.testing.assert_allclose(list(odds.values()), list(first_odds.values()), atol=1e-4)
    assert json.loads((out / "run_config.json").read_text())["identity"]["train_data"]


def _squad_file(tmp_path, name, transform):
    raw = json.loads(shared("squad", "slices", "train-v2.0-first10articles.json").read_text())
    raw["data"] = raw["data"][:1]
    transform(raw)
    path = tmp_path / name
    path.write_text(json.dumps(raw))
    return path


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, tiny_bert):
    from bert_tf.errors import UsageError
    from bert_tf.data.glue import DataError
    from bert_tf.qa import SquadArgs, run_squad

    v2 = shared("squad", "slices", "train-v2.0-first10articles.json")
    v1 = shared("squad", "dev-v1.1.json")

    def bad_start(raw):
        qa = next(q for q in raw["data"][0]["paragraphs"][0]["qas"] if q["answers"])
        qa["answers"][0]["answer_start"] += 3

    def empty_context(raw):
        raw["data"][0]["paragraphs"][1]["context"] = "  "

    cases = [
        (dict(train_file=str(v2)), DataError, "pass --version_2_with_negative"),
        (dict(train_file=str(v1), version_2_with_negative=True), DataError,
         "SQuAD 1.1 data"),
        (dict(train_file=str(_squad_file(tmp_path, "start.json", bad_start)),
              version_2_with_negative=True), DataError, "does not point at its text"),
        (dict(train_file=str(_squad_file(tmp_path, "empty.json", empty_context)),
              version_2_with_negative=True), DataError, "its context is empty"),
        (dict(train_file=str(v1), max_seq_length=60, max_query_length=64), UsageError,
         "max_query_length + 3"),
        (dict(train_file=str(v1), doc_stride=0), UsageError, "--doc_stride=0"),
        (dict(train_file=str(v1), doc_stride=400), UsageError,
         "windows would not overlap"),
        (dict(train_file=str(shared("glue", "MRPC", "train.tsv"))), DataError,
         "not SQuAD JSON"),
        (dict(train_file=str(tmp_path / "list.json")), DataError, "not SQuAD JSON"),
        (dict(train_file=str(v1.parent)), UsageError, "is a folder"),
    ]
    (tmp_path / "list.json").write_text("[1, 2]")
    for overrides, error, message in cases:
        out = tmp_path / "out"
        settings = {"max_seq_length": 128, "max_query_length": 32, "doc_stride": 64,
                    **overrides}
        args = SquadArgs(init_checkpoint=tiny_bert, output_dir=str(out), do_train=True,
                         **settings)
        with pytest.raises(error, match=message.replace("+", r"\+")):
            run_squad(args)
        assert not out.exists(), overrides

    cased = tmp_path / "cased_L-2_H-32"
    tiny_dir(str(cased))
    with pytest.raises(UsageError, match="cased model"):
        run_squad(SquadArgs(init_checkpoint=str(cased), output_dir=str(tmp_path / "c"),
                            do_train=True, train_file=str(v1), do_lower_case=True,
                            do_lower_case_given=True, max_seq_length=128,
                            max_query_length=32, doc_stride=64))
    assert not (tmp_path / "c").exists()

    # The script: one line naming the file and the question id, exit 2, nothing written.
    bad = _squad_file(tmp_path, "start2.json", bad_start)
    qid = next(q["id"] for q in json.loads(bad.read_text())["data"][0]["paragraphs"][0]["qas"]
               if q["answers"])
    proc = run_script(squad_args(tiny_bert, tmp_path / "s", "--do_train", f"--train_file={bad}",
                                 "--version_2_with_negative"), script=SCRIPT)
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if "error" in l]
    assert len(lines) == 1 and str(bad) in lines[0] and qid in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "s").exists()


def test_unlabelled_questions_and_questions_without_windows(tmp_path):
    """A 2.0 model predicts unlabelled questions (id and question only), and a question whose
    context has no word piece (no window at all) is answered "" with its null odds, so the
    official script can score the file."""
    from bert_tf.data import squad

    raw = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [
        {"context": "The Normans were in Normandy.",
         "qas": [{"id": "q0", "question": "Who was in Normandy?"}]},
        {"context": "\u200b\u200b \ufffd", "qas": [{"id": "q1", "question": "What?"}]}]}]}
    path = tmp_path / "new.json"
    path.write_text(json.dumps(raw))
    data = squad.read_squad(str(path), True)
    assert not data.has_answers
    features = squad.convert_to_store(data, vocab(), True, squad.FeatureSettings(),
                                      str(tmp_path / "cache"))
    assert np.asarray(features["example_index"]).tolist() == [0]
    start = np.zeros((1, 384), np.float32)
    predictions, nbest, null_odds = answers(data, features, start, start.copy(),
                                            version_2_with_negative=True)
    assert predictions["q1"] == "" and null_odds["q1"] > 100 and set(null_odds) == {"q0", "q1"}
    with pytest.raises(squad.DataError, match="SQuAD 2.0 data"):
        labelled = json.loads(shared("squad", "slices", "dev-v2.0-first5articles.json")
                              .read_text())
        (tmp_path / "v2.json").write_text(json.dumps(labelled))
        squad.read_squad(str(tmp_path / "v2.json"), False)


def test_predict_only_run_keeps_the_training_record(tmp_path):
    """--do_predict alone in a trained run's folder (Google's 2.0 threshold step) leaves
    run_config.json as training wrote it: the training command still resumes, another one is
    still refused."""
    from bert_tf import BertConfig
    from bert_tf.errors import UsageError
    from bert_tf.qa import SquadArgs
    from bert_tf.training.loop import checkpoint_dir
    from bert_tf.training.run import guard_output_dir

    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=37)
    out = tmp_path / "run"
    train = SquadArgs(output_dir=str(out), do_train=True, learning_rate=3e-5)
    guard_output_dir(train, config, True, train_data="abc")
    os.makedirs(checkpoint_dir(str(out)))
    (pathlib.Path(checkpoint_dir(str(out))) / "ckpt-10.index").write_bytes(b"")
    guard_output_dir(SquadArgs(output_dir=str(out), do_predict=True), config, True)
    guard_output_dir(train, config, True, train_data="abc")  # resumes
    with pytest.raises(UsageError, match="train_data"):
        guard_output_dir(train, config, True, train_data="another file")
