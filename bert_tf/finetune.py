"""Fine-tuning runs behind run_classifier.py and run_ner.py: flags in, files out.

Both follow the same path: check the flags together, resolve the checkpoint's config and
vocabulary, guard output_dir against mixing runs, tokenize once (cached), build the model, load
the checkpoint, train with the one loop, evaluate and predict on the chief.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pickle

import numpy as np

from bert_tf.assets import UsageError, resolve_model_assets

logger = logging.getLogger("bert_tf")


@dataclasses.dataclass
class RunArgs:
    """The flags of run_classifier.py / run_ner.py (Google's names)."""
    task_name: str = "MRPC"
    data_dir: str | None = None
    output_dir: str | None = None
    bert_config_file: str | None = None
    vocab_file: str | None = None
    init_checkpoint: str | None = None
    do_lower_case: bool = True
    do_lower_case_given: bool = False
    max_seq_length: int = 128
    do_train: bool = False
    do_eval: bool = False
    do_predict: bool = False
    train_batch_size: int = 32  # per worker, per micro-batch
    eval_batch_size: int = 64
    predict_batch_size: int = 64
    learning_rate: float = 5e-5
    num_train_epochs: float = 3.0
    warmup_proportion: float = 0.1
    num_warmup_steps: int | None = None
    optimizer: str = "adamw"
    adam_bias_correction: bool = False
    dtype: str = "fp32"
    use_xla: bool | None = None
    use_horovod: bool = False
    num_accumulation_steps: int = 1
    save_checkpoints_steps: int = 1000
    keep_checkpoint_max: int = 3
    log_steps: int = 10
    seed: int = 42
    max_consecutive_nonfinite: int = 20
    deterministic: bool = False
    progress: bool = True


# Flags whose change makes old checkpoints in output_dir belong to another run.
RUN_IDENTITY = ("task_name", "max_seq_length", "train_batch_size", "learning_rate",
                "num_train_epochs", "warmup_proportion", "num_warmup_steps", "optimizer",
                "num_accumulation_steps", "seed", "init_checkpoint", "dtype",
                "adam_bias_correction")


def check_args(args: RunArgs) -> None:
    if not (args.do_train or args.do_eval or args.do_predict):
        raise UsageError("nothing to do: pass at least one of --do_train, --do_eval, --do_predict")
    if not args.output_dir:
        raise UsageError("--output_dir is required (checkpoints, eval_results.txt and "
                         "predictions go there)")
    if args.train_batch_size < 1 or args.eval_batch_size < 1 or args.predict_batch_size < 1:
        raise UsageError("batch sizes must be at least 1")
    if args.do_train and args.num_train_epochs <= 0:
        raise UsageError(f"--num_train_epochs={args.num_train_epochs} must be positive")
    if not 0 <= args.warmup_proportion < 1:
        raise UsageError(f"--warmup_proportion={args.warmup_proportion} must be in [0, 1)")
    if args.num_accumulation_steps < 1:
        raise UsageError("--num_accumulation_steps must be at least 1")
    if args.max_consecutive_nonfinite < 1:
        raise UsageError(f"--max_consecutive_nonfinite={args.max_consecutive_nonfinite} must be "
                         "at least 1")
    if args.learning_rate <= 0:
        raise UsageError(f"--learning_rate={args.learning_rate} must be positive")


def setup_runtime(args: RunArgs):
    """Distributed context, determinism, dtype policy, XLA default. Returns (dist, use_xla)."""
    import keras
    import tensorflow as tf

    from bert_tf.training.distributed import Distributed
    from bert_tf.training.precision import set_dtype

    dist = Distributed(args.use_horovod)
    keras.utils.set_random_seed(args.seed)
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    set_dtype(args.dtype)
    use_xla = args.use_xla
    if use_xla is None:  # on by default where it pays: GPUs. On CPUs it was measured slower.
        use_xla = bool(tf.config.list_physical_devices("GPU"))
    return dist, use_xla


def guard_output_dir(args: RunArgs, config, is_chief: bool, num_labels: int,
                     num_workers: int = 1) -> None:
    """Refuse to mix a new run into an output_dir holding another run's checkpoints; record this
    run's flags and config there. The worker count is part of a run: it sets the global batch,
    hence the number of steps, the schedule and where in the data a resumed run starts."""
    from bert_tf.training.loop import checkpoint_dir

    path = os.path.join(args.output_dir, "run_config.json")
    current = {k: getattr(args, k) for k in RUN_IDENTITY}
    current["num_labels"] = num_labels
    current["num_workers"] = num_workers
    current["bert_config"] = config.to_dict()
    has_checkpoints = os.path.isdir(checkpoint_dir(args.output_dir)) and any(
        n.endswith(".index") for n in os.listdir(checkpoint_dir(args.output_dir)))
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            previous = json.load(f).get("identity", {})
        if has_checkpoints and args.do_train:
            previous.setdefault("num_workers", 1)  # run_config.json of earlier versions
            diff = sorted(k for k in set(previous) | set(current)
                          if previous.get(k) != current.get(k))
            if diff:
                details = "; ".join(f"{k}: {previous.get(k)!r} -> {current.get(k)!r}"
                                    for k in diff if k != "bert_config")
                if "bert_config" in diff:
                    details += "; bert_config differs"
                raise UsageError(
                    f"--output_dir={args.output_dir} holds checkpoints of another run "
                    f"({details}). To resume it, rerun with its values; otherwise use a new "
                    "--output_dir, or delete the old one to start over")
    elif has_checkpoints and args.do_train:
        raise UsageError(f"--output_dir={args.output_dir} holds checkpoints without a "
                         "run_config.json (not a bert_tf run?): use a new --output_dir")
    if is_chief:
        os.makedirs(args.output_dir, exist_ok=True)
        record = {"identity": current, "flags": dataclasses.asdict(args)}
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2, sort_keys=True, default=str)
        os.replace(tmp, path)
        config.to_json_file(os.path.join(args.output_dir, "bert_config.json"))


def cached(cache_dir: str, key: dict, build):
    """build() once per key; pickled features under output_dir/cache (tokenizing SST-2 or MNLI
    again for every run would be minutes of Python)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    path = os.path.join(cache_dir, f"features-{digest[:16]}.pkl")
    if os.path.exists(path):
        with open(path, "rb") as f:
            return pickle.load(f)
    value = build()
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    return value


def file_key(path: str) -> list:
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, int(st.st_mtime)]


def init_model(model, assets, args, dist) -> None:
    from bert_tf import checkpoints

    if assets.init_checkpoint:
        checkpoints.load(model, assets.init_checkpoint)  # logs what it loaded
    elif args.do_train and dist.is_chief:
        logger.warning(
            "=" * 78 + "\nNO --init_checkpoint: fine-tuning starts from RANDOM weights. Expect "
            "scores near chance;\npass a pre-trained checkpoint (a directory, a prefix or a preset "
            "such as bert-base-uncased).\n" + "=" * 78)


def restore_trained(model, output_dir: str) -> bool:
    """The latest fine-tuned checkpoint in output_dir, for --do_eval/--do_predict without
    --do_train. Returns False when there is none."""
    import tensorflow as tf

    from bert_tf.training.loop import checkpoint_dir

    latest = tf.train.latest_checkpoint(checkpoint_dir(output_dir))
    if not latest:
        return False
    tf.train.Checkpoint(model=model).read(latest).expect_partial()
    logger.info("evaluating the fine-tuned checkpoint %s", latest)
    return True


def write_eval_results(output_dir: str, results: dict, name: str = "eval_results") -> None:
    """Google's `key = value` eval_results.txt plus the same as JSON."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, f"{name}.txt"), "w", encoding="utf-8") as f:
        for key in sorted(results):
            f.write(f"{key} = {results[key]}\n")
    with open(os.path.join(output_dir, f"{name}.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, sort_keys=True)


def training_results(summary: dict) -> dict:
    """What a training run adds to eval_results: global_step, nonfinite_steps and train_loss
    (left out when a rerun of a finished run took no step, so there is no loss to report)."""
    if not summary:
        return {}
    out = {"global_step": summary["step"], "nonfinite_steps": summary["nonfinite_steps"]}
    if np.isfinite(summary["loss"]):
        out["train_loss"] = summary["loss"]
    return out


def train_steps(num_examples: int, args: RunArgs, num_workers: int) -> tuple[int, int]:
    global_batch = args.train_batch_size * num_workers * args.num_accumulation_steps
    steps = int(num_examples / global_batch * args.num_train_epochs)
    if steps < 1:
        raise UsageError(f"{num_examples} training examples make no full step of {global_batch} "
                         f"(train_batch_size x workers x accumulation): lower --train_batch_size")
    warmup = (args.num_warmup_steps if args.num_warmup_steps is not None
              else int(steps * args.warmup_proportion))
    return steps, min(warmup, steps)


def _train(model, loss_fn, table, args, dist, use_xla):
    from bert_tf.training.loop import TrainSettings, train

    steps, warmup = train_steps(len(table), args, dist.size)
    settings = TrainSettings(
        output_dir=args.output_dir, train_batch_size=args.train_batch_size,
        num_train_steps=steps, learning_rate=args.learning_rate, num_warmup_steps=warmup,
        optimizer=args.optimizer, adam_bias_correction=args.adam_bias_correction,
        dtype=args.dtype, use_xla=use_xla,
        num_accumulation_steps=args.num_accumulation_steps,
        save_checkpoints_steps=args.save_checkpoints_steps,
        keep_checkpoint_max=args.keep_checkpoint_max, log_steps=args.log_steps, seed=args.seed,
        max_consecutive_nonfinite=args.max_consecutive_nonfinite,
        max_seq_length=args.max_seq_length)
    if dist.is_chief:
        logger.info("training: %d examples, %d steps (%d warm-up), %d worker(s) x batch %d x "
                    "%d accumulation, dtype %s, XLA %s", len(table), steps, warmup, dist.size,
                    args.train_batch_size, args.num_accumulation_steps, args.dtype,
                    "on" if use_xla else "off")
    return train(model, loss_fn, table, settings, dist, progress=args.progress)


# -- GLUE -------------------------------------------------------------------------------------------

def run_classifier(args: RunArgs) -> dict:
    """Fine-tune / evaluate / predict a GLUE task. Returns the eval results (empty if none)."""
    from bert_tf.data import glue
    from bert_tf.data.download import ensure_glue_data
    from bert_tf.data.records import FeatureTable
    from bert_tf.modeling import BertClassifier
    from bert_tf.tokenization import FullTokenizer
    from bert_tf.training import loop, tasks

    check_args(args)
    try:
        processor = glue.get_processor(args.task_name)
    except ValueError as e:
        raise UsageError(f"--task_name: {e}") from None
    assets = resolve_model_assets(args.init_checkpoint, args.bert_config_file, args.vocab_file,
                                  args.do_lower_case, args.do_lower_case_given,
                                  args.max_seq_length)
    if args.init_checkpoint is None and not args.bert_config_file:
        raise UsageError("pass --init_checkpoint (or --bert_config_file to train from scratch)")
    data_dir = ensure_glue_data(processor.data_name, args.data_dir)
    dist, use_xla = setup_runtime(args)
    labels = processor.get_labels()
    num_labels = 1 if processor.is_regression else len(labels)
    guard_output_dir(args, assets.config, dist.is_chief, num_labels, dist.size)
    tokenizer = FullTokenizer(assets.vocab_file, do_lower_case=assets.do_lower_case)
    cache_dir = os.path.join(args.output_dir, "cache")
    label_dtype = "float32" if processor.is_regression else "int32"

    def features_for(split):
        path = processor.split_path(data_dir, split)
        key = {"task": processor.name, "split": split, "file": file_key(path),
               "vocab": file_key(assets.vocab_file), "lower": assets.do_lower_case,
               "max_seq_length": args.max_seq_length}

        def build():
            examples = processor.get_examples(data_dir, split)
            feats = glue.convert_examples_to_features(examples, labels, args.max_seq_length,
                                                      tokenizer, processor.is_regression)
            return examples, feats
        examples, feats = cached(cache_dir, key, build)
        return examples, FeatureTable.from_features(feats, args.max_seq_length, label_dtype)

    model = BertClassifier(assets.config, num_labels)
    init_model(model, assets, args, dist)
    loss_fn = tasks.regression_loss if processor.is_regression else tasks.classification_loss

    summary = {}
    if args.do_train:
        _, table = features_for("train")
        summary = _train(model, loss_fn, table, args, dist, use_xla)
    elif not restore_trained(model, args.output_dir) and dist.is_chief:
        logger.warning("no fine-tuned checkpoint in %s: evaluating --init_checkpoint as is",
                       args.output_dir)

    def predictions(table, batch_size):
        logits = loop.predict(model, table, batch_size, use_xla=use_xla,
                              max_seq_length=args.max_seq_length, progress=args.progress)
        return logits[:, 0] if processor.is_regression else logits.argmax(-1)

    results = {}
    if args.do_eval and dist.is_chief:
        dev_splits = (["dev_matched", "dev_mismatched"] if processor.name == "MNLI"
                      else [processor.dev_split])
        for split in dev_splits:
            examples, table = features_for(split)
            preds = predictions(table, args.eval_batch_size)
            scores = processor.compute_metrics(table.arrays["label_ids"], preds)
            prefix = "" if len(dev_splits) == 1 else f"{split}_"
            results.update({f"{prefix}eval_{k}": float(v) for k, v in scores.items()})
            results[f"{prefix}eval_examples"] = len(examples)
        results.update(training_results(summary))
        write_eval_results(args.output_dir, results)
        from bert_tf.training.loop import MetricsLog
        MetricsLog(args.output_dir, True).write(results.get("global_step", 0), results, "eval")
        for k, v in sorted(results.items()):
            logger.info("  %s = %s", k, v)
    if args.do_predict and dist.is_chief:
        test_splits = ([("test_matched", processor), ("test_mismatched", processor)]
                       if processor.name == "MNLI" else [(processor.test_split, processor)])
        if processor.name == "MNLI":
            ax = glue.get_processor("AX")
            try:
                ax.split_path(data_dir, "test")
                test_splits.append(("test", ax))
            except (FileNotFoundError, ValueError, glue.DataError):
                logger.info("no AX.tsv / diagnostic.tsv in %s: skipping the AX predictions",
                            data_dir)
        for split, proc in test_splits:
            examples = proc.get_examples(data_dir, split)
            feats = glue.convert_examples_to_features(examples, labels, args.max_seq_length,
                                                      tokenizer, processor.is_regression)
            table = FeatureTable.from_features(feats, args.max_seq_length, label_dtype)
            path = glue.write_submission(proc, args.output_dir, examples,
                                         predictions(table, args.predict_batch_size), split)
            logger.info("wrote %s", path)
    return results


# -- CoNLL-2003 NER ---------------------------------------------------------------------------------

def run_ner(args: RunArgs) -> dict:
    """Fine-tune / evaluate / predict CoNLL-2003 NER. Evaluation covers dev (testa) and test
    (testb) with entity-level precision/recall/F1 as conlleval computes them; predictions are
    written in CoNLL format (word gold predicted)."""
    from bert_tf import metrics
    from bert_tf.data import conll
    from bert_tf.data.records import FeatureTable
    from bert_tf.modeling import BertTokenClassifier
    from bert_tf.tokenization import FullTokenizer
    from bert_tf.training import loop, tasks

    check_args(args)
    if not args.data_dir:
        raise UsageError("--data_dir is required: the folder with eng.train, eng.testa and "
                         "eng.testb (CoNLL-2003 English; its licence does not allow a download "
                         "from bert_tf)")
    assets = resolve_model_assets(args.init_checkpoint, args.bert_config_file, args.vocab_file,
                                  args.do_lower_case, args.do_lower_case_given,
                                  args.max_seq_length)
    dist, use_xla = setup_runtime(args)
    labels = list(conll.LABELS)
    guard_output_dir(args, assets.config, dist.is_chief, len(labels), dist.size)
    tokenizer = FullTokenizer(assets.vocab_file, do_lower_case=assets.do_lower_case)
    cache_dir = os.path.join(args.output_dir, "cache")

    def data_for(split):
        path = os.path.join(args.data_dir, conll.SPLIT_FILES[split])
        key = {"task": "conll2003", "split": split, "file": file_key(path) if
               os.path.exists(path) else path, "vocab": file_key(assets.vocab_file),
               "lower": assets.do_lower_case, "max_seq_length": args.max_seq_length}

        def build():
            sentences = conll.load_split(args.data_dir, split)
            return sentences, conll.convert_sentences_to_features(
                sentences, labels, args.max_seq_length, tokenizer)
        sentences, feats = cached(cache_dir, key, build)
        table = FeatureTable.from_features(feats, args.max_seq_length, token_labels=True)
        return sentences, feats, table

    model = BertTokenClassifier(assets.config, len(labels))
    init_model(model, assets, args, dist)
    summary = {}
    if args.do_train:
        _, _, table = data_for("train")
        summary = _train(model, tasks.token_classification_loss, table, args, dist, use_xla)
    elif not restore_trained(model, args.output_dir) and dist.is_chief:
        logger.warning("no fine-tuned checkpoint in %s: evaluating --init_checkpoint as is",
                       args.output_dir)

    results = {}
    splits = ([("dev", "eval")] if args.do_eval else []) + \
             ([("test", "test")] if args.do_predict or args.do_eval else [])
    if dist.is_chief:
        for split, name in splits:
            sentences, feats, table = data_for(split)
            batch_size = args.eval_batch_size if split == "dev" else args.predict_batch_size
            logits = loop.predict(model, table, batch_size, use_xla=use_xla,
                                  max_seq_length=args.max_seq_length, progress=args.progress)
            predicted = conll.assemble_predictions(feats, logits.argmax(-1), sentences, labels)
            scores = metrics.entity_scores([s.tags for s in sentences], predicted)
            for k in ("precision", "recall", "f1"):
                results[f"{split}_{k}"] = float(scores[k])
            for etype, values in sorted(scores["per_type"].items()):
                results[f"{split}_f1_{etype}"] = float(values["f1"])
            if args.do_predict:
                path = os.path.join(args.output_dir, f"{split}_predictions.txt")
                conll.write_predictions(path, sentences, predicted)
                logger.info("wrote %s", path)
        results.update(training_results(summary))
        if results:
            write_eval_results(args.output_dir, results)
            for k, v in sorted(results.items()):
                logger.info("  %s = %s", k, v)
    return results
