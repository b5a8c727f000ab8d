"""Fine-tuning runs behind run_classifier.py and run_ner.py: flags in, files out.

Both follow the same path: check the flags together, resolve the checkpoint's config and
vocabulary, guard output_dir against mixing runs, tokenize once (cached), build the model, load
the checkpoint, train with the one loop, evaluate and predict on the chief.
"""

from __future__ import annotations

import dataclasses
import logging
import os

from bert_tf.assets import resolve_model_assets
from bert_tf.errors import UsageError
from bert_tf.export import PARALLEL_CHAINS
from bert_tf.training.run import (EngineArgs, cached, check_engine_args, file_key, setup_runtime,
                                  guard_output_dir, init_model, open_tracking,
                                  restore_trained,
                                  training_results, train_settings, warmup_steps,
                                  write_eval_results)

logger = logging.getLogger("bert_tf")


@dataclasses.dataclass
class RunArgs(EngineArgs):
    """The flags of run_classifier.py / run_ner.py: the engine's plus the task's."""
    task_name: str = "MRPC"
    data_dir: str | None = None
    do_predict: bool = False
    predict_batch_size: int = 64
    predict_split: str = "test"
    export: str | None = None
    export_dir: str | None = None
    parallel_chains: int = PARALLEL_CHAINS
    num_train_epochs: float = 3.0
    max_train_examples: int = 0
    reference_tokenizer: bool = False

    identity_flags = ("task_name", "num_train_epochs",
                      "max_train_examples") + EngineArgs.identity_flags


def check_args(args: RunArgs) -> None:
    if not (args.do_train or args.do_eval or args.do_predict):
        raise UsageError("nothing to do: pass at least one of --do_train, --do_eval, --do_predict")
    if args.data_dir and os.path.isfile(args.data_dir):
        raise UsageError(f"--data_dir={args.data_dir} is a file: pass the folder that holds the "
                         "task's files")
    check_engine_args(args)
    if args.predict_batch_size < 1:
        raise UsageError("batch sizes must be at least 1")
    if args.do_train and args.num_train_epochs <= 0:
        raise UsageError(f"--num_train_epochs={args.num_train_epochs} must be positive")
    if args.max_train_examples < 0:
        raise UsageError(f"--max_train_examples={args.max_train_examples} must be >= 0 (0: all)")
    from bert_tf.export import check_export_available, check_parallel_chains

    check_export_available(args.export)
    check_parallel_chains(args.parallel_chains)


def train_steps(num_examples: int, args: RunArgs, num_workers: int) -> tuple[int, int]:
    global_batch = args.train_batch_size * num_workers * args.num_accumulation_steps
    steps = int(num_examples / global_batch * args.num_train_epochs)
    if steps < 1:
        seen = num_examples * args.num_train_epochs
        if num_examples >= global_batch:
            raise UsageError(
                f"--num_train_epochs={args.num_train_epochs} over {num_examples} training "
                f"examples is {seen:g} examples, less than one step of {global_batch} "
                f"(train_batch_size x workers x accumulation): raise --num_train_epochs to at "
                f"least {global_batch / num_examples:.3g}")
        raise UsageError(
            f"{num_examples} training examples make no full step of {global_batch} "
            f"(train_batch_size {args.train_batch_size} x {num_workers} workers x "
            f"{args.num_accumulation_steps} accumulation): lower --train_batch_size or "
            "--num_accumulation_steps")
    return steps, warmup_steps(args, steps)


def _train(model, loss_fn, table, args, dist, use_xla, log, eval_fn=None, num_examples=None):
    """Train on `table` for args.num_train_epochs over num_examples (default: its rows; SQuAD
    counts questions, as Google's run_squad.py, while the batches are its windows)."""
    from bert_tf.data import records
    from bert_tf.training.loop import train

    steps, warmup = train_steps(len(table) if num_examples is None else num_examples, args,
                                dist.size)
    settings = train_settings(args, steps, use_xla)
    source = records.table_batches(
        table, args.train_batch_size, args.seed, rank=dist.rank, num_workers=dist.size,
        accumulation=args.num_accumulation_steps, max_seq_length=args.max_seq_length)
    if dist.is_chief:
        logger.info("training: %d examples, %d steps (%d warm-up), %d worker(s) x batch %d x "
                    "%d accumulation, dtype %s, XLA %s", len(table), steps, warmup, dist.size,
                    args.train_batch_size, args.num_accumulation_steps, args.dtype,
                    "on" if use_xla else "off")
    return train(model, loss_fn, source, settings, dist, progress=args.progress, log=log,
                 eval_fn=eval_fn, eval_every_steps=args.eval_every_steps)


def _scores(results: dict) -> dict:
    """eval_results without the training summary (global_step, train_loss, nonfinite_steps,
    already logged under train/): what goes under eval/."""
    return {k: v for k, v in results.items()
            if k not in ("global_step", "train_loss", "nonfinite_steps")}


# -- GLUE -------------------------------------------------------------------------------------------

def run_classifier(args: RunArgs) -> dict:
    """Fine-tune / evaluate / predict a GLUE task. Returns the eval results (empty if none)."""
    from bert_tf.data import glue
    from bert_tf.data.download import ensure_glue_data
    from bert_tf.modeling import BertClassifier
    from bert_tf.tokenization import make_tokenizer
    from bert_tf.training import tasks

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
    examples_of, dev_splits, test_splits = _read_glue_splits(args, processor, data_dir)
    dist, use_xla = setup_runtime(args)
    if args.do_train:  # at least one step, before anything is written
        train_steps(len(examples_of[(processor.name, "train")]), args, dist.size)
    labels = processor.get_labels()
    num_labels = 1 if processor.is_regression else len(labels)
    model = BertClassifier(assets.config, num_labels)
    if not processor.is_regression:
        model.label_names = list(labels)  # output i is labels[i]; saved with the checkpoint
        model.label_aliases = list(processor.label_names)  # HF datasets' names of the same
    init_model(model, assets, args, dist)
    record = guard_output_dir(args, assets.config, dist.is_chief, dist.size,
                              num_labels=num_labels)
    tokenizer = make_tokenizer(assets.vocab_file, assets.do_lower_case,
                               reference=args.reference_tokenizer)
    run = _GlueRun(args, processor, data_dir, examples_of, dev_splits, assets, tokenizer, model,
                   use_xla)
    loss_fn = tasks.regression_loss if processor.is_regression else tasks.classification_loss
    with open_tracking(args, record, dist.is_chief, processor.name) as log:
        summary = {}
        if args.do_train:
            _, table = run.features_for("train")
            summary = _train(model, loss_fn, table, args, dist, use_xla, log,
                             eval_fn=run.evaluate_dev if args.eval_every_steps else None)
        elif not restore_trained(model, args.output_dir) and dist.is_chief:
            logger.warning("no fine-tuned checkpoint in %s: evaluating --init_checkpoint as is",
                           args.output_dir)

        results = {}
        if args.do_eval and dist.is_chief:
            results.update(run.evaluate_dev())
            results.update(training_results(summary))
            write_eval_results(args.output_dir, results)
            log.write(results.get("global_step", 0), _scores(results), "eval")
            log.log_artifact(os.path.join(args.output_dir, "eval_results.json"))
        if args.do_predict and dist.is_chief:
            # GLUE's files go to MLflow too: `azure/submit.py download --glue` builds the
            # submission zip from a sweep's trials without fetching their checkpoints.
            for path in run.write_submissions(test_splits):
                log.log_artifact(path)
        if args.export and dist.is_chief:
            from bert_tf.export import default_export_dir, export_classifier

            export_classifier(model, assets.vocab_file, assets.do_lower_case,
                              args.export_dir or default_export_dir(args.output_dir, args.export),
                              task_name=processor.name, label_names=labels,
                              regression=processor.is_regression,
                              pair_task=processor.is_pair_task,
                              max_seq_length=args.max_seq_length, fmt=args.export,
                              parallel_chains=args.parallel_chains)
        return results


def _read_glue_splits(args: RunArgs, processor, data_dir: str):
    """Every split this run needs, read (and checked) before anything is written.
    -> ({(task, split): examples}, dev splits, [(test split, processor)]); MNLI has two dev
    and two test splits, and predicts AX (GLUE's diagnostic set) when its file is there."""
    from bert_tf.data import glue

    dev_splits = (["dev_matched", "dev_mismatched"] if processor.name == "MNLI"
                  else [processor.dev_split])
    test_splits = ([("test_matched", processor), ("test_mismatched", processor)]
                   if processor.name == "MNLI" else [(processor.test_split, processor)])
    ax_dir = None
    if args.predict_split == "dev":
        test_splits = [(split, processor) for split in dev_splits]
    elif args.do_predict and processor.name == "MNLI":
        ax = glue.get_processor("AX")
        parent = os.path.dirname(os.path.abspath(data_dir))
        # In MNLI's folder, or beside it as GLUE lays it out (glue_data/diagnostic, .../AX).
        for folder in (data_dir, os.path.join(parent, "diagnostic"), os.path.join(parent, "AX")):
            try:
                ax.split_path(folder, "test")
            except (FileNotFoundError, ValueError, glue.DataError):
                continue
            test_splits.append(("test", ax))
            ax_dir = folder
            break
        else:
            logger.info("no AX.tsv / diagnostic.tsv in %s or beside it: skipping the AX "
                        "predictions", data_dir)
    needed = ([("train", processor)] if args.do_train else []) + \
        ([(split, processor) for split in dev_splits] if args.do_eval else []) + \
        (test_splits if args.do_predict else [])
    examples_of = {(proc.name, split): proc.get_examples(
                       ax_dir if proc.name == "AX" else data_dir, split)
                   for split, proc in needed}
    if args.do_train and args.max_train_examples:
        key = (processor.name, "train")
        examples_of[key] = examples_of[key][:args.max_train_examples]
    return examples_of, dev_splits, test_splits


class _GlueRun:
    """A GLUE run's features (cached per split), predictions, dev metrics and submission files."""

    def __init__(self, args: RunArgs, processor, data_dir: str, examples_of: dict,
                 dev_splits: list, assets, tokenizer, model, use_xla: bool):
        self.args, self.processor, self.data_dir = args, processor, data_dir
        self.examples_of, self.dev_splits = examples_of, dev_splits
        self.assets, self.tokenizer, self.model, self.use_xla = assets, tokenizer, model, use_xla
        self.labels = processor.get_labels()
        self.cache_dir = os.path.join(args.output_dir, "cache")
        self.label_dtype = "float32" if processor.is_regression else "int32"

    def features_for(self, split: str, proc=None):
        """-> (examples, FeatureTable) of a split, converted once and cached by its inputs."""
        from bert_tf.data import glue
        from bert_tf.data.records import FeatureTable

        proc = proc or self.processor
        args = self.args
        path = proc.split_path(self.data_dir, split)
        examples = self.examples_of[(proc.name, split)]
        key = {"task": proc.name, "split": split, "file": file_key(path),
               "vocab": file_key(self.assets.vocab_file), "lower": self.assets.do_lower_case,
               "max_seq_length": args.max_seq_length, "examples": len(examples)}
        feats = cached(self.cache_dir, key, lambda: glue.convert_examples_to_features(
            examples, self.labels, args.max_seq_length, self.tokenizer,
            self.processor.is_regression))
        return examples, FeatureTable.from_features(feats, args.max_seq_length, self.label_dtype)

    def logits(self, table, batch_size: int, progress: bool):
        from bert_tf.training import loop

        return loop.predict(self.model, table, batch_size, use_xla=self.use_xla,
                            max_seq_length=self.args.max_seq_length, progress=progress)

    def predictions(self, table, batch_size: int, progress: bool):
        logits = self.logits(table, batch_size, progress)
        return logits[:, 0] if self.processor.is_regression else logits.argmax(-1)

    def evaluate_dev(self, step=None) -> dict:
        """The task's metrics on its dev split(s): {eval_accuracy: ..., eval_examples: ...}
        (MNLI: dev_matched_eval_accuracy, ...). During training (step given) also logged."""
        args = self.args
        results = {}
        for split in self.dev_splits:
            examples, table = self.features_for(split)
            preds = self.predictions(table, args.eval_batch_size, args.progress and step is None)
            scores = self.processor.compute_metrics(table.arrays["label_ids"], preds)
            prefix = "" if len(self.dev_splits) == 1 else f"{split}_"
            results.update({f"{prefix}eval_{k}": float(v) for k, v in scores.items()})
            results[f"{prefix}eval_examples"] = len(examples)
        if step is not None:
            logger.info("step %d: %s", step, ", ".join(
                f"{k} {v:.4f}" for k, v in results.items() if "examples" not in k))
        return results

    def write_submissions(self, test_splits: list) -> list[str]:
        """--do_predict: per split, Google's `<split>_results.tsv` (test_results.tsv for the
        test split: each example's class probabilities, tab-separated, no header; a
        regression's score) and, for test splits, GLUE's submission TSV. Returns the paths of
        the GLUE submission files written."""
        from bert_tf.data import glue
        from bert_tf.data.records import FeatureTable

        args = self.args
        written = []
        for split, proc in test_splits:
            examples = self.examples_of[(proc.name, split)]
            feats = glue.convert_examples_to_features(
                examples, self.labels, args.max_seq_length, self.tokenizer,
                self.processor.is_regression)
            table = FeatureTable.from_features(feats, args.max_seq_length, self.label_dtype)
            logits = self.logits(table, args.predict_batch_size, args.progress)
            name = split if proc is self.processor else f"{proc.name}_{split}"  # AX_test
            _write_results_tsv(os.path.join(args.output_dir, f"{name}_results.tsv"), logits,
                               self.processor.is_regression)
            if args.predict_split == "test":
                preds = logits[:, 0] if self.processor.is_regression else logits.argmax(-1)
                path = glue.write_submission(proc, args.output_dir, examples, preds, split)
                logger.info("wrote %s", path)
                written.append(path)
        return written


def _write_results_tsv(path: str, logits, regression: bool) -> None:
    """Google's run_classifier.py prediction file: one line per example, the softmax
    probabilities (float32, as Google's graph computes them) tab-separated; a regression's
    score alone. Written to a temporary name and renamed."""
    import numpy as np

    logits = np.asarray(logits, np.float32)
    if regression:
        rows = logits[:, :1]
    else:
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        rows = shifted / shifted.sum(axis=-1, keepdims=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write("\t".join(repr(float(p)) for p in row) + "\n")
    os.replace(tmp, path)
    logger.info("wrote %s", path)


# -- CoNLL-2003 NER ---------------------------------------------------------------------------------

def run_ner(args: RunArgs) -> dict:
    """Fine-tune / evaluate / predict CoNLL-2003 NER. Evaluation covers dev (testa) and test
    (testb) with entity-level precision/recall/F1 as conlleval computes them; predictions are
    written in CoNLL format (word gold predicted)."""
    from bert_tf.data import conll
    from bert_tf.modeling import BertTokenClassifier
    from bert_tf.tokenization import make_tokenizer
    from bert_tf.training import tasks

    check_args(args)
    if not args.data_dir:
        raise UsageError("--data_dir is required: the folder with eng.train, eng.testa and "
                         "eng.testb (CoNLL-2003 English; its licence does not allow a download "
                         "from bert_tf)")
    assets = resolve_model_assets(args.init_checkpoint, args.bert_config_file, args.vocab_file,
                                  args.do_lower_case, args.do_lower_case_given,
                                  args.max_seq_length)
    labels = list(conll.LABELS)
    splits = ([("dev", "eval")] if args.do_eval else []) + \
             ([("test", "test")] if args.do_predict or args.do_eval else [])
    sentences_of = _read_conll_splits(args, ["train"] if args.do_train else [], splits, labels)
    dist, use_xla = setup_runtime(args)
    if args.do_train:
        train_steps(len(sentences_of["train"]), args, dist.size)
    model = BertTokenClassifier(assets.config, len(labels))
    model.label_names = list(labels)
    init_model(model, assets, args, dist)
    record = guard_output_dir(args, assets.config, dist.is_chief, dist.size,
                              num_labels=len(labels))
    tokenizer = make_tokenizer(assets.vocab_file, assets.do_lower_case,
                               reference=args.reference_tokenizer)
    run = _NerRun(args, sentences_of, labels, assets, tokenizer, model, use_xla)
    with open_tracking(args, record, dist.is_chief, "CoNLL-2003") as log:
        summary = {}
        if args.do_train:
            _, _, table = run.data_for("train")
            summary = _train(model, tasks.token_classification_loss, table, args, dist,
                             use_xla, log,
                             eval_fn=run.evaluate_dev if args.eval_every_steps else None)
        elif not restore_trained(model, args.output_dir) and dist.is_chief:
            logger.warning("no fine-tuned checkpoint in %s: evaluating --init_checkpoint as is",
                           args.output_dir)

        results = {}
        if dist.is_chief:
            for split, _ in splits:
                sentences, predicted, scores = run.score(split)
                results.update(scores)
                if args.do_predict:
                    path = os.path.join(args.output_dir, f"{split}_predictions.txt")
                    conll.write_predictions(path, sentences, predicted)
                    logger.info("wrote %s", path)
            results.update(training_results(summary))
            if results:
                write_eval_results(args.output_dir, results)
                log.write(results.get("global_step", 0), _scores(results), "eval")
            if args.export:
                from bert_tf.export import default_export_dir, export_tagger

                export_tagger(model, assets.vocab_file, assets.do_lower_case,
                              args.export_dir or default_export_dir(args.output_dir, args.export),
                              label_names=labels, max_seq_length=args.max_seq_length,
                              fmt=args.export, parallel_chains=args.parallel_chains)
        return results


def _read_conll_splits(args: RunArgs, train: list, splits: list, labels: list) -> dict:
    """Every split this run needs, read (and its tags checked) before anything is written:
    {split: sentences}. Raises DataError naming the file and line of an unknown tag."""
    from bert_tf.data import conll
    from bert_tf.data.glue import DataError

    sentences_of = {split: conll.load_split(args.data_dir, split)
                    for split in train + [split for split, _ in splits]}
    if args.do_train and args.max_train_examples:
        sentences_of["train"] = sentences_of["train"][:args.max_train_examples]
    known = set(labels)
    for split, sentences in sentences_of.items():
        path = os.path.join(args.data_dir, conll.SPLIT_FILES[split])
        for sentence in sentences:
            for offset, tag in enumerate(sentence.tags or []):
                if tag not in known:
                    raise DataError(f"{path}:{sentence.line + offset}: tag {tag!r} is not one "
                                    f"of CoNLL-2003's tags ({', '.join(labels)})")
    return sentences_of


class _NerRun:
    """A CoNLL run's features (cached per split) and entity-level scores."""

    def __init__(self, args: RunArgs, sentences_of: dict, labels: list, assets, tokenizer,
                 model, use_xla: bool):
        self.args, self.sentences_of, self.labels = args, sentences_of, labels
        self.assets, self.tokenizer, self.model, self.use_xla = assets, tokenizer, model, use_xla
        self.cache_dir = os.path.join(args.output_dir, "cache")

    def data_for(self, split: str):
        """-> (sentences, features, FeatureTable) of a split, converted once and cached."""
        from bert_tf.data import conll
        from bert_tf.data.records import FeatureTable

        args, assets = self.args, self.assets
        path = os.path.join(args.data_dir, conll.SPLIT_FILES[split])
        key = {"task": "conll2003", "split": split, "file": file_key(path) if
               os.path.exists(path) else path, "vocab": file_key(assets.vocab_file),
               "lower": assets.do_lower_case, "max_seq_length": args.max_seq_length,
               "examples": len(self.sentences_of[split])}
        sentences = self.sentences_of[split]
        feats = cached(self.cache_dir, key, lambda: conll.convert_sentences_to_features(
            sentences, self.labels, args.max_seq_length, self.tokenizer))
        table = FeatureTable.from_features(feats, args.max_seq_length, token_labels=True)
        return sentences, feats, table

    def score(self, split: str, progress=None):
        """(sentences, predicted tags, {split_precision, split_recall, split_f1, split_f1_PER,
        ...}) on one split."""
        from bert_tf import metrics
        from bert_tf.data import conll
        from bert_tf.training import loop

        args = self.args
        progress = args.progress if progress is None else progress
        sentences, feats, table = self.data_for(split)
        batch_size = args.eval_batch_size if split == "dev" else args.predict_batch_size
        logits = loop.predict(self.model, table, batch_size, use_xla=self.use_xla,
                              max_seq_length=args.max_seq_length, progress=progress)
        predicted = conll.assemble_predictions(feats, logits.argmax(-1), sentences, self.labels)
        scores = metrics.entity_scores([s.tags for s in sentences], predicted)
        results = {f"{split}_{k}": float(scores[k]) for k in ("precision", "recall", "f1")}
        for etype, values in sorted(scores["per_type"].items()):
            results[f"{split}_f1_{etype}"] = float(values["f1"])
        return sentences, predicted, results

    def evaluate_dev(self, step: int) -> dict:
        results = self.score("dev", progress=False)[2]
        logger.info("step %d: dev F1 %.4f", step, results["dev_f1"])
        return results
