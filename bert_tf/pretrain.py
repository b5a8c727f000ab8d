"""Pre-training behind run_pretraining.py: flags in, checkpoints and results out.

Google's recipe (masked-LM + next-sentence loss over records of create_pretraining_data.py) on
the one training loop: check the flags and the records before any work, resolve config and
vocabulary, guard output_dir, build a BertPretrainer, load --init_checkpoint in any format
(continued pre-training; heads the checkpoint lacks start fresh, the MLM decoder always tied to
the word embeddings), train, evaluate on held-out records, export Google / Hugging Face
checkpoints.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil

from bert_tf.assets import resolve_model_assets
from bert_tf.errors import UsageError
from bert_tf.data import pretraining_reader as records  # TF-free at import
from bert_tf.training.run import (EngineArgs, check_engine_args, entries_digest,
                                  guard_output_dir,
                                  init_model, open_tracking, restore_trained, setup_runtime,
                                  train_settings, training_results, write_eval_results)

logger = logging.getLogger("bert_tf")

EXPORT_FORMATS = ("google", "huggingface")


@dataclasses.dataclass
class PretrainArgs(EngineArgs):
    """The flags of run_pretraining.py: the engine's plus the pre-training data's."""
    input_file: str | None = None
    eval_input_file: str | None = None
    max_predictions_per_seq: int = 20
    num_train_steps: int = 100000
    global_batch_size: int | None = None
    max_eval_steps: int = 100
    shuffle_block_records: int = 64
    skip_corrupt_records: bool = False
    export: str = ""
    masked_lm_prob: float = 0.15
    do_whole_word_mask: bool = False

    # The training records are identified by content (guard_output_dir's input_data), not by
    # the --input_file path, which an Azure ML job mounts under a path of its own.
    identity_flags = ("max_predictions_per_seq", "num_train_steps",
                      "shuffle_block_records", "masked_lm_prob",
                      "do_whole_word_mask") + EngineArgs.identity_flags


def export_formats(value: str) -> list[str]:
    formats = [v.strip() for v in (value or "").split(",") if v.strip()]
    bad = [v for v in formats if v not in EXPORT_FORMATS]
    if bad:
        raise UsageError(f"--export={value}: unknown format(s) {bad}; use a comma list of "
                         f"{', '.join(EXPORT_FORMATS)}")
    return formats


def check_args(args: PretrainArgs) -> None:
    """Every flag of run_pretraining.py on its own and together, before any work."""
    if not (args.do_train or args.do_eval):
        raise UsageError("nothing to do: pass --do_train and/or --do_eval")
    check_engine_args(args)
    if args.do_train and not args.input_file:
        raise UsageError("--input_file is required with --do_train: the TFRecord files "
                         "create_pretraining_data.py wrote (globs and comma lists accepted)")
    if args.do_eval and not (args.eval_input_file or args.input_file):
        raise UsageError("--do_eval needs --eval_input_file (held-out records)")
    if args.max_predictions_per_seq < 1:
        raise UsageError(f"--max_predictions_per_seq={args.max_predictions_per_seq} must be at "
                         "least 1")
    if args.max_predictions_per_seq > args.max_seq_length:
        raise UsageError(f"--max_predictions_per_seq={args.max_predictions_per_seq} exceeds "
                         f"--max_seq_length={args.max_seq_length}")
    if args.do_train and args.num_train_steps < 1:
        raise UsageError(f"--num_train_steps={args.num_train_steps} must be at least 1")
    if args.max_eval_steps < 0:
        raise UsageError(f"--max_eval_steps={args.max_eval_steps} must be >= 0")
    if args.shuffle_block_records < 1:
        raise UsageError(f"--shuffle_block_records={args.shuffle_block_records} must be at "
                         "least 1")
    if not 0 < args.masked_lm_prob < 1:
        raise UsageError(f"--masked_lm_prob={args.masked_lm_prob} must be in (0, 1)")
    if args.global_batch_size is not None:
        if args.global_batch_size < 1:
            raise UsageError(f"--global_batch_size={args.global_batch_size} must be at least 1")
        accumulation_steps(args, 1)  # whatever the workers, it must divide by the micro-batch
    export_formats(args.export)


def accumulation_steps(args: PretrainArgs, num_workers: int) -> int:
    """--global_batch_size -> micro-batches per step on each worker, so the published global
    batch is reached whatever the worker count. Raises UsageError when it does not divide."""
    if args.global_batch_size is None:
        return args.num_accumulation_steps
    per_step = args.train_batch_size * num_workers
    if args.global_batch_size % per_step:
        raise UsageError(
            f"--global_batch_size={args.global_batch_size} is not a multiple of "
            f"--train_batch_size={args.train_batch_size} x {num_workers} worker(s) = "
            f"{per_step}: change one of them")
    if args.num_accumulation_steps not in (1, args.global_batch_size // per_step):
        raise UsageError("pass --global_batch_size or --num_accumulation_steps, not both")
    return args.global_batch_size // per_step


def _export(model, args: PretrainArgs, assets, records_vocab: dict | None = None) -> dict:
    """Write the trained model in the asked formats, each directory with the vocabulary and
    casing, ready for run_classifier.py --init_checkpoint or transformers' from_pretrained."""
    import json

    from bert_tf import checkpoints

    written = {}
    for fmt in export_formats(args.export):
        directory = os.path.join(args.output_dir, "export", fmt)
        os.makedirs(directory, exist_ok=True)
        if fmt == "google":
            checkpoints.save_google(model, os.path.join(directory, "bert_model.ckpt"))
        else:
            checkpoints.save_huggingface(model, directory)
            with open(os.path.join(directory, "tokenizer_config.json"), "w",
                      encoding="utf-8") as f:
                json.dump({"do_lower_case": assets.do_lower_case,
                           "tokenizer_class": "BertTokenizer",
                           "model_max_length": model.config.max_position_embeddings}, f,
                          indent=2)
        from bert_tf.data.record_index import vocab_fingerprint, write_fingerprint

        if assets.vocab_file:
            shutil.copyfile(assets.vocab_file, os.path.join(directory, "vocab.txt"))
            write_fingerprint(directory, vocab_fingerprint(assets.vocab_file))
        else:
            if records_vocab:  # the records say which vocabulary the embedding rows learned
                write_fingerprint(directory, records_vocab)
            logger.warning("no vocab.txt in %s: none was given (--vocab_file); copy the one "
                           "the records were made with there before fine-tuning", directory)
        logger.info("exported the %s checkpoint to %s", fmt, directory)
        written[fmt] = directory
    return written


def run_pretraining(args: PretrainArgs) -> dict:
    """Pre-train (or continue pre-training) and/or evaluate. Returns the eval results."""
    from bert_tf.modeling import BertPretrainer
    from bert_tf.training import loop, tasks

    check_args(args)
    # The records hold ids already: no vocabulary is needed to train on them (Google's README
    # command passes none). When one is known (--vocab_file or next to --init_checkpoint), it
    # must be the one the records were made with (their index says).
    assets = resolve_model_assets(args.init_checkpoint, args.bert_config_file, args.vocab_file,
                                  args.do_lower_case, args.do_lower_case_given,
                                  args.max_seq_length, vocab_required=False)
    train_files, eval_files, eval_flag = _input_files(args)
    dist, use_xla = setup_runtime(args)
    data = _Inputs.open(args, assets, dist, train_files, eval_files, eval_flag)
    args.num_accumulation_steps = accumulation_steps(args, dist.size)
    model = BertPretrainer(assets.config)
    report = init_model(model, assets, args, dist, what="pre-training")
    record = guard_output_dir(args, assets.config, dist.is_chief, dist.size,
                              input_data=_data_key(data.train_records))
    if report is not None and dist.is_chief:
        _warn_fresh_heads(report)

    def evaluate(step=None):
        batches = records.eval_pretraining_batches(
            data.eval_records, args.eval_batch_size, max_steps=args.max_eval_steps or None,
            masker=data.eval_masker, skip_corrupt=args.skip_corrupt_records)
        result = loop.evaluate(model, tasks.pretraining_eval_metrics, batches,
                               use_xla=use_xla, progress=args.progress and step is None)
        if step is not None:
            logger.info("step %d: held-out masked-LM accuracy %.4f, loss %.4f", step,
                        result["masked_lm_accuracy"], result["masked_lm_loss"])
        return result

    with open_tracking(args, record, dist.is_chief, "pretraining") as log:
        summary = {}
        if args.do_train:
            source, settings = _train_source(args, data, dist, use_xla, len(train_files))
            during = args.do_eval and args.eval_every_steps
            summary = loop.train(model, tasks.pretraining_loss, source, settings, dist,
                                 progress=args.progress, eval_fn=evaluate if during else None,
                                 eval_every_steps=args.eval_every_steps, log=log)
        elif not restore_trained(model, args.output_dir) and dist.is_chief:
            logger.warning("no pre-trained checkpoint in %s: evaluating --init_checkpoint as is",
                           args.output_dir)
        results = {}
        if dist.is_chief:
            results = _final_results(args, evaluate, summary, log)
            if args.export:
                _export(model, args, assets,
                        data.train_records.vocab if data.train_records is not None else None)
    dist.barrier()
    return results


def _input_files(args: PretrainArgs):
    """--input_file / --eval_input_file globs -> (train files or None, eval files or None, the
    flag the eval files came from). UsageError naming the flag when one matches nothing."""
    try:
        train_files = records.expand_files(args.input_file) if args.do_train else None
    except records.RecordError as e:
        raise UsageError(f"--input_file: {e}") from None
    eval_flag = "--eval_input_file" if args.eval_input_file else "--input_file"
    try:
        eval_files = (records.expand_files(args.eval_input_file or args.input_file)
                      if args.do_eval else None)
    except records.RecordError as e:
        raise UsageError(f"{eval_flag}: {e}") from None
    return train_files, eval_files, eval_flag


@dataclasses.dataclass
class _Inputs:
    """The run's records (through their indexes) and, for records without masks, the maskers
    that draw them."""
    train_records: object = None
    train_masker: object = None
    eval_records: object = None
    eval_masker: object = None

    @classmethod
    def open(cls, args: PretrainArgs, assets, dist, train_files, eval_files,
             eval_flag: str) -> "_Inputs":
        """Counts, schema and vocabulary come from each shard's index: start-up does not read
        the records. Missing indexes are built once by the chief while the other workers wait."""
        data = cls()
        if train_files:
            data.train_records = _open_records(train_files, "--input_file", args, dist)
            _check_vocab(data.train_records, assets, args, "--input_file")
            data.train_masker = _masker(data.train_records, args, assets.vocab_file, args.seed)
        if eval_files:
            data.eval_records = _open_records(eval_files, eval_flag, args, dist)
            _check_vocab(data.eval_records, assets, args, eval_flag)
            # Held-out masks are drawn once, the same at every evaluation.
            data.eval_masker = _masker(data.eval_records, args, assets.vocab_file, args.seed + 1)
        return data


def _warn_fresh_heads(report) -> None:
    fresh = [n for n in report.missing if "cls" in n or "seq_relationship" in n]
    if fresh:
        logger.warning("the checkpoint has no pre-training heads: the masked-LM transform "
                       "and bias and the next-sentence classifier start fresh (the masked-LM "
                       "decoder is the word embedding table, as always): %s", ", ".join(fresh))


def _train_source(args: PretrainArgs, data: _Inputs, dist, use_xla: bool, num_files: int):
    """-> (this worker's batch source, the loop's settings); the chief logs the plan."""
    source = records.pretraining_batches(
        data.train_records, args.train_batch_size, args.seed, rank=dist.rank,
        num_workers=dist.size, accumulation=args.num_accumulation_steps,
        block_records=args.shuffle_block_records, masker=data.train_masker,
        skip_corrupt=args.skip_corrupt_records)
    settings = train_settings(args, args.num_train_steps, use_xla)
    if dist.is_chief:
        global_batch = args.train_batch_size * dist.size * args.num_accumulation_steps
        logger.info(
            "pre-training: %d records in %d file(s), %d steps (%d warm-up) of a global "
            "batch of %d (%d worker(s) x %d x %d accumulation; %.2f epochs), %s, "
            "dtype %s, XLA %s", source.records, num_files,
            settings.num_train_steps, settings.num_warmup_steps, global_batch, dist.size,
            args.train_batch_size, args.num_accumulation_steps,
            settings.num_train_steps / source.steps_per_epoch, args.optimizer,
            args.dtype, "on" if use_xla else "off")
    return source, settings


def _final_results(args: PretrainArgs, evaluate, summary: dict, log) -> dict:
    """The chief's final evaluation (with --do_eval) and the training summary, written to
    eval_results.txt/.json and tracked under the evaluations' names."""
    results = {}
    if args.do_eval:
        evaluated = evaluate()
        results.update({k: float(v) for k, v in evaluated.items() if k != "examples"})
        results["eval_examples"] = evaluated["examples"]
    results.update(training_results(summary))
    if results:
        write_eval_results(args.output_dir, results)
        evaluated = {k: v for k, v in results.items() if k.startswith(("masked", "next"))}
        if evaluated:
            # The same keys as the evaluations during training ("examples" too).
            evaluated["examples"] = results["eval_examples"]
            log.write(results.get("global_step", 0), evaluated, "eval")
    return results


def _open_records(files, flag: str, args: PretrainArgs, dist):
    """The records of `files` through their indexes. The chief builds missing indexes first
    while the other workers wait at a barrier; a worker that still finds none (records on a
    node-local disk) builds its own. Indexes of shards in a folder that cannot be written go to
    OUTPUT_DIR/record_index. Raises UsageError naming the flag."""
    # Records on a read-only mount (an Azure ML input) get their index under output_dir.
    index_dir = os.path.join(args.output_dir, "record_index")

    def open_them():
        return records.open_pretraining_records(files, args.max_seq_length,
                                                args.max_predictions_per_seq,
                                                progress=args.progress and dist.is_chief,
                                                index_dir=index_dir)

    try:
        opened = open_them() if dist.is_chief else None  # builds what is missing
        dist.barrier()
        return opened or open_them()
    except records.RecordError as e:
        raise UsageError(f"{flag}: {e}") from None


def _data_key(recs) -> str | None:
    """The training records by content for run_config.json: shard count, record count and a
    hash of the shards' names and sizes, wherever they are mounted."""
    if recs is None:
        return None
    entries = [(os.path.basename(ix.path), ix.header["file_size"]) for ix in recs.indexes]
    return f"{len(entries)} files, {recs.records} records, {entries_digest(entries)}"


def _check_vocab(recs, assets, args: PretrainArgs, flag: str) -> None:
    """The model's vocabulary (when known) must be the one the records were made with (when
    their index knows it), and the embedding table must hold every id of it."""
    if recs.vocab is None:
        return
    size = recs.vocab["size"]
    if size > assets.config.vocab_size:
        raise UsageError(
            f"{flag}: the records were made with a vocabulary of {size} tokens but "
            f"{assets.config_file} says vocab_size {assets.config.vocab_size}: their ids do "
            "not fit the embedding table. Use the config of that vocabulary")
    from bert_tf.data.record_index import read_fingerprint, vocab_fingerprint

    # The checkpoint's own record of its vocabulary counts whatever --vocab_file says: its
    # embedding rows belong to that vocabulary.
    stored = read_fingerprint(args.init_checkpoint)
    if stored is not None and stored["sha256"] != recs.vocab["sha256"]:
        raise UsageError(
            f"--init_checkpoint={args.init_checkpoint} was trained on another vocabulary "
            f"than the one {flag} was made with ({stored['file']}: {stored['size']} tokens, "
            f"sha256 {stored['sha256'][:12]}; the records' index: {size} tokens, sha256 "
            f"{recs.vocab['sha256'][:12]}): the same ids would mean other words. Recreate "
            "the records with the checkpoint's vocab.txt")
    if assets.vocab_file is None:
        return
    mine = vocab_fingerprint(assets.vocab_file)
    if mine["sha256"] != recs.vocab["sha256"]:
        source = (f"--vocab_file={assets.vocab_file}" if args.vocab_file else
                  f"{assets.vocab_file} (next to --init_checkpoint)")
        raise UsageError(
            f"{source} is not the vocabulary {flag} was made with ({mine['size']} tokens, "
            f"sha256 {mine['sha256'][:12]}; the records' index says {size} tokens, sha256 "
            f"{recs.vocab['sha256'][:12]}): the same ids would mean other words. Pass the "
            "vocab.txt the records were made with, or recreate the records with this one")


def _masker(recs, args: PretrainArgs, vocab_file: str | None, seed: int):
    """A DynamicMasker for records written without masks (--dynamic_masking), else None."""
    if recs.masked:
        return None
    from bert_tf.data.dynamic_masking import DynamicMasker

    if vocab_file is None:
        raise UsageError("--vocab_file is required: the records were written without masks "
                         "(--dynamic_masking), and masking draws [MASK] and random tokens from "
                         "the vocabulary they were made with")
    try:
        return DynamicMasker(vocab_file, args.max_predictions_per_seq, args.masked_lm_prob,
                             args.do_whole_word_mask, seed)
    except ValueError as e:
        raise UsageError(f"--vocab_file: {e}") from None
