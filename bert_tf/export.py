"""Exporting a fine-tuned model for serving: `--export=saved_model` at the end of
run_classifier.py / run_ner.py, and export_model.py for a finished run or any checkpoint with a
classification head.

The SavedModel (bert_tf.serving.saved_model) holds the model in float32 whatever --dtype trained
it, and Google's tokenizer for the run's vocabulary and casing; `serving_info.json` beside
`saved_model.pb` says what it is (task, labels, max_seq_length, casing, signatures).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

from bert_tf.errors import UsageError

logger = logging.getLogger("bert_tf")

SERVING_INFO = "serving_info.json"
# The cores a SavedModel's forward pass is cut for (bert_tf.serving.saved_model, "Threads"):
# the CPU instance types a small deployment starts on have 2 to 4.
PARALLEL_CHAINS = 2


def default_export_dir(output_dir: str, fmt: str = "saved_model") -> str:
    return os.path.join(output_dir, "export", fmt)


def _float32_copy(model, build):
    """`build()` under the float32 policy (the export's graph computes in float32), with
    `model`'s weights. The global policy is put back afterwards."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        copy = build()
    finally:
        keras.mixed_precision.set_global_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


def export_classifier(model, vocab_file: str, do_lower_case: bool, export_dir: str, *,
                      task_name: str | None, label_names, regression: bool, pair_task: bool,
                      max_seq_length: int, fmt: str = "saved_model",
                      parallel_chains: int = PARALLEL_CHAINS) -> str:
    """A BertClassifier as a SavedModel on raw text (bert_tf.serving.saved_model), or with
    fmt="onnx" as model.onnx for onnxruntime (bert_tf.serving.onnx). Returns export_dir.
    label_names: the names of the logits' rows (a regression's: ignored); parallel_chains: the
    cores one request is cut for (the SavedModel's; ONNX leaves threads to onnxruntime)."""
    from bert_tf.modeling import BertClassifier

    copy = _float32_copy(model, lambda: BertClassifier(model.config, model.num_labels))
    info = {"model": "classifier", "task_name": task_name,
            "labels": None if regression else [str(n) for n in label_names],
            "regression": regression, "pair_task": pair_task, "max_seq_length": max_seq_length,
            "do_lower_case": do_lower_case, "vocab_size": model.config.vocab_size}
    _check_max_seq_length(max_seq_length)
    if fmt == "onnx":
        return _export_onnx(copy, vocab_file, export_dir, info)
    check_parallel_chains(parallel_chains)
    from bert_tf.serving import saved_model
    from bert_tf.tokenization.graph import GraphTokenizer

    module = _built(lambda: saved_model.ClassifierModule(
        copy, GraphTokenizer(vocab_file, do_lower_case), [] if regression else label_names,
        max_seq_length, regression=regression, pair_task=pair_task,
        parallel_chains=parallel_chains), vocab_file)
    saved_model.save(module, export_dir)
    info["parallel_chains"] = parallel_chains
    info["signatures"] = {"serving_default": "text_pair" if pair_task else "text",
                          "text": ["text_a"], "text_pair": ["text_a", "text_b"]}
    _write_info(export_dir, info)
    logger.info("exported the %s model to %s", task_name or "classification", export_dir)
    return export_dir


def check_export_available(fmt: str | None) -> None:
    """UsageError, before a run starts, when --export=onnx cannot run here."""
    if fmt != "onnx":
        return
    import importlib.util

    missing = [m for m in ("tf2onnx", "onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"--export=onnx needs {', '.join(missing)}: pip install "
                         "'tf2onnx==1.17.*' 'onnx>=1.16,<1.23' onnxruntime (setup.py's onnx "
                         "extra), or --export=saved_model")


ONNX_FILE = "model.onnx"
CLIENT_TOKENIZER = "tokenization.py"


def _export_onnx(model, vocab_file: str, export_dir: str, info: dict) -> str:
    """model.onnx (ids in, logits out), checked against TensorFlow; beside it vocab.txt and
    tokenization.py (Google's tokenizer in the standard library alone: this project's
    bert_tf/tokenization/wordpiece.py) for the client, and serving_info.json."""
    import shutil

    from bert_tf.serving.onnx import INPUTS, export_onnx
    from bert_tf.tokenization import wordpiece

    os.makedirs(export_dir, exist_ok=True)
    check = export_onnx(model, os.path.join(export_dir, ONNX_FILE))
    shutil.copyfile(vocab_file, os.path.join(export_dir, "vocab.txt"))
    shutil.copyfile(wordpiece.__file__, os.path.join(export_dir, CLIENT_TOKENIZER))
    info.update({"format": "onnx", "inputs": list(INPUTS), "outputs": ["logits"],
                 "onnx_check": check})
    _write_info(export_dir, info)
    logger.info("exported %s to %s (onnxruntime vs TensorFlow: max |diff| %.1e)",
                ONNX_FILE, export_dir, check["max_abs_diff"])
    return export_dir


def _check_max_seq_length(max_seq_length: int) -> None:
    if max_seq_length < 3:
        raise UsageError(f"--max_seq_length={max_seq_length}: at least 3 ([CLS], a word piece, "
                         "[SEP])")


MAX_PARALLEL_CHAINS = 64


def check_parallel_chains(parallel_chains: int) -> None:
    """UsageError for --parallel_chains outside 1..MAX_PARALLEL_CHAINS (before a run starts):
    a chain per core one request uses; each chain reads every weight, so many more chains
    than cores only cost (200 chains: 12x slower at batch 1 x 128 on 2 cores)."""
    if not 1 <= parallel_chains <= MAX_PARALLEL_CHAINS:
        raise UsageError(f"--parallel_chains={parallel_chains}: give 1 to "
                         f"{MAX_PARALLEL_CHAINS}, the cores one request should use (1 for a "
                         "GPU)")


def _built(make, vocab_file: str):
    """The served module, a vocabulary it cannot use (no [CLS]/[SEP], not UTF-8, no [UNK])
    reported as a usage error naming the file."""
    try:
        return make()
    except ValueError as e:
        raise UsageError(f"{vocab_file}: {e}") from None


def _write_info(export_dir: str, info: dict) -> None:
    with open(os.path.join(export_dir, SERVING_INFO), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
        f.write("\n")


def read_info(export_dir: str) -> dict:
    """serving_info.json of an export. UsageError when export_dir is not one of ours."""
    path = os.path.join(export_dir, SERVING_INFO)
    if not os.path.exists(path):
        raise UsageError(f"{export_dir}: no {SERVING_INFO}: not a model exported by bert_tf "
                         "(run export_model.py or pass --export=saved_model to the run)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# -- export_model.py: a finished run, or any checkpoint with a head ---------------------------------

@dataclasses.dataclass
class ExportArgs:
    """export_model.py's flags (see there)."""
    model_dir: str | None = None
    init_checkpoint: str | None = None
    task_name: str | None = None
    vocab_file: str | None = None
    bert_config_file: str | None = None
    do_lower_case: bool = True
    do_lower_case_given: bool = False
    max_seq_length: int | None = None
    export_dir: str | None = None
    export: str = "saved_model"
    parallel_chains: int = PARALLEL_CHAINS


@dataclasses.dataclass
class _Source:
    """What an export needs from a run or a checkpoint."""
    model: object
    vocab_file: str
    do_lower_case: bool
    max_seq_length: int
    task_name: str | None
    labels: list


def _run_source(args: ExportArgs) -> _Source:
    """A fine-tuning run's output_dir: its flags (run_config.json), config, newest checkpoint."""
    from bert_tf.assets import resolve_model_assets
    from bert_tf.checkpoints import NATIVE_MARKER
    from bert_tf.config import BertConfig
    from bert_tf.training.loop import checkpoint_dir
    from bert_tf.training.run import restore_trained

    run_dir = args.model_dir
    run_config = os.path.join(run_dir, "run_config.json")
    marker = os.path.join(checkpoint_dir(run_dir), NATIVE_MARKER)
    if not os.path.exists(run_config):
        raise UsageError(f"--model_dir={run_dir}: not a fine-tuning run's output_dir (no "
                         "run_config.json); pass the --output_dir of run_classifier.py / "
                         "run_ner.py, or --init_checkpoint")
    if not os.path.exists(marker):
        raise UsageError(f"--model_dir={run_dir}: the run wrote no checkpoint (no "
                         f"checkpoints/{NATIVE_MARKER}): did it train? (--do_train)")
    with open(run_config, encoding="utf-8") as f:
        flags = json.load(f)["flags"]
    with open(marker, encoding="utf-8") as f:
        model_class = json.load(f).get("model_class")
    assets = resolve_model_assets(flags.get("init_checkpoint"), flags.get("bert_config_file"),
                                  flags.get("vocab_file"), flags.get("do_lower_case", True),
                                  flags.get("do_lower_case_given", False),
                                  flags.get("max_seq_length"))
    config = BertConfig.from_json_file(os.path.join(run_dir, "bert_config.json"))
    task_name, labels, model = _task_model(model_class, flags.get("task_name"), config)
    if not restore_trained(model, run_dir):
        raise UsageError(f"--model_dir={run_dir}: no checkpoint in {checkpoint_dir(run_dir)} "
                         "(did the run train? --do_train writes one)")
    return _Source(model, assets.vocab_file, assets.do_lower_case,
                   args.max_seq_length or flags.get("max_seq_length") or 128, task_name, labels)


def _task_model(model_class: str | None, task_name: str | None, config, num_labels=None):
    """(task name, label names, a fresh model) for a BertClassifier on a GLUE task (or labels
    of its own) or a BertTokenClassifier on CoNLL-2003."""
    from bert_tf.data import conll, glue
    from bert_tf.modeling import BertClassifier, BertTokenClassifier

    if model_class == "BertTokenClassifier":
        labels = list(conll.LABELS)
        model = BertTokenClassifier(config, len(labels))
        model.label_names = labels
        return "CoNLL-2003", labels, model
    if model_class != "BertClassifier":
        raise UsageError(f"a {model_class or 'model'} has no classification head to serve: "
                         "export a run of run_classifier.py or run_ner.py")
    if task_name is None:
        return None, None, BertClassifier(config, num_labels)
    try:
        processor = glue.get_processor(task_name)
    except ValueError as e:
        raise UsageError(f"--task_name: {e}") from None
    labels = processor.get_labels()
    model = BertClassifier(config, 1 if processor.is_regression else len(labels))
    model.label_names = labels
    model.label_aliases = list(processor.label_names)
    return processor.name, labels, model


def _checkpoint_source(args: ExportArgs) -> _Source:
    """Any checkpoint checkpoints.load reads whose classification head is in it: the labels
    come from the checkpoint (Hugging Face id2label, labels.json) or --task_name."""
    from bert_tf.assets import resolve_model_assets
    from bert_tf.checkpoints import load, stored_label_names

    assets = resolve_model_assets(args.init_checkpoint, args.bert_config_file, args.vocab_file,
                                  args.do_lower_case, args.do_lower_case_given,
                                  args.max_seq_length)
    stored = stored_label_names(assets.init_checkpoint)
    if args.task_name is None and not stored:
        raise UsageError(f"--init_checkpoint={args.init_checkpoint} does not name its labels "
                         "(no id2label in config.json, no labels.json): pass --task_name")
    task_name, labels, model = _task_model("BertClassifier", args.task_name, assets.config,
                                           num_labels=None if args.task_name else len(stored))
    labels = labels or stored
    report = load(model, assets.init_checkpoint, label_names=labels)
    if report.missing:
        raise UsageError(f"--init_checkpoint={args.init_checkpoint} has no classification head "
                         f"({', '.join(report.missing)} are not in it): fine-tune it first "
                         "(run_classifier.py), then export that run with --model_dir")
    return _Source(model, assets.vocab_file, assets.do_lower_case, args.max_seq_length or 128,
                   task_name, labels)


def export_model(args: ExportArgs) -> str:
    """export_model.py: -> the export directory."""
    check_export_available(args.export)
    check_parallel_chains(args.parallel_chains)
    if bool(args.model_dir) == bool(args.init_checkpoint):
        raise UsageError("pass one of --model_dir (a fine-tuning run's output_dir) or "
                         "--init_checkpoint (a checkpoint with a classification head)")
    if args.init_checkpoint and not args.export_dir:
        raise UsageError("--export_dir is required with --init_checkpoint (nothing is written "
                         "beside a checkpoint that may be shared)")
    source = _run_source(args) if args.model_dir else _checkpoint_source(args)
    export_dir = args.export_dir or default_export_dir(args.model_dir, args.export)
    if type(source.model).__name__ == "BertTokenClassifier":
        return export_tagger(source.model, source.vocab_file, source.do_lower_case, export_dir,
                             label_names=source.labels, max_seq_length=source.max_seq_length,
                             fmt=args.export, parallel_chains=args.parallel_chains)
    from bert_tf.data import glue

    processor = glue.get_processor(source.task_name) if source.task_name else None
    return export_classifier(
        source.model, source.vocab_file, source.do_lower_case, export_dir,
        task_name=source.task_name, label_names=source.labels,
        regression=bool(processor and processor.is_regression),
        pair_task=bool(processor and processor.is_pair_task),
        max_seq_length=source.max_seq_length, fmt=args.export,
        parallel_chains=args.parallel_chains)


def export_tagger(model, vocab_file: str, do_lower_case: bool, export_dir: str, *,
                  label_names, max_seq_length: int, fmt: str = "saved_model",
                  parallel_chains: int = PARALLEL_CHAINS) -> str:
    """A BertTokenClassifier (NER) as a SavedModel on raw text that answers with entities and
    their character spans (bert_tf.serving.saved_model.TaggerModule), or with fmt="onnx" as
    model.onnx (per-position logits). Returns export_dir. parallel_chains: as for
    export_classifier."""
    from bert_tf.modeling import BertTokenClassifier

    copy = _float32_copy(model, lambda: BertTokenClassifier(model.config, model.num_labels))
    info = {"model": "tagger", "task_name": "CoNLL-2003",
            "labels": [str(n) for n in label_names], "max_seq_length": max_seq_length,
            "do_lower_case": do_lower_case, "vocab_size": model.config.vocab_size}
    _check_max_seq_length(max_seq_length)
    if fmt == "onnx":
        return _export_onnx(copy, vocab_file, export_dir, info)
    check_parallel_chains(parallel_chains)
    from bert_tf.serving import saved_model
    from bert_tf.tokenization.graph import GraphTokenizer

    module = _built(lambda: saved_model.TaggerModule(
        copy, GraphTokenizer(vocab_file, do_lower_case), label_names, max_seq_length,
        parallel_chains=parallel_chains), vocab_file)
    saved_model.save(module, export_dir)
    info["parallel_chains"] = parallel_chains
    info["signatures"] = {"serving_default": "entities", "entities": ["text"]}
    _write_info(export_dir, info)
    logger.info("exported the NER model to %s", export_dir)
    return export_dir
