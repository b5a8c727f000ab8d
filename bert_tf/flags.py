"""absl flag definitions (Google's names): the engine's, defined once and shared by every
training script, and each script family's own; and the step that turns parsed flags into the
library's argument dataclass. Only scripts import this module."""

from __future__ import annotations

import functools

from absl import flags

from bert_tf.export import PARALLEL_CHAINS


class _Into:
    """absl's DEFINE_* functions bound to one FlagValues (absl.flags.FLAGS for the scripts, a
    fresh one when a launcher checks a script's flags without running it)."""

    def __init__(self, flag_values=None):
        self.flag_values = flags.FLAGS if flag_values is None else flag_values

    def __getattr__(self, name):
        return functools.partial(getattr(flags, name), flag_values=self.flag_values)


def define_finetune_flags(default_task: str, flag_values=None) -> None:
    """run_classifier.py / run_ner.py: the engine flags plus the task's."""
    f = _Into(flag_values)
    define_engine_flags(flag_values=flag_values)
    f.DEFINE_string("task_name", default_task, "The task to fine-tune.")
    f.DEFINE_string("data_dir", None, "Folder with the task's files (default: download into the "
                    "cache, ~/.cache/bert_tf or $BERT_TF_CACHE).")
    f.DEFINE_bool("do_predict", False, "Predict the test set(s).")
    f.DEFINE_integer("predict_batch_size", 64, "Examples per prediction batch (chief only).")
    f.DEFINE_enum("predict_split", "test", ["test", "dev"], "--do_predict on the test split(s) "
                  "(GLUE submission files and Google's test_results.tsv) or on the dev split(s) "
                  "(dev_results.tsv / dev_predictions.txt only).")
    define_export_flags(flag_values)
    f.DEFINE_float("num_train_epochs", 3.0, "Epochs over the training set.")
    f.DEFINE_integer("max_train_examples", 0, "Train on the first N examples of the training "
                     "set only (quick runs, sweeps on a slice); 0: all of them.")
    define_tokenizer_flag(flag_values)
    f.DEFINE_alias("task", "task_name")


def define_export_flags(flag_values=None) -> None:
    """--export / --export_dir: the fine-tuned model for serving when the run ends."""
    f = _Into(flag_values)
    f.DEFINE_enum("export", None, ["saved_model", "onnx"], "When the run ends, export the "
                  "model for serving: saved_model, a SavedModel that takes raw text (tokenizer "
                  "inside); onnx, model.onnx (ids in) for onnxruntime with a client tokenizer "
                  "(docs/serving.md). Default: no export.")
    f.DEFINE_string("export_dir", None, "Where --export writes (default: "
                    "OUTPUT_DIR/export/saved_model or OUTPUT_DIR/export/onnx).")
    f.DEFINE_integer("parallel_chains", PARALLEL_CHAINS, "--export=saved_model: the CPU cores "
                     "one request is cut for (docs/serving.md, Threads); 1 for a GPU.")


def define_squad_flags(flag_values=None) -> None:
    """run_squad.py: the engine flags (Google's run_squad.py defaults: max_seq_length 384, lr
    5e-5, batch 32) plus Google's SQuAD flags and the feature conversion's."""
    f = _Into(flag_values)
    define_engine_flags(max_seq_length=384, flag_values=flag_values)
    f.DEFINE_string("train_file", None, "SQuAD JSON for training, e.g. train-v1.1.json.")
    f.DEFINE_string("predict_file", None, "SQuAD JSON to predict, e.g. dev-v1.1.json; scored "
                    "(eval_results.txt) when its questions carry answers.")
    f.DEFINE_bool("version_2_with_negative", False, "SQuAD 2.0: some questions have no answer "
                  "(is_impossible); predicts \"\" when the null score wins.")
    f.DEFINE_integer("doc_stride", 128, "Pieces between the starts of consecutive windows over "
                     "a long document (a step, as in Google's script, not an overlap).")
    f.DEFINE_integer("max_query_length", 64, "Question pieces kept (the rest is cut).")
    f.DEFINE_integer("n_best_size", 20, "Answers per question in nbest_predictions.json; also "
                     "the start and end positions considered per window.")
    f.DEFINE_integer("max_answer_length", 30, "Longest answer, in word pieces.")
    f.DEFINE_float("null_score_diff_threshold", 0.0, "SQuAD 2.0: predict \"\" when the null "
                   "score minus the best answer's exceeds this (null_odds.json holds the "
                   "difference; eval_results' best_f1_thresh is the best value on the predict "
                   "file).")
    f.DEFINE_bool("do_predict", False, "Predict --predict_file: predictions.json, "
                  "nbest_predictions.json (and null_odds.json for 2.0).")
    f.DEFINE_integer("predict_batch_size", 8, "Windows per prediction batch (chief only).")
    f.DEFINE_float("num_train_epochs", 3.0, "Epochs over the training questions (the step "
                   "count is questions / batch x epochs, as Google's; batches are windows).")
    f.DEFINE_integer("max_train_examples", 0, "Train on the first N questions only (quick runs, "
                     "sweeps on a slice); 0: all of them.")
    f.DEFINE_integer("preprocess_workers", 0, "Processes that turn questions into features "
                     "(0: one per core, at most 8, for files of 20k questions or more; one "
                     "below that, where starting workers costs more than it saves).")
    f.DEFINE_bool("verbose_logging", False, "Google's flag, accepted and ignored (answers whose "
                  "text cannot be aligned fall back to the context's words, as in Google's).")
    f.DEFINE_string("feature_cache_dir", None, "Where converted features are kept, keyed by the "
                    "file's sha256 and the settings (default OUTPUT_DIR/cache; share one "
                    "folder between runs to convert a training set once).")
    define_tokenizer_flag(flag_values)


def define_tokenizer_flag(flag_values=None) -> None:
    _Into(flag_values).DEFINE_bool("reference_tokenizer", False,
                      "Tokenize with the pure-Python FullTokenizer (Google's code, line for line) "
                      "instead of the memoised CachedTokenizer: the same ids, several times "
                      "slower on large sets.")


def define_pretraining_flags(flag_values=None) -> None:
    """run_pretraining.py: the engine flags (with Google's pre-training defaults) plus the
    records'."""
    f = _Into(flag_values)
    # Google's run_pretraining.py defaults: lr 5e-5, batch 32, eval batch 8, 10k warm-up steps of
    # 100k (10%), Adam with weight decay. The two-phase recipe configs set LAMB and its rates.
    define_engine_flags(eval_batch_size=8, flag_values=flag_values)
    f.DEFINE_string("input_file", None, "Training records of create_pretraining_data.py: "
                    "globs or a comma list.")
    f.DEFINE_string("eval_input_file", None, "Held-out records for --do_eval (default: "
                    "--input_file, as Google's script).")
    f.DEFINE_integer("max_predictions_per_seq", 20, "Masked-LM predictions per sequence; must "
                     "equal the value the records were written with.")
    f.DEFINE_integer("num_train_steps", 100000, "Optimizer steps.")
    f.DEFINE_integer("global_batch_size", None, "Sequences per optimizer step over all workers: "
                     "sets --num_accumulation_steps = global_batch_size / (train_batch_size x "
                     "workers), so a published global batch is reached on any worker count.")
    f.DEFINE_integer("max_eval_steps", 100, "Evaluation batches at most (0: all held-out "
                     "records).")
    f.DEFINE_integer("shuffle_block_records", 64, "The unit of the per-epoch shuffle: blocks of "
                     "this many consecutive records, placed in a random order each epoch (a "
                     "function of --seed and the epoch), so a worker reads its micro-batch in "
                     "one or two sequential ranges. The records of create_pretraining_data.py "
                     "(Google's or bert_tf's) are shuffled when written; records written in "
                     "document order want 1 (every record placed on its own, random reads).")
    f.DEFINE_bool("skip_corrupt_records", False, "A record whose CRC fails is left out of its "
                  "batch and counted (corrupt_records_skipped in metrics.jsonl) instead of "
                  "stopping the run with the file and byte offset.")
    f.DEFINE_float("masked_lm_prob", 0.15, "Records written with --dynamic_masking only: the "
                   "fraction of tokens to mask, drawn afresh every epoch.")
    f.DEFINE_bool("do_whole_word_mask", False, "Records written with --dynamic_masking only: "
                  "mask whole words (all their ## pieces).")
    f.DEFINE_string("export", "", "After training, also write the model as a comma list of "
                    "google (TF1 checkpoint) and huggingface (config.json + model.safetensors) "
                    "under OUTPUT_DIR/export/, each with vocab.txt.")


def define_engine_flags(learning_rate: float = 5e-5, train_batch_size: int = 32,
                        max_seq_length: int = 128, warmup_proportion: float = 0.1,
                        optimizer: str = "adamw", eval_batch_size: int = 64,
                        flag_values=None) -> None:
    """The training engine's flags, the same in every training script (defaults per script)."""
    f = _Into(flag_values)
    f.DEFINE_string("output_dir", None, "Where checkpoints, metrics.jsonl, TensorBoard events, "
                    "eval_results.txt and predictions are written.")
    f.DEFINE_string("bert_config_file", None,
                    "bert_config.json (default: the one next to --init_checkpoint).")
    f.DEFINE_string("vocab_file", None, "vocab.txt (default: the one next to --init_checkpoint).")
    f.DEFINE_string("init_checkpoint", None,
                    "Pre-trained weights: Google checkpoint prefix/directory, Hugging Face "
                    "directory, bert_tf checkpoint or a preset name (bert-base-uncased, ...).")
    f.DEFINE_bool("fresh_head", False,
                  "Load only the encoder of --init_checkpoint: the task head starts from random "
                  "weights even when the checkpoint has one (a model fine-tuned for another "
                  "task or number of labels).")
    f.DEFINE_bool("do_lower_case", True, "Lower-case input; must match the checkpoint "
                  "(default: what the checkpoint says, else true).")
    f.DEFINE_integer("max_seq_length", max_seq_length, "Maximum tokens per example after "
                     "WordPiece, [CLS]/[SEP] included. Fine-tuning batches are padded to the next "
                     "multiple of 32; pre-training records have exactly this length.")
    f.DEFINE_bool("do_train", False, "Train.")
    f.DEFINE_bool("do_eval", False, "Evaluate on the dev / held-out set(s).")
    f.DEFINE_integer("train_batch_size", train_batch_size,
                     "Examples per micro-batch PER WORKER. The global batch is train_batch_size "
                     "x workers x num_accumulation_steps; the learning rate is not scaled for "
                     "you: raise it with the global batch (linearly or by its square root) when "
                     "adding workers.")
    f.DEFINE_integer("eval_batch_size", eval_batch_size,
                     "Examples per evaluation batch (chief only).")
    f.DEFINE_integer("eval_every_steps", 0, "With --do_train and --do_eval, also evaluate on the "
                     "dev / held-out set every N optimizer steps during training (logged as "
                     "eval/..., the curve a sweep stops bad runs on); 0: only at the end.")
    f.DEFINE_float("learning_rate", learning_rate, "Peak learning rate (after warm-up).")
    f.DEFINE_float("warmup_proportion", warmup_proportion, "Fraction of steps with linear warm-up.")
    f.DEFINE_integer("num_warmup_steps", None, "Warm-up steps (overrides warmup_proportion).")
    f.DEFINE_enum("optimizer", optimizer, ["adamw", "lamb"], "adamw (Google's BERT Adam with "
                  "decoupled weight decay 0.01) or lamb.")
    f.DEFINE_bool("adam_bias_correction", False, "adamw only: bias-correct Adam's moments as "
                  "torch/Keras AdamW do. Google's BERT does not; without it early updates are "
                  "several times larger.")
    f.DEFINE_enum("dtype", "fp32", ["fp32", "fp16", "bf16"], "Compute precision; fp16 uses "
                  "dynamic loss scaling; LayerNorm, softmax and losses stay float32.")
    f.DEFINE_bool("use_xla", None, "Compile the train step with XLA (default: on when a GPU is "
                  "visible; measured slower on CPU).")
    f.DEFINE_bool("use_horovod", False, "Data-parallel training under horovodrun.")
    f.DEFINE_integer("num_accumulation_steps", 1, "Micro-batches whose gradients are summed "
                     "before one allreduce and optimizer step.")
    f.DEFINE_integer("save_checkpoints_steps", 1000, "Checkpoint every N optimizer steps "
                     "(and at the end).")
    f.DEFINE_integer("keep_checkpoint_max", 3, "Checkpoints kept.")
    f.DEFINE_integer("log_steps", 10, "Log loss, learning rate and examples/s every N steps.")
    f.DEFINE_integer("seed", 42, "Seed for initialisation, data order and dropout.")
    f.DEFINE_integer("max_consecutive_nonfinite", 20, "A step whose gradients are not finite is "
                     "skipped (fp16 halves its loss scale); more than this many in a row stop "
                     "the run with advice.")
    f.DEFINE_float("preemption_grace_seconds", 25.0, "On SIGTERM (a preempted node, a "
                   "scheduler's stop) or the first Ctrl-C, training stops at the end of the "
                   "step, saves a checkpoint and exits 143 / 130; if no step ends within this "
                   "many seconds it exits without one (0: wait however long the step takes). "
                   "Keep it under the scheduler's grace period (30 s for Kubernetes and Slurm "
                   "by default).")
    f.DEFINE_bool("deterministic", False, "Deterministic ops: a rerun (or a resumed run) gives "
                  "bit-identical results, somewhat slower.")
    f.DEFINE_bool("progress", True, "Show progress bars.")
    f.DEFINE_string("tracking_uri", None, "MLflow store for the metrics, flags and model config "
                    "(a sqlite:/// file, an http(s):// server); none: no MLflow, only "
                    "metrics.jsonl and TensorBoard. Default: $MLFLOW_TRACKING_URI, else "
                    "sqlite:///OUTPUT_DIR/mlflow.db. Inside an Azure ML job the job's store, "
                    "experiment and run are used whatever this says.")
    f.DEFINE_string("experiment_name", None, "MLflow experiment (default: the task, e.g. MRPC, "
                    "CoNLL-2003, pretraining).")
    # Google's TPU flags, so its command lines run as written; bert_tf trains on this
    # machine's devices and says so when they are set (run_args).
    f.DEFINE_bool("use_tpu", False, "Google's flag, accepted and ignored: bert_tf trains on "
                  "GPUs / CPUs (Horovod for several).")
    for name in ("tpu_name", "tpu_zone", "gcp_project", "master"):
        f.DEFINE_string(name, None, "Google's TPU flag, accepted and ignored.")
    f.DEFINE_integer("num_tpu_cores", 8, "Google's TPU flag, accepted and ignored.")
    f.DEFINE_integer("iterations_per_loop", 1000, "Google's TPU flag, accepted and ignored.")


SCRIPTS = ("run_classifier.py", "run_ner.py", "run_squad.py", "run_pretraining.py")


def script_flags(script: str):
    """A fresh absl FlagValues holding the flags `script` (one of SCRIPTS) defines, to check a
    command line for it without running it (e.g. `fv(["prog", "--learning_rate=1e-5"])`).
    Raises ValueError for another script."""
    fv = flags.FlagValues()
    name = script.replace("\\", "/").rsplit("/", 1)[-1]
    if name == "run_classifier.py":
        define_finetune_flags("MRPC", fv)
    elif name == "run_ner.py":
        define_finetune_flags("conll2003", fv)
    elif name == "run_squad.py":
        define_squad_flags(fv)
    elif name == "run_pretraining.py":
        define_pretraining_flags(fv)
    else:
        raise ValueError(f"unknown script {script!r}: one of {', '.join(SCRIPTS)}")
    return fv


GOOGLE_IGNORED = ("use_tpu", "tpu_name", "tpu_zone", "gcp_project", "master", "num_tpu_cores",
                  "iterations_per_loop")


def run_args(FLAGS, cls=None):
    """Parsed flags -> `cls` (default: bert_tf.finetune.RunArgs), field by field."""
    import dataclasses

    if cls is None:
        from bert_tf.finetune import RunArgs as cls
    ignored = [f"--{name}" for name in GOOGLE_IGNORED if name in FLAGS and FLAGS[name].present]
    if ignored:
        import logging

        logging.getLogger("bert_tf").warning(
            "%s: Google's TPU flags are accepted and ignored; training runs on this machine's "
            "devices (--use_horovod for several)", ", ".join(ignored))
    values = {}
    for field in dataclasses.fields(cls):
        if field.name == "do_lower_case_given":
            values[field.name] = FLAGS["do_lower_case"].present
        else:
            values[field.name] = getattr(FLAGS, field.name)
    return cls(**values)
