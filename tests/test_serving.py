"""Serving exports: a SavedModel on raw text (tokenizer in the graph) from run_classifier.py /
run_ner.py --export=saved_model and export_model.py, loaded in a fresh process that imports
only tensorflow and tensorflow_text, against the runs' own prediction files."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, shared
from tests.test_run_classifier import run_script, tiny_dir

EXPORT = str(REPO / "export_model.py")
NER = str(REPO / "run_ner.py")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return tiny_dir(str(tmp_path_factory.mktemp("tiny_bert")))


def export_script(args):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, EXPORT, *args], env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def fresh_process(code: str, *args, cwd):
    """Run `code` in a new interpreter without bert_tf on its path; it prints one JSON line."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    code = ("import json, sys\nimport tensorflow as tf\n"
            "import tensorflow_text  # noqa: F401 (registers FastWordpieceTokenizeWithOffsets)\n"
            + code + "\nassert 'bert_tf' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def weight_bytes(model_dir) -> int:
    """Bytes of a run's model weights in float32: its BertClassifier's, counted from the
    run's bert_config.json."""
    from bert_tf import BertConfig
    from bert_tf.modeling import BertClassifier

    model = BertClassifier(BertConfig.from_json_file(os.path.join(model_dir, "bert_config.json")),
                           2)
    return sum(4 * int(np.prod(w.shape)) for w in model.weights)


def test_pair_lengths_are_googles_truncate_seq_pair():
    """The closed form the graph uses against the pop loop (bert_tf.data.glue.truncate_pair,
    Google's _truncate_seq_pair) on every pair of lengths up to 30 and budgets up to 24."""
    import tensorflow as tf

    from bert_tf.data.glue import truncate_pair
    from bert_tf.serving.saved_model import pair_lengths

    cases = [(la, lb, m) for la in range(31) for lb in range(31) for m in range(1, 25)]
    got_a, got_b = pair_lengths(*(tf.constant(c, tf.int64) for c in zip(*cases)))
    for (la, lb, m), na, nb in zip(cases, got_a.numpy(), got_b.numpy()):
        a, b = list(range(la)), list(range(lb))
        truncate_pair(a, b, m)
        assert (na, nb) == (len(a), len(b)), (la, lb, m)


MRPC_CODE = """
import csv
model = tf.saved_model.load(sys.argv[1])
rows = list(csv.reader(open(sys.argv[2], encoding="utf-8"), delimiter="\\t",
                       quoting=csv.QUOTE_NONE))[1:]
probabilities, labels = [], []
serve = model.signatures["serving_default"]
for i in range(0, len(rows), 100):
    out = serve(text_a=tf.constant([r[3] for r in rows[i:i + 100]]),
                text_b=tf.constant([r[4] for r in rows[i:i + 100]]))
    probabilities += out["probabilities"].numpy().tolist()
    labels += [x.decode() for x in out["label"].numpy()]
single = model.signatures["text"](text_a=tf.constant(["", "one text alone"]))
empty = model.signatures["text_pair"](text_a=tf.constant(["one text alone", ""]),
                                      text_b=tf.constant(["", ""]))
print(json.dumps({"probabilities": probabilities, "labels": labels,
                  "single": single["probabilities"].numpy().tolist(),
                  "empty_b": empty["probabilities"].numpy().tolist()}))
"""


@pytest.fixture(scope="module")
def mrpc_run(tiny_bert, tmp_path_factory):
    """A tiny MRPC run: a few steps, dev predictions, the export at the end."""
    out = tmp_path_factory.mktemp("mrpc_run")
    proc = run_script(["--task=MRPC", f"--data_dir={shared('glue', 'MRPC')}",
                       f"--init_checkpoint={tiny_bert}", f"--output_dir={out}",
                       "--max_seq_length=64", "--do_train", "--max_train_examples=48",
                       "--train_batch_size=16", "--num_train_epochs=1", "--do_predict",
                       "--predict_split=dev", "--export=saved_model"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_classifier_savedmodel_on_raw_text_matches_run_classifier(mrpc_run, tmp_path):
    """Loaded with tensorflow and tensorflow_text only, the export gives dev_results.tsv's
    probabilities (run_classifier.py --do_predict, Google's file) within 1e-5 on all 408 MRPC
    dev pairs, the same labels by name; weights stored once; an empty text_b is a single text."""
    export = mrpc_run / "export" / "saved_model"
    got = fresh_process(MRPC_CODE, export, shared("glue", "MRPC", "dev.tsv"), cwd=tmp_path)
    want = np.loadtxt(mrpc_run / "dev_results.tsv", delimiter="\t")
    probabilities = np.array(got["probabilities"])
    assert probabilities.shape == want.shape == (408, 2)
    assert np.abs(probabilities - want).max() < 1e-5
    assert got["labels"] == [str(i) for i in want.argmax(1)]
    assert np.allclose(got["single"][1], got["empty_b"][0], atol=1e-6)
    info = json.loads((export / "serving_info.json").read_text())
    assert info["labels"] == ["0", "1"] and info["signatures"]["serving_default"] == "text_pair"
    stored = sum(f.stat().st_size for f in (export / "variables").iterdir())
    assert weight_bytes(mrpc_run) <= stored <= 1.1 * weight_bytes(mrpc_run)


@pytest.mark.slow
def test_export_model_from_a_run_folder_is_the_same_model(mrpc_run, tmp_path):
    """export_model.py --model_dir on the finished run: the same weights as --export wrote."""
    import tensorflow as tf

    proc = export_script([f"--model_dir={mrpc_run}", f"--export_dir={tmp_path / 'again'}"],
                      )
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = tf.train.load_checkpoint(str(mrpc_run / "export/saved_model/variables/variables"))
    again = tf.train.load_checkpoint(str(tmp_path / "again/variables/variables"))
    names = [n for n in first.get_variable_to_shape_map() if "VARIABLE_VALUE" in n]
    assert len(names) > 30
    for name in names:
        np.testing.assert_array_equal(first.get_tensor(name), again.get_tensor(name))


@pytest.mark.slow
def test_export_model_from_a_hugging_face_checkpoint_with_its_labels(tmp_path):
    """Any checkpoint with a head: a Hugging Face folder whose config names its labels
    (id2label) exports with those names."""
    import keras
    import tensorflow as tf
    import tensorflow_text  # noqa: F401 (the export's one tensorflow-text op)

    from bert_tf import BertConfig, checkpoints
    from bert_tf.modeling import BertClassifier

    keras.utils.set_random_seed(3)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    model = BertClassifier(config, 2)
    model.label_names = ["negative", "positive"]
    checkpoints.save_huggingface(model, str(tmp_path / "hf"))
    import shutil
    shutil.copy(shared("vocab", "uncased_vocab.txt"), tmp_path / "hf" / "vocab.txt")
    proc = export_script([f"--init_checkpoint={tmp_path / 'hf'}", f"--export_dir={tmp_path / 'e'}",
                       "--max_seq_length=32"], )
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = tf.saved_model.load(str(tmp_path / "e"))
    out = served.signatures["serving_default"](text_a=tf.constant(["a fine film", "awful"]))
    assert set(x.decode() for x in out["label"].numpy()) <= {"negative", "positive"}
    features = {"input_ids": tf.constant([[101, 1037, 2986, 2143, 102]], tf.int32),
                "input_mask": tf.ones([1, 5], tf.int32), "segment_ids": tf.zeros([1, 5], tf.int32)}
    want = tf.nn.softmax(model(features, training=False)["logits"]).numpy()
    np.testing.assert_allclose(out["probabilities"].numpy()[0], want[0], atol=1e-6)


@pytest.mark.parametrize("args,message", [
    ([], "pass one of --model_dir"),
    (["--init_checkpoint={bert}", "--task_name=MRPC"], "has no classification head"),
    pytest.param(["--model_dir=/nonexistent"], "not a fine-tuning run's output_dir",
                 marks=pytest.mark.slow),
    pytest.param(["--init_checkpoint={bert}"], "does not name its labels",
                 marks=pytest.mark.slow),
    pytest.param(["--init_checkpoint={bert}", "--task_name=NOPE"], "--task_name: unknown task",
                 marks=pytest.mark.slow),
    pytest.param(["--model_dir=/nonexistent", "--parallel_chains=0"], "--parallel_chains=0: "
                 "give 1 to 64", marks=pytest.mark.slow),
])
def test_export_model_bad_input_is_one_line_exit_2(tiny_bert, tmp_path, args, message):
    proc = export_script([a.format(bert=tiny_bert) for a in args]
                      + [f"--export_dir={tmp_path / 'e'}"], )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "e").exists()


NER_CODE = """
model = tf.saved_model.load(sys.argv[1])
sentences, words = [], []
for line in open(sys.argv[2], encoding="utf-8"):
    if not line.strip():
        if words:
            sentences.append(words)
        words = []
        continue
    words.append(line.split())
texts = [" ".join(w[0] for w in s) for s in sentences]
out_rows = []
for i in range(0, len(texts), 64):
    out = model.signatures["serving_default"](text=tf.constant(texts[i:i + 64]))
    for k in range(len(texts[i:i + 64])):
        n, e = int(out["num_tokens"][k]), int(out["num_entities"][k])
        out_rows.append({
            "text": texts[i + k], "want": [w[2] for w in sentences[i + k]],
            "tags": [x.decode() for x in out["token_label"][k][:n].numpy()],
            "entities": [[t.decode(), int(a), int(b), x.decode()] for t, a, b, x in zip(
                out["entity_type"][k][:e].numpy(), out["entity_start"][k][:e].numpy(),
                out["entity_end"][k][:e].numpy(), out["entity_text"][k][:e].numpy())]})
print(json.dumps(out_rows))
"""


def ner_predict_and_export(tiny_bert, tmp_path, lines: int, fmt: str):
    """run_ner.py --do_predict --export=FMT at max_seq_length 24 (long sentences cut into
    windows) on the first `lines` lines of CoNLL testb -> (its data folder, its output_dir)."""
    data = tmp_path / "conll"
    data.mkdir()
    text = shared("conll2003", "eng.testb").read_text(encoding="utf-8").splitlines()
    (data / "eng.testb").write_text("\n".join(text[:lines]) + "\n", encoding="utf-8")
    out = tmp_path / "ner"
    proc = run_script([f"--data_dir={data}", f"--init_checkpoint={tiny_bert}",
                       f"--output_dir={out}", "--max_seq_length=24", "--do_predict",
                       f"--export={fmt}"], script=NER)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return data, out


@pytest.mark.slow  # 13-23 s: the default run keeps to its 15-minute budget
def test_ner_savedmodel_entities_match_run_ner(tiny_bert, tmp_path):
    """run_ner.py --do_predict --export=saved_model at max_seq_length 24, so long sentences
    are cut into windows: for every sentence of a testb slice, fed as raw text (its words
    joined by spaces), the export's tags are run_ner.py's and its entities are seqeval's
    chunks of them, with character spans that cut the entity's words out of the text."""
    from seqeval.metrics.sequence_labeling import get_entities

    data, out = ner_predict_and_export(tiny_bert, tmp_path, 6000, "saved_model")
    rows = fresh_process(NER_CODE, out / "export" / "saved_model", out / "test_predictions.txt",
                         cwd=tmp_path)
    assert len(rows) > 300
    windows = entities = 0
    for row in rows:
        assert row["tags"] == row["want"], row["text"]
        words = row["text"].split(" ")
        starts = np.cumsum([0] + [len(w) + 1 for w in words])
        want = [[kind, int(starts[a]), int(starts[b] + len(words[b])),
                 " ".join(words[a:b + 1])] for kind, a, b in get_entities(row["want"])]
        assert row["entities"] == want, row["text"]
        entities += len(want)
        windows += len(words) > 22
    assert entities > 500 and windows > 20


ONNX_CLIENT = """
import csv, importlib.util, os
import numpy as np, onnxruntime
export = sys.argv[1]
info = json.load(open(os.path.join(export, "serving_info.json")))
spec = importlib.util.spec_from_file_location("tokenization", os.path.join(export,
                                                                            "tokenization.py"))
tokenization = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tokenization)
tokenizer = tokenization.FullTokenizer(os.path.join(export, "vocab.txt"),
                                       do_lower_case=info["do_lower_case"])
rows = list(csv.reader(open(sys.argv[2], encoding="utf-8"), delimiter="\\t",
                       quoting=csv.QUOTE_NONE))[1:]
budget = info["max_seq_length"] - 3
features = []
for row in rows:  # Google's run_classifier.py feature layout
    a, b = tokenizer.tokenize(row[3]), tokenizer.tokenize(row[4])
    while len(a) + len(b) > budget:
        (a if len(a) > len(b) else b).pop()
    tokens = ["[CLS]"] + a + ["[SEP]"] + b + ["[SEP]"]
    features.append((tokenizer.convert_tokens_to_ids(tokens), [0] * (len(a) + 2) + [1] * (len(b) + 1)))
session = onnxruntime.InferenceSession(os.path.join(export, "model.onnx"),
                                       providers=["CPUExecutionProvider"])
logits = []
for i in range(0, len(features), 64):
    batch = features[i:i + 64]
    width = max(len(ids) for ids, _ in batch)
    feed = {name: np.zeros((len(batch), width), np.int32) for name in info["inputs"]}
    for k, (ids, segments) in enumerate(batch):
        feed["input_ids"][k, :len(ids)] = ids
        feed["input_mask"][k, :len(ids)] = 1
        feed["segment_ids"][k, :len(ids)] = segments
    logits += session.run(["logits"], feed)[0].tolist()
assert "tensorflow" not in sys.modules
print(json.dumps({"logits": logits, "ids": [f[0] for f in features[:50]]}))
"""


def test_onnx_export_matches_bert_tf_logits_in_onnxruntime(mrpc_run, tmp_path):
    """export_model.py --export=onnx: model.onnx in onnxruntime, fed by the export's own
    client tokenizer in a process without TensorFlow, gives bert_tf's logits on the 408 MRPC
    dev pairs within 1e-4, and the client's ids are Google's."""
    from bert_tf.data import glue
    from bert_tf.data.records import FeatureTable
    from bert_tf.export import ExportArgs, _run_source
    from bert_tf.tokenization import FullTokenizer
    from bert_tf.training import loop

    export = tmp_path / "onnx"
    proc = export_script([f"--model_dir={mrpc_run}", "--export=onnx", f"--export_dir={export}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    client = subprocess.run([sys.executable, "-c", "import json, sys\n" + ONNX_CLIENT, export,
                             shared("glue", "MRPC", "dev.tsv")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    assert client.returncode == 0, client.stderr[-3000:]
    got = json.loads(client.stdout.strip().splitlines()[-1])

    source = _run_source(ExportArgs(model_dir=str(mrpc_run)))
    processor = glue.get_processor("MRPC")
    examples = processor.get_dev_examples(str(shared("glue", "MRPC")))
    tokenizer = FullTokenizer(source.vocab_file, do_lower_case=source.do_lower_case)
    features = glue.convert_examples_to_features(examples, processor.get_labels(), 64, tokenizer)
    assert got["ids"] == [list(f["input_ids"][:f["length"]]) for f in features[:50]]
    want = loop.predict(source.model, FeatureTable.from_features(features, 64, "int32"), 64,
                        max_seq_length=64)
    assert np.abs(np.array(got["logits"]) - want).max() < 1e-4


@pytest.mark.slow  # run_ner.py plus a tf2onnx conversion: ~30 s
def test_ner_onnx_tags_match_run_ner(tiny_bert, tmp_path):
    """run_ner.py --do_predict --export=onnx at max_seq_length 24 (long sentences cut into
    windows): model.onnx in onnxruntime, fed Google's word pieces of each testb sentence, tags
    every word as run_ner.py's test_predictions.txt does."""
    import onnxruntime

    from bert_tf.data import conll
    from bert_tf.tokenization import FullTokenizer

    data, out = ner_predict_and_export(tiny_bert, tmp_path, 3000, "onnx")
    export = out / "export" / "onnx"
    info = json.loads((export / "serving_info.json").read_text())
    assert info["model"] == "tagger" and info["max_seq_length"] == 24
    sentences = conll.read_conll(str(data / "eng.testb"))
    tokenizer = FullTokenizer(str(export / "vocab.txt"), do_lower_case=info["do_lower_case"])
    features = conll.convert_sentences_to_features(sentences, info["labels"], 24, tokenizer)
    assert len(features) > len(sentences)  # some sentences take several windows
    session = onnxruntime.InferenceSession(str(export / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    predictions = []
    for i in range(0, len(features), 64):
        batch = features[i:i + 64]
        feed = {name: np.zeros((len(batch), 24), np.int32) for name in info["inputs"]}
        for k, f in enumerate(batch):
            feed["input_ids"][k, :f["length"]] = f["input_ids"]
            feed["input_mask"][k, :f["length"]] = 1
        predictions += list(session.run(["logits"], feed)[0].argmax(-1))
    tags = conll.assemble_predictions(features, predictions, sentences, info["labels"])
    want = [[line.split()[2] for line in block.splitlines()]
            for block in (out / "test_predictions.txt").read_text().strip().split("\n\n")]
    assert tags == want
    assert len({t for row in tags for t in row}) > 2  # a random head still tags variously


@pytest.mark.parametrize("hidden_act,chains", [("gelu", 1), ("gelu_tanh", 1), ("relu", 1),
                                               ("gelu", 2), ("gelu", 4)])
def test_the_serving_forward_pass_is_the_keras_models(hidden_act, chains):
    """bert_tf.serving.forward (what an export's graph runs) against the Keras model it reads:
    a classifier (last layer at [CLS] only) and a tagger, with padding and two segments, every
    activation the config allows, the positions cut into 1, 2 or 4 chains (21 positions: chunks
    of unequal length; 3 positions in 4 chains: an empty one), within 1e-5."""
    import tensorflow as tf

    from bert_tf import BertConfig
    from bert_tf.modeling import BertClassifier, BertTokenClassifier
    from bert_tf.serving import forward

    config = BertConfig(vocab_size=500, hidden_size=48, num_hidden_layers=3,
                        num_attention_heads=4, intermediate_size=96, hidden_act=hidden_act,
                        max_position_embeddings=64)
    rng = np.random.default_rng(3)
    features = {"input_ids": rng.integers(1, 500, (3, 21)).astype("int32"),
                "input_mask": np.ones((3, 21), "int32"),
                "segment_ids": np.zeros((3, 21), "int32")}
    features["input_mask"][1, 9:] = 0
    features["segment_ids"][:, 7:] = 1
    short = {k: v[:, :3] for k, v in features.items()}
    run = tf.function(forward.logits, autograph=False, reduce_retracing=True)
    for model in (BertClassifier(config, 3), BertTokenClassifier(config, 5)):
        for weight in model.weights:  # non-trivial LayerNorm and bias weights too
            weight.assign(rng.normal(0, 0.2, weight.shape).astype("float32"))
        for inputs in (features, short):
            want = model(inputs, training=False)["logits"].numpy()
            got = run(model, {k: tf.constant(v) for k, v in inputs.items()}, chains).numpy()
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
