"""extend_vocab.py: new tokens in an existing checkpoint (Google TF1, Hugging Face, bert_tf),
old weights bit for bit, new rows from the old pieces."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, random_batch, shared, tiny_config

CHARS = "abcdefghijklmnopqrstuvwxyz"


def tiny_vocab(path):
    """99 tokens (tiny_config's vocab_size) in Google's layout: [PAD], 10 unused, the four
    specials, every letter as c and ##c, then a few words and pieces."""
    tokens = ["[PAD]"] + [f"[unused{i}]" for i in range(10)] + ["[UNK]", "[CLS]", "[SEP]",
                                                                  "[MASK]"]
    tokens += list(CHARS) + [f"##{c}" for c in CHARS] + [".", ","]
    words = ["the", "data", "frame", "##frame", "##s", "kube", "##net", "##es", "py", "##thon",
             "token", "##izer", "is", "a", "##ing", "run", "fast", "slow", "model", "text",
             "word", "piece", "new", "old", "code", "line", "file", "big", "small", "set", "get",
             "put", "map"]
    tokens += [w for w in words if w not in tokens]
    tokens = tokens[:99]
    assert len(tokens) == 99 and len(set(tokens)) == 99
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return tokens


def run(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, str(REPO / "extend_vocab.py"), *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=300)


def tensors(path, fmt):
    if fmt == "huggingface":
        from safetensors.numpy import load_file

        return load_file(os.path.join(path, "model.safetensors"))
    import tensorflow as tf

    from bert_tf.checkpoints import detect_format

    prefix = detect_format(path)[1]
    reader = tf.train.load_checkpoint(prefix)
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}


def save(model, fmt, directory):
    from bert_tf import checkpoints as ck

    if fmt == "google":
        ck.save_google(model, str(directory / "bert_model.ckpt"))
    elif fmt == "huggingface":
        ck.save_huggingface(model, str(directory))
    elif fmt == "bert_tf_run":  # a training run's checkpoints/: the loop's layout and marker
        import keras
        import tensorflow as tf

        optimizer = keras.optimizers.Adam()
        optimizer.build(model.trainable_variables)
        state = tf.train.Checkpoint(model=model, encoder=model.encoder, optimizer=optimizer)
        checkpoints = directory / "checkpoints"  # the run's output_dir holds its config
        tf.train.CheckpointManager(state, str(checkpoints), 3, checkpoint_name="ckpt").save(12)
        ck.write_marker(str(checkpoints), model)
        model.encoder.config.to_json_file(str(directory / "bert_config.json"))
    else:
        ck.save(model, str(directory / "model"))


@pytest.mark.parametrize("fmt", ["google", "huggingface", "bert_tf", "bert_tf_run"])
@pytest.mark.parametrize("mode", ["replace_unused", "append"])
def test_old_weights_and_old_logits_are_bit_identical(tmp_path, fmt, mode):
    from bert_tf import checkpoints as ck
    from bert_tf.modeling.models import BertPretrainer

    config = tiny_config()
    model = BertPretrainer(config)
    batch = random_batch(config, seed=3)
    ids = np.asarray(batch["input_ids"])  # text without the new tokens: no [unusedN] id either
    batch["input_ids"] = np.where((ids >= 1) & (ids <= 10), ids + 20, ids).astype(ids.dtype)
    before = model(batch, training=False)["mlm_logits"].numpy()
    src = tmp_path / "src"
    src.mkdir()
    save(model, fmt, src)
    old = tiny_vocab(src / "vocab.txt")
    new_tokens = ["dataframe", "kubernetes", "python", "##izers"]
    out = tmp_path / "out"
    from bert_tf.vocab_extension import ExtendArgs, extend_vocab

    init = src / "checkpoints" if fmt == "bert_tf_run" else src  # a run: its checkpoints/
    extend_vocab(ExtendArgs(init_checkpoint=str(init), output_dir=str(out), mode=mode,
                            new_tokens=new_tokens, vocab_file=str(src / "vocab.txt")))
    summary = json.loads((out / "extension.json").read_text())
    assert summary["format"] == fmt.replace("_run", "")
    vocab = (out / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    rows = {t["token"]: t["id"] for t in summary["tokens"]}
    if mode == "replace_unused":
        assert len(vocab) == 99 and sorted(rows.values()) == [1, 2, 3, 4]
    else:
        assert len(vocab) == 103 and sorted(rows.values()) == [99, 100, 101, 102]
        assert vocab[:99] == old
    assert [vocab[rows[t]] for t in new_tokens] == new_tokens
    config_name = "config.json" if fmt == "huggingface" else "bert_config.json"
    assert json.loads((out / config_name).read_text())["vocab_size"] == len(vocab)
    kept = [i for i in range(99) if i not in rows.values()]  # every row not given away

    a, b = tensors(init, fmt), tensors(out, fmt)
    if fmt == "bert_tf_run":  # a run's optimizer slots and counters are not carried over
        state = {n for n in a if n.startswith(("optimizer/_variables/", "optimizer/_iter"))}
        assert state
        assert summary["training_state_dropped"] == len(state)
        a = {n: v for n, v in a.items() if n not in state}
    assert set(a) == set(b)
    resized = set(summary["resized"])
    assert resized and all(n in b for n in resized)
    old_ids = {t: i for i, t in enumerate(old)}
    for name in a:
        if name in resized:
            np.testing.assert_array_equal(b[name][kept], a[name][kept])
            for token, row in rows.items():  # the mean of today's pieces
                pieces = next(t["pieces"] for t in summary["tokens"] if t["token"] == token)
                expected = a[name][[old_ids[p] for p in pieces]].astype(np.float64).mean(0)
                np.testing.assert_allclose(b[name][row], expected, rtol=1e-6)
        elif isinstance(a[name], bytes):  # the object graph of the bert_tf format
            assert a[name] == b[name]
        else:
            np.testing.assert_array_equal(a[name], b[name])

    extended = BertPretrainer(tiny_config(vocab_size=len(vocab)))
    report = ck.load(extended, str(out))
    assert report.missing == []  # the heads too (the MLM bias, for the logits below)
    after = extended(batch, training=False)["mlm_logits"].numpy()
    np.testing.assert_array_equal(after[..., kept], before[..., kept])


def test_extended_minilm_loads_into_transformers_and_tokenizes_the_new_words(tmp_path):
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "minilm"
    result = run(f"--init_checkpoint={shared('models', 'all-MiniLM-L6-v2')}",
                 f"--output_dir={out}", f"--corpus_file={shared('corpus', 'python_docs_train.txt')}",
                 "--num_new_tokens=50", "--mode=append")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "added 50 tokens" in result.stdout and "asyncio" in result.stdout
    model, info = transformers.BertModel.from_pretrained(str(out), output_loading_info=True)
    assert model.config.vocab_size == 30572
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    tok = transformers.BertTokenizer(str(out / "vocab.txt"), do_lower_case=True)
    assert tok.tokenize("asyncio iterable") == ["asyncio", "iterable"]
    from bert_tf.data.record_index import read_fingerprint, vocab_fingerprint

    assert read_fingerprint(str(out))["sha256"] == vocab_fingerprint(str(out / "vocab.txt"))["sha256"]
    summary = json.loads((out / "extension.json").read_text())
    first = summary["tokens"][0]
    assert first["count"] >= 20 and len(first["pieces"]) >= 2


def test_tokens_the_tokenizer_cannot_produce_are_refused(tmp_path):
    src = shared("models", "all-MiniLM-L6-v2")
    out = tmp_path / "o"
    cases = [("Kubernetes", "upper case"), ("café", "accents"), ("data frame", "whitespace"),
             ("py-test", "punctuation '-'"), ("##a!", "punctuation '!'"),
             ("the", "already in the vocabulary"), ("中文", "CJK")]
    for token, reason in cases:
        result = run(f"--init_checkpoint={src}", f"--output_dir={out}", f"--new_tokens={token}")
        assert result.returncode == 2, (token, result.stderr[-500:])
        line = result.stderr.strip().splitlines()[-1]
        assert "Traceback" not in result.stderr and reason in line and repr(token) in line
        assert not out.exists()
    # A vocabulary that is not the checkpoint's: refused before anything is written.
    result = run(f"--init_checkpoint={src}", f"--output_dir={out}", "--new_tokens=zqxw",
                 f"--vocab_file={shared('vocab', 'cased_vocab.txt')}", "--nodo_lower_case")
    assert result.returncode == 2 and "30522 rows but the vocabulary has 28996" in result.stderr
    assert not out.exists() and not (tmp_path / "o.partial").exists()
    too_many = [f"zqx{c}{d}{e}" for c in CHARS for d in CHARS for e in "xyz"][:1000]
    result = run(f"--init_checkpoint={src}", f"--output_dir={out}", "--mode=replace_unused",
                 f"--new_tokens={','.join(too_many)}")
    assert result.returncode == 2 and "994 [unusedN] lines" in result.stderr
