"""Faults users of BERT tools hit at the edges, each checked for its whole kind against an
independent oracle (Google's reading rules run through TensorFlow's own GFile, transformers),
never against bert_tf's own output."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import shared

TINY_GOOGLE = ("checkpoints", "google-tf1-tiny-random")


def _script(name, *args):
    """Run one of the repository's scripts as a user would; the CompletedProcess (text)."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, str(REPO / name), *args], env=env,
                          capture_output=True, text=True, timeout=600)


def _extract_rows(tmp_path, text, *flags):
    """extract_features.py on `text` with the tiny Google checkpoint: its JSON rows."""
    import json

    path = tmp_path / "input.txt"
    path.write_text(text, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    checkpoint = shared(*TINY_GOOGLE) / "bert_model.ckpt"
    proc = _script("extract_features.py", f"--input_file={path}", f"--output_file={out}",
                   f"--init_checkpoint={checkpoint}", "--max_seq_length=16", *flags)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in out.read_text().splitlines()]


# ---- 1. A vocabulary file has one id per line, whatever the line holds -----------------------

def _google_load_vocab(path) -> dict:
    """google-research/bert tokenization.load_vocab: GFile.readline() until "", every line one
    id, token = line.strip(). TensorFlow's GFile is the reader Google's code used."""
    import tensorflow as tf

    vocab, index = {}, 0
    with tf.io.gfile.GFile(str(path), "r") as reader:
        while True:
            token = reader.readline()
            if not token:
                break
            vocab[token.strip()] = index
            index += 1
    return vocab, index


def _tiny_lines():
    text = shared(*TINY_GOOGLE, "vocab.txt").read_text(encoding="utf-8")
    lines = text.split("\n")
    assert len(lines) == 15 and lines[-1] == "boy"  # no newline after the last token
    return lines


# name -> how the 15 lines of the tiny checkpoint's vocab.txt are changed (line 9 is "no").
VOCAB_VARIANTS = {
    "empty_9th_line": lambda ls: ls[:8] + [""] + ls[9:],
    "spaces_line": lambda ls: ls[:8] + ["   "] + ls[9:],
    "ideographic_space_line": lambda ls: ls[:8] + ["\u3000"] + ls[9:],
    "no_break_space_line": lambda ls: ls[:8] + ["\u00a0"] + ls[9:],
    "line_separator_inside": lambda ls: ls[:8] + ["n\u2028o"] + ls[9:],
    "paragraph_separator_line": lambda ls: ls[:8] + ["\u2029"] + ls[9:],
    "lone_cr_inside": lambda ls: ls[:8] + ["n\ro"] + ls[9:],
    "next_line_char_inside": lambda ls: ls[:8] + ["n\x85o"] + ls[9:],
    "crlf_endings": lambda ls: [line + "\r" for line in ls[:-1]] + ls[-1:],
    "trailing_newline": lambda ls: ls + [""],
    "trailing_blank_line": lambda ls: ls + ["", ""],
    "duplicate_token": lambda ls: ls[:8] + ["work"] + ls[9:],
}


@pytest.mark.parametrize("variant", sorted(VOCAB_VARIANTS))
def test_vocab_ids_and_size_follow_googles_reading(tmp_path, variant):
    from bert_tf.assets import count_vocab
    from bert_tf.tokenization import FullTokenizer, load_vocab, vocab_size

    path = tmp_path / "vocab.txt"
    path.write_bytes("\n".join(VOCAB_VARIANTS[variant](_tiny_lines())).encode("utf-8"))
    want_vocab, want_size = _google_load_vocab(path)
    assert count_vocab(str(path)) == vocab_size(path) == want_size
    assert dict(load_vocab(path)) == want_vocab
    assert FullTokenizer(str(path), True).vocab == want_vocab


def test_tiny_google_checkpoint_with_an_empty_vocab_line_is_accepted(tmp_path):
    """The issue's case: vocab_size 15 and a 15-line vocab.txt whose 9th line is empty."""
    from bert_tf.assets import resolve_model_assets
    from bert_tf.tokenization import FullTokenizer

    source = shared(*TINY_GOOGLE)
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(source, checkpoint)
    lines = _tiny_lines()
    (checkpoint / "vocab.txt").write_text("\n".join(lines[:8] + [""] + lines[9:]),
                                          encoding="utf-8")
    assets = resolve_model_assets(init_checkpoint=str(checkpoint / "bert_model.ckpt"))
    assert assets.config.vocab_size == 15
    tokenizer = FullTokenizer(assets.vocab_file, True)
    assert sorted(tokenizer.vocab.values()) == list(range(15))
    assert tokenizer.convert_tokens_to_ids(["jack", "boy"]) == [11, 14]


def test_vocab_with_one_line_too_many_is_refused_naming_both_files(tmp_path):
    from bert_tf.assets import resolve_model_assets
    from bert_tf.errors import UsageError

    checkpoint = tmp_path / "ckpt"
    shutil.copytree(shared(*TINY_GOOGLE), checkpoint)
    (checkpoint / "vocab.txt").write_text("\n".join(_tiny_lines()) + "\n\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"vocab.txt \(next to the checkpoint\) has 16 entries "
                                         r"\(its last 1 line\(s\) are empty.*bert_config.json "
                                         r"says vocab_size 15"):
        resolve_model_assets(init_checkpoint=str(checkpoint / "bert_model.ckpt"))


# ---- 3. extract_features.py reads every line as Google's script does -------------------------

def _google_read_examples(path) -> list[tuple[int, str, str | None]]:
    """google-research/bert extract_features.read_examples: GFile.readline() until "", strip,
    split at " ||| " with its regex; one example a line."""
    import re

    import tensorflow as tf

    examples = []
    with tf.io.gfile.GFile(str(path), "r") as reader:
        while True:
            line = reader.readline()
            if not line:
                break
            line = line.strip()
            m = re.match(r"^(.*) \|\|\| (.*)$", line)
            examples.append((len(examples), *(m.groups() if m else (line, None))))
    return examples


EXTRACT_INPUTS = {
    "empty_middle_line": "a\n\nb\n",
    "pair_with_nothing_after": "jack ||| \n",
    "lone_cr": "a\rb\n",
    "crlf": "jack ||| all\r\nwork\r\n",
    "no_final_newline": "a\nb",
    "final_blank_line": "a\n\n",
    "spaces_only_line": "a\n   \nb\n",
    "line_separator": "a\u2028b\n",
    "two_separators": "a ||| b ||| c\n",
    "leading_spaces_pair": "  jack |||  boy  \n",
}


@pytest.mark.parametrize("name", sorted(EXTRACT_INPUTS))
def test_extract_features_reads_lines_as_google(tmp_path, name):
    from bert_tf.extract import read_examples

    path = tmp_path / "input.txt"
    path.write_bytes(EXTRACT_INPUTS[name].encode("utf-8"))
    got = [(e.index, e.text_a, e.text_b) for e in read_examples(str(path))]
    assert got == _google_read_examples(path)


def test_extract_features_script_keeps_empty_lines_as_rows(tmp_path):
    """End to end on the tiny Google checkpoint: "a\\n\\nb\\n" is three rows, the middle one
    [CLS] [SEP]; "jack ||| " is one text whose tokens include the bars."""
    rows = _extract_rows(tmp_path, "jack\n\nboy\njack ||| \n", "--layers=-1")
    tokens = [[f["token"] for f in row["features"]] for row in rows]
    assert [row["linex_index"] for row in rows] == [0, 1, 2, 3]
    assert tokens[:3] == [["[CLS]", "jack", "[SEP]"], ["[CLS]", "[SEP]"],
                          ["[CLS]", "boy", "[SEP]"]]
    # The tiny vocabulary has no "|": each bar is [UNK], all in segment A.
    assert tokens[3] == ["[CLS]", "jack", "[UNK]", "[UNK]", "[UNK]", "[SEP]"]


# ---- 5. CoNLL columns are separated by spaces only --------------------------------------------

def test_conll_word_with_a_no_break_space_is_one_row(tmp_path):
    """conlleval splits a line at the space character (its default delimiter), as does the
    Hugging Face conll2003 loader (`line.split(" ")`): U+00A0 inside a word is part of it."""
    from bert_tf.data.conll import read_conll

    rows = ["-DOCSTART- -X- -X- O", "", "New\u00a0York NNP B-NP B-LOC", "is VBZ B-VP O",
            "big JJ B-ADJP O", "", "Paris\u2009Hilton NNP B-NP B-PER", ""]
    path = tmp_path / "eng.testa"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    sentences = read_conll(str(path))
    # The oracle: each non-blank, non-DOCSTART line split at " ", first and last column.
    want, current = [], []
    for line in rows:
        if not line or line.startswith("-DOCSTART-"):
            if current:
                want.append(current)
            current = []
        else:
            cols = line.split(" ")
            current.append((cols[0], cols[-1]))
    assert [list(zip(s.words, s.tags)) for s in sentences] == want


# ---- 2. Optimizer state under any name is not a weight ----------------------------------------

def _copy_with_slots(source_prefix, prefix, slot_names, counters=("global_step",)):
    """The tiny Google checkpoint re-written with extra variables nested under every weight
    (`W/<slot>`), as an optimizer or a moving average leaves them."""
    import numpy as np
    import tensorflow as tf

    reader = tf.train.load_checkpoint(source_prefix)
    weights = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
               if "/adam_" not in n and n != "global_step"}
    names, tensors = [], []
    for name, value in weights.items():
        names.append(name)
        tensors.append(tf.constant(value))
        for k, slot in enumerate(slot_names):
            names.append(f"{name}/{slot}")
            tensors.append(tf.constant(np.full_like(value, 1000.0 + k)))
    for counter in counters:
        names.append(counter)
        tensors.append(tf.constant(np.int64(12345)))
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=tensors)
    return weights


@pytest.mark.parametrize("slots", [("BERTAdam", "BERTAdam_1"), ("ExponentialMovingAverage",),
                                   ("Momentum",), ("some_new_optimizer/accumulator",)],
                         ids=["biobert_v1.0", "moving_average", "momentum", "unknown_nested"])
def test_slots_under_any_name_are_ignored_and_outputs_match_transformers(tmp_path, slots):
    import numpy as np
    import torch
    import transformers

    from bert_tf import checkpoints as ck
    from bert_tf.config import BertConfig
    from bert_tf.modeling import BertPretrainer
    from tests.conftest import random_batch

    source = shared(*TINY_GOOGLE)
    prefix = str(tmp_path / "bert_model.ckpt")
    weights = _copy_with_slots(str(source / "bert_model.ckpt"), prefix, slots)
    shutil.copy(source / "bert_config.json", tmp_path / "bert_config.json")
    config = BertConfig.from_json_file(source / "bert_config.json")
    model = BertPretrainer(config)
    report = ck.load(model, prefix)
    assert sorted(report.loaded) == sorted(weights)
    assert not report.missing and not report.unused
    assert len(report.state) == len(weights) * len(slots) + 1
    assert "optimizer-state variables ignored" in report.summary()

    # transformers on a weights-only copy (its TF loader knows adam_m/adam_v, not these).
    clean = str(tmp_path / "clean" / "bert_model.ckpt")
    (tmp_path / "clean").mkdir()
    _copy_with_slots(str(source / "bert_model.ckpt"), clean, (), counters=())
    hf_config = transformers.BertConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size, hidden_act=config.hidden_act,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size, layer_norm_eps=1e-12)
    theirs = transformers.BertForPreTraining(hf_config).eval()
    transformers.models.bert.modeling_bert.load_tf_weights_in_bert(theirs, hf_config, clean)
    batch = random_batch(config, seq=16)
    batch["input_ids"] = batch["input_ids"] % config.vocab_size
    with torch.no_grad():
        out = theirs(input_ids=torch.tensor(batch["input_ids"], dtype=torch.long),
                     attention_mask=torch.tensor(batch["input_mask"], dtype=torch.long),
                     token_type_ids=torch.tensor(batch["segment_ids"], dtype=torch.long))
    ours = model(batch, training=False)
    assert np.abs(ours["nsp_logits"] - out.seq_relationship_logits.numpy()).max() <= 1e-5
    mlm = np.take_along_axis(out.prediction_logits.numpy(),
                             batch["masked_lm_positions"][..., None], axis=1)
    assert np.abs(ours["mlm_logits"] - mlm).max() <= 1e-5


def test_head_of_another_size_names_stored_shapes_and_fresh_head_loads_the_encoder(tmp_path):
    """A 3-label classifier checkpoint into a 2-label model: the message shows the shapes as the
    checkpoint stores them (Google's output_weights are [num_labels, H]) and says what to do;
    fresh_head=True then loads the encoder and starts the head fresh."""
    import numpy as np

    from bert_tf import checkpoints as ck
    from bert_tf.modeling import BertClassifier
    from tests.conftest import tiny_config

    config = tiny_config()
    prefix = ck.save_google(BertClassifier(config, num_labels=3), str(tmp_path / "bert_model.ckpt"))
    model = BertClassifier(config, num_labels=2)
    with pytest.raises(ck.CheckpointError) as error:
        ck.load(model, prefix)
    message = str(error.value)
    assert "output_weights: the checkpoint stores [3, 32], this model needs [2, 32]" in message
    assert "--fresh_head" in message
    head_before = model.head.dense.kernel.numpy().copy()
    report = ck.load(model, prefix, fresh_head=True)
    assert report.missing == ["output_weights", "output_bias"] and not report.unused
    np.testing.assert_array_equal(model.head.dense.kernel.numpy(), head_before)
    import tensorflow as tf
    want = tf.train.load_checkpoint(prefix).get_tensor("bert/pooler/dense/kernel")
    np.testing.assert_array_equal(model.encoder.pooler.kernel.numpy()
                                  if hasattr(model.encoder.pooler, "kernel")
                                  else [v for v in model.weights if "pooler" in v.path
                                        and v.path.endswith("kernel")][0].numpy(), want)


# ---- First run output: no CUDA probe noise without a GPU --------------------------------------

@pytest.mark.parametrize("script", ["run_classifier.py", "run_pretraining.py", "run_ner.py",
                                    "extract_features.py"])
def test_no_cuda_probe_noise_on_a_machine_without_gpu(tmp_path, script):
    import os
    import subprocess
    import sys

    from bert_tf.cli import gpu_present
    from tests.conftest import REPO

    if gpu_present():
        pytest.skip("this machine has an NVIDIA driver: the probe lines are real information")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO)
    if script == "extract_features.py":
        args = [f"--input_file={REPO / 'README.md'}", f"--output_file={tmp_path / 'out.jsonl'}"]
    else:
        args = [f"--output_dir={tmp_path / 'out'}", "--do_train"]
    proc = subprocess.run(
        [sys.executable, str(REPO / script), *args, "--init_checkpoint=/nonexistent/checkpoint"],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    for noise in ("cuInit", "Unable to register", "cuda drivers", "cudart", "absl::InitializeLog"):
        assert noise not in proc.stderr, proc.stderr
    assert "error:" in proc.stderr.strip().splitlines()[-1]


# ---- 4. A fine-tuned head is read in the order of its own label names -------------------------

def _mnli_dir(tmp_path, rows=24):
    """MNLI-layout dev_matched/test_matched files holding entailment-only pairs (RTE's)."""
    import csv

    source = shared("glue", "RTE", "dev.tsv")
    with open(source, encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        pairs = [(r["sentence1"], r["sentence2"]) for r in reader
                 if r["label"] == "entailment"][:rows]
    data = tmp_path / "MNLI"
    data.mkdir()
    for kind in ("matched", "mismatched"):
        with open(data / f"dev_{kind}.tsv", "w", encoding="utf-8") as f:
            f.write("index\tsentence1\tsentence2\tgold_label\n")
            for i, (a, b) in enumerate(pairs):
                f.write(f"{i}\t{a}\t{b}\tentailment\n")
        with open(data / f"test_{kind}.tsv", "w", encoding="utf-8") as f:
            f.write("index\tsentence1\tsentence2\n")
            for i, (a, b) in enumerate(pairs):
                f.write(f"{i}\t{a}\t{b}\n")
    return data, pairs


def _hf_classifier(directory, id2label, favourite):
    """A small transformers BertForSequenceClassification (uncased vocab) whose head always
    answers output `favourite`, saved with its id2label."""
    import torch
    import transformers

    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=37, max_position_embeddings=128, id2label=id2label,
        label2id={v: k for k, v in id2label.items()})
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.bias[favourite] = 5.0
    model.save_pretrained(directory, safe_serialization=True)
    shutil.copy(shared("vocab", "uncased_vocab.txt"), directory / "vocab.txt")
    return model


def _run_classifier(*args):
    return _script("run_classifier.py", *args)


def test_hf_mnli_head_is_read_in_its_own_label_order(tmp_path):
    """id2label {0: entailment, 1: neutral, 2: contradiction}, a head that always answers
    entailment, entailment-only dev pairs: transformers scores 1.0, and so must we."""
    import json

    import torch
    import transformers

    data, pairs = _mnli_dir(tmp_path)
    hf_dir = tmp_path / "hf_mnli"
    model = _hf_classifier(hf_dir, {0: "entailment", 1: "neutral", 2: "contradiction"}, 0)
    tokenizer = transformers.BertTokenizer(str(hf_dir / "vocab.txt"), do_lower_case=True)
    with torch.no_grad():
        enc = tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True,
                        truncation=True, max_length=128, return_tensors="pt")
        theirs = [model.config.id2label[int(i)] for i in model(**enc).logits.argmax(-1)]
    want_accuracy = sum(t == "entailment" for t in theirs) / len(theirs)
    assert want_accuracy == 1.0

    out = tmp_path / "out"
    proc = _run_classifier("--task=MNLI", "--do_eval", "--do_predict", f"--data_dir={data}",
                           f"--init_checkpoint={hf_dir}", f"--output_dir={out}",
                           "--max_seq_length=128")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "eval_results.json").read_text())
    assert results["dev_matched_eval_accuracy"] == want_accuracy
    submission = (out / "MNLI-m.tsv").read_text().splitlines()
    assert [line.split("\t")[1] for line in submission[1:]] == theirs
    assert "reordered the head" in proc.stderr


def test_hf_head_with_other_labels_is_refused(tmp_path):
    data, _ = _mnli_dir(tmp_path, rows=4)
    hf_dir = tmp_path / "hf_sentiment"
    _hf_classifier(hf_dir, {0: "negative", 1: "neutral", 2: "positive"}, 0)
    proc = _run_classifier("--task=MNLI", "--do_eval", f"--data_dir={data}",
                           f"--init_checkpoint={hf_dir}", f"--output_dir={tmp_path / 'out'}")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert "['negative', 'neutral', 'positive']" in last and "--fresh_head" in last
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("fmt", ["huggingface", "google", "bert_tf"])
def test_saved_heads_carry_their_label_names(tmp_path, fmt):
    """Saved with the task's names (transformers reads id2label back); loaded into a model whose
    task lists the same labels in another order, the outputs follow the names."""
    import numpy as np

    from bert_tf import checkpoints as ck
    from bert_tf.modeling import BertClassifier
    from tests.conftest import random_batch, tiny_config

    config = tiny_config()
    model = BertClassifier(config, 3)
    model.label_names = ["contradiction", "entailment", "neutral"]
    batch = random_batch(config)
    logits = np.asarray(model(batch, training=False)["logits"])
    if fmt == "huggingface":
        import transformers

        path = ck.save_huggingface(model, str(tmp_path / "hf"))
        hf_config = transformers.AutoConfig.from_pretrained(path)
        assert [hf_config.id2label[i] for i in range(3)] == model.label_names
    elif fmt == "google":
        path = ck.save_google(model, str(tmp_path / "google" / "bert_model.ckpt"))
    else:
        path = ck.save(model, str(tmp_path / "native" / "ckpt"))
        path = str(tmp_path / "native")
    assert ck.stored_label_names(path) == model.label_names
    other = BertClassifier(config, 3)
    ck.load(other, path, label_names=["Neutral", "Contradiction", "Entailment"])
    reordered = np.asarray(other(batch, training=False)["logits"])
    np.testing.assert_allclose(reordered, logits[:, [2, 0, 1]], atol=1e-5)


# ---- Fine-tuning tokenization: the fast path gives the reference ids -------------------------

def test_sst2_features_fast_tokenizer_equal_reference():
    """SST-2 train (67k sentences) through glue's feature builder: the scripts' default
    CachedTokenizer gives exactly FullTokenizer's features (Google's code path)."""
    import numpy as np

    from bert_tf.data import glue
    from bert_tf.tokenization import make_tokenizer

    data_dir = shared("glue", "SST-2")
    processor = glue.get_processor("SST-2")
    examples = processor.get_examples(str(data_dir), "train")
    assert len(examples) == 67349
    vocab = shared("vocab", "uncased_vocab.txt")
    features = {}
    for reference in (False, True):
        tokenizer = make_tokenizer(vocab, True, reference=reference)
        features[reference] = glue.convert_examples_to_features(
            examples, processor.get_labels(), 64, tokenizer, False)
    assert features[False] == features[True]
    assert np.mean([f["length"] for f in features[True]]) > 10  # real sentences, not empty


@pytest.mark.parametrize("id2label,favourite", [
    ({0: "not_equivalent", 1: "equivalent"}, 1),
    ({0: "equivalent", 1: "not_equivalent"}, 0)], ids=["hf_order", "swapped"])
def test_hf_glue_names_of_binary_labels_are_understood(tmp_path, id2label, favourite):
    """A model fine-tuned with Hugging Face's run_glue.py carries the datasets' names
    (MRPC: not_equivalent/equivalent) where GLUE's files say 0/1: an "always equivalent" head
    must predict "1" for every pair, in either id order."""
    import csv
    import json

    hf_dir = tmp_path / "hf_mrpc"
    _hf_classifier(hf_dir, id2label, favourite)
    data = shared("glue", "MRPC")
    with open(data / "dev.tsv", encoding="utf-8-sig") as f:
        gold = [row["Quality"] for row in csv.DictReader(f, delimiter="\t",
                                                        quoting=csv.QUOTE_NONE)]
    out = tmp_path / "out"
    proc = _run_classifier("--task=MRPC", "--do_eval", f"--data_dir={data}",
                           f"--init_checkpoint={hf_dir}", f"--output_dir={out}",
                           "--max_seq_length=64")
    assert proc.returncode == 0, proc.stderr[-3000:]
    accuracy = json.loads((out / "eval_results.json").read_text())["eval_accuracy"]
    assert accuracy == pytest.approx(gold.count("1") / len(gold))


def test_extract_features_default_layers_fit_a_shallow_model(tmp_path):
    """Google's default --layers=-1,-2,-3,-4 asks for more layers than BERT-Tiny has: without
    --layers the script keeps the ones there are instead of refusing."""
    row = _extract_rows(tmp_path, "jack works\n")[0]
    assert [layer["index"] for layer in row["features"][0]["layers"]] == [-1, -2]
