"""Question answering behind run_squad.py: SQuAD 1.1 / 2.0 fine-tuning and prediction, flags in,
Google's files out (predictions.json, nbest_predictions.json, null_odds.json), scored with the
official definitions when the predict file carries answers (eval_results.txt / .json, MLflow).

The path is the other fine-tuning scripts': check the flags together, read and check every file
before anything is written, resolve the checkpoint, guard output_dir, convert features once
(bert_tf.data.squad: stored on disk, keyed by the file's sha256 and the settings), train with
the one loop, predict on the chief (bert_tf.data.squad_answers).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

from bert_tf.assets import resolve_model_assets
from bert_tf.errors import UsageError
from bert_tf.training.run import (EngineArgs, check_engine_args, guard_output_dir, init_model,
                                  open_tracking, restore_trained, setup_runtime,
                                  training_results, write_eval_results)

logger = logging.getLogger("bert_tf")


@dataclasses.dataclass
class SquadArgs(EngineArgs):
    """The flags of run_squad.py: the engine's plus Google's SQuAD flags."""
    max_seq_length: int = 384
    train_batch_size: int = 32
    train_file: str | None = None
    predict_file: str | None = None
    version_2_with_negative: bool = False
    doc_stride: int = 128
    max_query_length: int = 64
    n_best_size: int = 20
    max_answer_length: int = 30
    null_score_diff_threshold: float = 0.0
    do_predict: bool = False
    predict_batch_size: int = 8
    num_train_epochs: float = 3.0
    max_train_examples: int = 0
    preprocess_workers: int = 0
    feature_cache_dir: str | None = None
    reference_tokenizer: bool = False

    identity_flags = ("num_train_epochs", "max_train_examples", "doc_stride",
                      "max_query_length", "version_2_with_negative") + EngineArgs.identity_flags


def check_args(args: SquadArgs) -> None:
    """The flags together, before any file is read. Raises UsageError naming the flag."""
    if not (args.do_train or args.do_eval or args.do_predict):
        raise UsageError("nothing to do: pass at least one of --do_train, --do_predict, "
                         "--do_eval")
    if args.do_train and not args.train_file:
        raise UsageError("--do_train needs --train_file (a SQuAD JSON file, e.g. "
                         "train-v1.1.json)")
    if (args.do_predict or args.do_eval) and not args.predict_file:
        raise UsageError("--do_predict / --do_eval need --predict_file (a SQuAD JSON file, "
                         "e.g. dev-v1.1.json)")
    check_engine_args(args)
    if args.max_query_length < 1:
        raise UsageError(f"--max_query_length={args.max_query_length} must be at least 1")
    if args.max_seq_length <= args.max_query_length + 3:
        raise UsageError(
            f"--max_seq_length={args.max_seq_length} leaves no room for the document: it must "
            f"exceed --max_query_length + 3 = {args.max_query_length + 3} ([CLS], the question, "
            "two [SEP]); raise --max_seq_length (384) or lower --max_query_length (64)")
    room = args.max_seq_length - args.max_query_length - 3
    if args.doc_stride < 1:
        raise UsageError(f"--doc_stride={args.doc_stride} must be at least 1 (the step between "
                         "windows over a long document; Google's default is 128 at 384)")
    if args.doc_stride >= room:
        raise UsageError(
            f"--doc_stride={args.doc_stride} is not below {room}, the room for the document in a "
            f"window (max_seq_length {args.max_seq_length} - max_query_length "
            f"{args.max_query_length} - 3): windows would not overlap, so an answer cut by a "
            "window's edge could be found in neither. Lower --doc_stride (to about half the "
            "room) or raise --max_seq_length")
    for flag in ("n_best_size", "max_answer_length", "predict_batch_size"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag}={getattr(args, flag)} must be at least 1")
    if args.do_train and args.num_train_epochs <= 0:
        raise UsageError(f"--num_train_epochs={args.num_train_epochs} must be positive")
    if args.max_train_examples < 0:
        raise UsageError(f"--max_train_examples={args.max_train_examples} must be >= 0 (0: all)")
    if args.preprocess_workers < 0:
        raise UsageError(f"--preprocess_workers={args.preprocess_workers} must be >= 0 (0: one "
                         "per core, at most 8)")


def _workers(args: SquadArgs, questions: int) -> int:
    """--preprocess_workers, or by default one process per core (at most 8) for files of 20k
    questions or more; smaller ones convert in a second in this process, quicker than
    starting workers (dev-v1.1: 0.9 s in one process, 1.2 s with two)."""
    if args.preprocess_workers:
        return args.preprocess_workers
    return min(8, os.cpu_count() or 1) if questions >= 20000 else 1


def run_squad(args: SquadArgs) -> dict:
    """Fine-tune on --train_file and/or predict --predict_file. Returns the scores (empty when
    nothing was scored)."""
    from bert_tf.finetune import train_steps, _train, _scores
    from bert_tf.modeling import BertSpanExtractor
    from bert_tf.tokenization import make_tokenizer
    from bert_tf.training import tasks

    check_args(args)
    assets = resolve_model_assets(args.init_checkpoint, args.bert_config_file, args.vocab_file,
                                  args.do_lower_case, args.do_lower_case_given,
                                  args.max_seq_length)
    if args.init_checkpoint is None and not args.bert_config_file:
        raise UsageError("pass --init_checkpoint (or --bert_config_file to train from scratch)")
    inputs = _read_inputs(args)
    dist, use_xla = setup_runtime(args)
    if args.do_train:  # at least one step, before anything is written (Google counts questions)
        train_steps(len(inputs.train_data.examples), args, dist.size)
    model = BertSpanExtractor(assets.config)
    init_model(model, assets, args, dist)
    identity = {}
    if inputs.train_data is not None:
        from bert_tf.data import squad

        identity["train_data"] = squad.file_sha256(inputs.train_file)[:16]
    record = guard_output_dir(args, assets.config, dist.is_chief, dist.size, **identity)
    tokenizer = make_tokenizer(assets.vocab_file, assets.do_lower_case,
                               reference=args.reference_tokenizer)
    run = _SquadRun(args, assets, dist, model, tokenizer, use_xla, inputs.predict_data)
    # The predict file's features are made before training, on every rank (features_of is a
    # collective step); evaluations during training and the final prediction run on the chief.
    if inputs.predict_data is not None:
        run.predict_features = run.features_of(inputs.predict_data, False)
    version_2 = args.version_2_with_negative
    with open_tracking(args, record, dist.is_chief, "SQuAD2.0" if version_2 else "SQuAD1.1") \
            as log:
        summary = {}
        if args.do_train:
            features = run.features_of(inputs.train_data, True)
            kept = len(inputs.train_data.examples) - features.meta["skipped"]
            if dist.is_chief:
                logger.info("training on %d questions in %d windows", kept, len(features))
            if dist.is_chief and features.meta["skipped"]:
                logger.warning("%d training question(s) skipped: their answer text cannot be "
                               "recovered from the context's whitespace tokens (Google's rule)",
                               features.meta["skipped"])
            summary = _train(model, tasks.span_loss, features, args, dist, use_xla, log,
                             eval_fn=run.evaluate_dev if args.eval_every_steps else None,
                             num_examples=kept)
        elif not restore_trained(model, args.output_dir) and dist.is_chief:
            logger.warning("no fine-tuned checkpoint in %s: predicting with --init_checkpoint as "
                           "is (its span head is untrained unless it was fine-tuned for SQuAD)",
                           args.output_dir)
        results = run.predict_and_score() if inputs.predict_data is not None and dist.is_chief \
            else {}
        if dist.is_chief:
            results.update(training_results(summary))
            if results:
                write_eval_results(args.output_dir, results)
                log.write(results.get("global_step", 0), _scores(results), "eval")
        return results


@dataclasses.dataclass
class _Inputs:
    train_file: str | None
    predict_file: str | None
    train_data: object      # squad.SquadData, or None without --do_train
    predict_data: object    # squad.SquadData, or None without --do_predict / --do_eval


def _read_inputs(args: SquadArgs) -> _Inputs:
    """Both files read and checked before anything is written; an official name that is not
    here (train-v1.1.json, ...) or a URL is downloaded into the cache first."""
    from bert_tf.data import squad
    from bert_tf.data.download import ensure_squad_file

    version_2 = args.version_2_with_negative
    train_file = predict_file = None
    if args.do_train:
        train_file = ensure_squad_file(args.train_file, "train_file", progress=args.progress)
    if args.do_predict or args.do_eval:
        predict_file = ensure_squad_file(args.predict_file, "predict_file",
                                         progress=args.progress)
    train_data = (squad.read_squad(train_file, version_2, for_training=True)
                  if train_file else None)
    if train_data is not None and args.max_train_examples:
        train_data.examples = train_data.examples[:args.max_train_examples]
    predict_data = squad.read_squad(predict_file, version_2) if predict_file else None
    if args.do_eval and not predict_data.has_answers:
        raise UsageError(f"--do_eval scores --predict_file={args.predict_file}, but some of its "
                         "questions carry no answers: use --do_predict alone to only predict")
    return _Inputs(train_file, predict_file, train_data, predict_data)


class _SquadRun:
    """A run's features (made once per file and settings, a collective step), predictions
    (Google's n-best and final text) and official scores."""

    def __init__(self, args: SquadArgs, assets, dist, model, tokenizer, use_xla: bool,
                 predict_data):
        from bert_tf.data import squad_answers

        self.args, self.assets, self.dist, self.model = args, assets, dist, model
        self.tokenizer, self.use_xla, self.predict_data = tokenizer, use_xla, predict_data
        self.predict_features = None
        self.cache_dir = args.feature_cache_dir or os.path.join(args.output_dir, "cache")
        self.answer_settings = squad_answers.AnswerSettings(
            args.n_best_size, args.max_answer_length, assets.do_lower_case,
            args.version_2_with_negative, args.null_score_diff_threshold)

    def features_of(self, data, for_training: bool):
        """The chief converts (worker processes); the other ranks wait and read its store. A
        collective step: every rank calls it, at the same point (never from chief-only code)."""
        from bert_tf.data import squad

        args, dist = self.args, self.dist
        settings = squad.FeatureSettings(args.max_seq_length, args.doc_stride,
                                         args.max_query_length, for_training)

        def convert():
            return squad.convert_to_store(data, self.assets.vocab_file,
                                          self.assets.do_lower_case, settings, self.cache_dir,
                                          _workers(args, len(data.examples)),
                                          args.reference_tokenizer,
                                          args.progress and dist.is_chief)
        if dist.size == 1:
            return convert()
        features = convert() if dist.is_chief else None
        dist.barrier()
        return features or convert()

    def predict(self, features, progress: bool):
        """-> (predictions, nbest, null_odds) of the predict file's questions."""
        from bert_tf.data import squad_answers
        from bert_tf.training import loop

        args = self.args
        started = time.perf_counter()
        logits = loop.predict(self.model, features, args.predict_batch_size,
                              use_xla=self.use_xla, output_key=("start_logits", "end_logits"),
                              max_seq_length=args.max_seq_length, progress=progress,
                              pad_sequence=True)
        answers = squad_answers.predict_answers(self.predict_data, features,
                                                logits["start_logits"], logits["end_logits"],
                                                self.tokenizer, self.answer_settings)
        logger.info("predicted %d questions (%d windows) in %.1f s",
                    len(self.predict_data.examples), len(features),
                    time.perf_counter() - started)
        return answers

    def score(self, predictions, null_odds) -> dict:
        """The official scores (evaluate-v1.1.py / evaluate-v2.0.py's)."""
        from bert_tf.metrics import squad_scores

        version_2 = self.args.version_2_with_negative
        examples = self.predict_data.examples
        results = squad_scores(examples, predictions, null_odds if version_2 else None,
                               version_2)
        results = {k: (int(v) if k.endswith("_total") or k == "total" else float(v))
                   for k, v in results.items()}
        results["eval_examples"] = len(examples)
        if version_2:
            results["null_score_diff_threshold"] = self.args.null_score_diff_threshold
        return results

    def evaluate_dev(self, step: int) -> dict:
        predictions, _, null_odds = self.predict(self.predict_features, progress=False)
        results = self.score(predictions, null_odds)
        logger.info("step %d: F1 %.2f, EM %.2f", step, results["f1"],
                    results.get("exact_match", results.get("exact")))
        return results

    def predict_and_score(self) -> dict:
        """The final prediction: files written with --do_predict, scores when the file has
        answers (else {})."""
        from bert_tf.data import squad_answers

        predictions, nbest, null_odds = self.predict(self.predict_features, self.args.progress)
        if self.args.do_predict:
            for path in squad_answers.write_predictions(self.args.output_dir, predictions,
                                                        nbest, null_odds):
                logger.info("wrote %s", path)
        return self.score(predictions, null_odds) if self.predict_data.has_answers else {}
