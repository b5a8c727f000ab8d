"""azure/scoring/score.py, the scoring script of `submit.py deploy`: called as Azure's inference
server calls it (init(), then run(body)) on real exports of tiny models, and (slow) served by
the server itself, `azmlinfsrv`, on loopback."""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, shared

SCORE = REPO / "azure" / "scoring" / "score.py"
TEXTS_A = ["The company said profits rose.", "Stocks fell in Tokyo on Monday."]
TEXTS_B = ["Profits went up, the firm said.", "Markets rose sharply in Paris."]


def tiny(num_layers=1):
    from bert_tf import BertConfig

    return BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=num_layers,
                      num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A tiny MRPC classifier and a tiny CoNLL tagger, exported as run_classifier.py and
    run_ner.py --export=saved_model export them."""
    import keras

    from bert_tf.data import conll
    from bert_tf.export import export_classifier, export_tagger
    from bert_tf.modeling import BertClassifier, BertTokenClassifier

    root = tmp_path_factory.mktemp("exports")
    vocab = str(shared("vocab", "uncased_vocab.txt"))
    keras.utils.set_random_seed(11)
    export_classifier(BertClassifier(tiny(), 2), vocab, True, str(root / "mrpc"),
                      task_name="MRPC", label_names=["0", "1"], regression=False,
                      pair_task=True, max_seq_length=64)
    export_tagger(BertTokenClassifier(tiny(), len(conll.LABELS)), vocab, True, str(root / "ner"),
                  label_names=list(conll.LABELS), max_seq_length=64)
    return root


def load_score(model_dir, monkeypatch):
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(model_dir))
    spec = importlib.util.spec_from_file_location("bert_tf_score", SCORE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.init()
    return module


def direct(export, text_a, text_b=None):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    model = tf.saved_model.load(str(export))
    if text_b is None:
        return model.signatures["text"](text_a=tf.constant(text_a))
    return model.signatures["text_pair"](text_a=tf.constant(text_a), text_b=tf.constant(text_b))


def test_run_answers_with_the_models_labels_and_probabilities(exports, monkeypatch):
    # Azure mounts the registered model in a folder of its own: init() finds the export in it.
    nested = exports / "azureml-models" / "mrpc-model" / "1"
    nested.parent.mkdir(parents=True, exist_ok=True)
    if not nested.exists():
        shutil.copytree(exports / "mrpc", nested / "mrpc")
    score = load_score(exports / "azureml-models", monkeypatch)
    body = {"instances": [{"text_a": a, "text_b": b} for a, b in zip(TEXTS_A, TEXTS_B)]
            + ["just one text"]}
    predictions = score.run(json.dumps(body))["predictions"]
    want = direct(exports / "mrpc", TEXTS_A + ["just one text"], TEXTS_B + [""])
    assert [p["label"] for p in predictions] == [x.decode() for x in want["label"].numpy()]
    got = np.array([[p["probabilities"]["0"], p["probabilities"]["1"]] for p in predictions])
    np.testing.assert_allclose(got, want["probabilities"].numpy(), atol=1e-6)


@pytest.mark.parametrize("body,message", [
    ("not json", "the body is not JSON"),
    ('{"texts": ["a"]}', 'send {"instances": [...]}'),
    ('{"instances": []}', "instances is empty"),
    ('{"instances": ["ok", "  "]}', "instance 1: empty text"),
    ('{"instances": [{"text_b": "only b"}]}', "instance 0: empty text"),
    ('{"instances": [{"text_a": 3}]}', "instance 0: a text must be a string, got int"),
    ('{"instances": [{"text_a": "a", "label": 1}]}', "unknown field(s) ['label']"),
    (json.dumps({"instances": ["x"] * 257}), "257 instances, more than 256"),
])
def test_bad_requests_get_a_400_with_a_message(exports, monkeypatch, body, message):
    score = load_score(exports / "mrpc", monkeypatch)
    answer = score.run(body)
    assert answer["status"] == 400 and message in answer["error"], answer
    assert "Traceback" not in answer["error"]


def test_ner_run_answers_with_entities_and_their_spans(exports, monkeypatch):
    score = load_score(exports / "ner", monkeypatch)
    text = "Ada Lovelace met Charles Babbage in London ."
    (prediction,) = score.run(json.dumps({"instances": [{"text": text}]}))["predictions"]
    for entity in prediction["entities"]:
        assert text[entity["start"]:entity["end"]] == entity["text"]
        assert entity["type"] in {"PER", "ORG", "LOC", "MISC"} and 0 < entity["score"] <= 1
    assert score.run('{"instances": [{"text_a": "a", "text_b": "b"}]}')["status"] == 400


# -- served by azmlinfsrv -------------------------------------------------------------------------

SERVER_PACKAGES = ("tensorflow==2.18.1", "tensorflow-text==2.18.1",
                   "azureml-inference-server-http==1.5.1")


def server_venv() -> Path:
    """A venv with Azure's inference server and TensorFlow, as the deployment's image has them
    (its pins clash with this project's venv: pydantic, OpenTelemetry, wrapt), made once in
    the cache folder."""
    cache = Path(os.environ.get("BERT_TF_CACHE", Path.home() / ".cache" / "bert_tf"))
    venv = cache / ("azmlinfsrv-" + "-".join(p.split("==")[1] for p in SERVER_PACKAGES))
    if not (venv / "bin" / "azmlinfsrv").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *SERVER_PACKAGES],
                       check=True, timeout=1800)
    return venv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, data: bytes):
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def matmuls(export: Path) -> int:
    """The MatMul kernels in an export's graph (every function of its saved_model.pb)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((export / "saved_model.pb").read_bytes())
    return sum(node.op == "MatMul" for function in saved.meta_graphs[0].graph_def.library.function
               for node in function.node_def)


def test_init_sets_tensorflows_threads_for_the_exports_chains(exports, tmp_path):
    """The export's graph is cut into serving_info.json's parallel_chains chains, and a fresh
    worker's init() gives TensorFlow one inter-op thread per chain (no more than the cores),
    the cores shared among them, before the first op; threads the operator set in the
    environment win; an export in one chain keeps TensorFlow's defaults."""
    import keras

    from bert_tf.export import export_classifier
    from bert_tf.modeling import BertClassifier

    info = json.loads((exports / "mrpc" / "serving_info.json").read_text())
    assert info["parallel_chains"] == 2  # the default export
    keras.utils.set_random_seed(11)
    export_classifier(BertClassifier(tiny(), 2), str(shared("vocab", "uncased_vocab.txt")), True,
                      str(tmp_path / "one"), task_name="MRPC", label_names=["0", "1"],
                      regression=False, pair_task=True, max_seq_length=64, parallel_chains=1)
    assert json.loads((tmp_path / "one" / "serving_info.json").read_text())[
        "parallel_chains"] == 1
    # Two chains: each computes its own keys and values.
    assert matmuls(exports / "mrpc") > matmuls(tmp_path / "one")

    def init_in_a_fresh_process(export, **environment):
        code = ("import importlib.util, json, logging, tensorflow as tf\n"
                "logging.basicConfig(level=logging.INFO)\n"
                f"spec = importlib.util.spec_from_file_location('score', {str(SCORE)!r})\n"
                "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
                "m.init()\n"
                "print(json.dumps([tf.config.threading.get_inter_op_parallelism_threads(),\n"
                "                  tf.config.threading.get_intra_op_parallelism_threads()]))\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TF_NUM_")}
        env.update(AZUREML_MODEL_DIR=str(export), TF_CPP_MIN_LOG_LEVEL="2", **environment)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        said = [line for line in out.stderr.splitlines() if "TensorFlow threads:" in line]
        return json.loads(out.stdout.splitlines()[-1]), said[-1]

    cores = len(os.sched_getaffinity(0))
    got, said = init_in_a_fresh_process(exports / "mrpc")
    assert got == [min(2, cores), max(1, cores // 2)]
    assert f"inter-op {min(2, cores)} (the export's)" in said
    # The environment's intra-op threads win; TensorFlow reads the variable itself (0 here).
    got, said = init_in_a_fresh_process(exports / "mrpc", TF_NUM_INTRAOP_THREADS="3")
    assert got == [min(2, cores), 0] and "intra-op 3 (TF_NUM_INTRAOP_THREADS)" in said
    got, said = init_in_a_fresh_process(tmp_path / "one")
    assert got == [0, 0] and "TensorFlow's defaults" in said

    spec = importlib.util.spec_from_file_location("bert_tf_score", SCORE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.threads({"parallel_chains": 2}, 8) == (2, 4)
    assert module.threads({"parallel_chains": 4}, 2) == (2, 1)  # extra chains wait their turn
    assert module.threads({"parallel_chains": 1}, 8) is None  # one chain: a GPU export
    assert module.threads({"model": "classifier"}, 8) is None  # an export from before chains


@pytest.mark.slow
def test_azmlinfsrv_serves_the_scoring_script_on_loopback(exports, tmp_path):
    """Azure's inference server runs score.py as a deployment would: /score answers with the
    SavedModel's labels; an empty text and a body that is not JSON get 400 and the message,
    not a stack trace."""
    venv = server_venv()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(AZUREML_MODEL_DIR=str(exports / "mrpc"), TF_CPP_MIN_LOG_LEVEL="2")
    server = subprocess.Popen([str(venv / "bin" / "azmlinfsrv"), "--entry_script", str(SCORE),
                               "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            assert server.poll() is None, server.stdout.read()[-3000:]
            try:
                with urllib.request.urlopen(url + "/", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "the server did not come up in 300 s"
            time.sleep(1)
        body = {"instances": [{"text_a": a, "text_b": b} for a, b in zip(TEXTS_A, TEXTS_B)]}
        status, text = post(url + "/score", json.dumps(body).encode())
        assert status == 200, text
        want = direct(exports / "mrpc", TEXTS_A, TEXTS_B)
        assert [p["label"] for p in json.loads(text)["predictions"]] == [
            x.decode() for x in want["label"].numpy()]
        status, text = post(url + "/score", b'{"instances": [{"text_a": "", "text_b": "b"}]}')
        assert status == 400 and json.loads(text) == {"error": "instance 0: empty text"}
        status, text = post(url + "/score", b"{not json")
        assert status == 400 and "not JSON" in json.loads(text)["error"]
        assert "Traceback" not in text
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_exports_answer_empty_batches_and_texts_with_no_words(exports):
    """Batches a service meets: no text at all, texts of only spaces or control characters,
    mixed with real ones. The classifier answers every row; the tagger finds no entity in a
    text without words."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    classifier = tf.saved_model.load(str(exports / "mrpc"))
    tagger = tf.saved_model.load(str(exports / "ner"))
    pair = classifier.signatures["text_pair"]
    out = pair(text_a=tf.constant(["\x01", "", "a b"]), text_b=tf.constant(["x", "", "\x02"]))
    assert out["probabilities"].shape == (3, 2)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(1), 1.0, atol=1e-5)
    assert classifier.signatures["text"](text_a=tf.constant([], tf.string))[
        "probabilities"].shape == (0, 2)
    entities = tagger.signatures["entities"]
    for texts in (["   "], ["\x01\x02"], [], ["", "Ada Lovelace"], ["Ada Lovelace", "\x01"]):
        out = entities(text=tf.constant(texts, tf.string))
        assert out["num_tokens"].numpy().tolist() == [len(t.split()) if t.strip("\x01\x02")
                                                      else 0 for t in texts], texts
        assert out["num_entities"].shape == (len(texts),)
