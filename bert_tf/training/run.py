"""What every training script shares, whatever it trains: the engine's arguments, the runtime
(Horovod, determinism, dtype policy, XLA default), the output-dir guard, the init checkpoint,
the feature cache, result files, the TrainSettings the loop takes and the tracking log (metrics,
TensorBoard, MLflow) the loop and the evaluation write to.

run_classifier.py, run_ner.py (through bert_tf.finetune) and run_pretraining.py (through
bert_tf.pretrain) all go through here; the flags behind EngineArgs are defined once, in
bert_tf.flags.define_engine_flags.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os

import numpy as np

from bert_tf.errors import UsageError

logger = logging.getLogger("bert_tf")


@dataclasses.dataclass
class EngineArgs:
    """The flags of the training engine, common to every training script (Google's names)."""
    output_dir: str | None = None
    bert_config_file: str | None = None
    vocab_file: str | None = None
    init_checkpoint: str | None = None
    fresh_head: bool = False
    do_lower_case: bool = True
    do_lower_case_given: bool = False
    max_seq_length: int = 128
    do_train: bool = False
    do_eval: bool = False
    train_batch_size: int = 32  # per worker, per micro-batch
    eval_batch_size: int = 64
    eval_every_steps: int = 0  # with do_train and do_eval: also evaluate every N steps
    learning_rate: float = 5e-5
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
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI or OUTPUT_DIR/mlflow.db
    preemption_grace_seconds: float = 25.0
    experiment_name: str | None = None  # None: the script's task

    # Flags whose change makes old checkpoints in output_dir belong to another run; subclasses
    # add their own.
    identity_flags = ("max_seq_length", "train_batch_size", "learning_rate",
                      "warmup_proportion", "num_warmup_steps", "optimizer",
                      "num_accumulation_steps", "seed", "dtype", "adam_bias_correction")

    def identity(self) -> dict:
        """The flags that make a run what it is, plus the init checkpoint by content: a rerun
        on another machine or in another Azure ML job (which mounts inputs under a path of its
        own) is the same run."""
        out = {k: getattr(self, k) for k in self.identity_flags}
        out["init_checkpoint_data"] = path_key(self.init_checkpoint)
        return out


def path_key(path: str | None) -> str | None:
    """What a checkpoint or data path is, independent of where it is mounted: for a file, its
    name and size; for a folder, the names and sizes of the files in it; for a checkpoint
    prefix (`.../bert_model.ckpt`), those of the files it names; anything else (a preset name)
    as given. A sha256 of that, prefixed with the base name."""
    if not path:
        return None
    import glob as globlib

    if os.path.isfile(path):
        entries = [(os.path.basename(path), os.path.getsize(path))]
    elif os.path.isdir(path):
        entries = sorted((n, os.path.getsize(os.path.join(path, n))) for n in os.listdir(path)
                         if os.path.isfile(os.path.join(path, n)))
    else:
        files = sorted(globlib.glob(globlib.escape(path) + ".*"))
        if not files:
            return path
        entries = [(os.path.basename(f), os.path.getsize(f)) for f in files]
    return f"{os.path.basename(os.path.normpath(path))}:{entries_digest(entries)}"


def entries_digest(entries) -> str:
    """16 hex digits of sha256 over [(file name, size), ...]: files by what they are, not by
    where they are mounted."""
    return hashlib.sha256(json.dumps(entries).encode("utf-8")).hexdigest()[:16]


def check_engine_args(args: EngineArgs) -> None:
    """The engine flags alone, before any work. Raises UsageError naming the flag."""
    if not args.output_dir:
        raise UsageError("--output_dir is required (checkpoints, metrics and results go there)")
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise UsageError(f"--output_dir={args.output_dir} is a file, not a folder: choose "
                         "another path")
    parent = os.path.dirname(os.path.abspath(args.output_dir))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise UsageError(f"--output_dir={args.output_dir}: {parent} is not a writable folder")
    if args.max_seq_length < 3:
        raise UsageError(f"--max_seq_length={args.max_seq_length} leaves no room for a token "
                         "beside [CLS] and [SEP]: use 128 (or 512)")
    if args.train_batch_size < 1 or args.eval_batch_size < 1:
        raise UsageError("batch sizes must be at least 1")
    if not 0 <= args.warmup_proportion < 1:
        raise UsageError(f"--warmup_proportion={args.warmup_proportion} must be in [0, 1)")
    if args.num_warmup_steps is not None and args.num_warmup_steps < 0:
        raise UsageError(f"--num_warmup_steps={args.num_warmup_steps} must be >= 0")
    if args.num_accumulation_steps < 1:
        raise UsageError("--num_accumulation_steps must be at least 1")
    if args.max_consecutive_nonfinite < 1:
        raise UsageError(f"--max_consecutive_nonfinite={args.max_consecutive_nonfinite} must be "
                         "at least 1")
    if args.learning_rate <= 0:
        raise UsageError(f"--learning_rate={args.learning_rate} must be positive")
    if args.log_steps < 1:
        raise UsageError(f"--log_steps={args.log_steps} must be at least 1")
    if args.save_checkpoints_steps < 1:
        raise UsageError(f"--save_checkpoints_steps={args.save_checkpoints_steps} must be at "
                         "least 1")
    if args.keep_checkpoint_max < 1:
        raise UsageError(f"--keep_checkpoint_max={args.keep_checkpoint_max} must be at least 1")
    if args.eval_every_steps < 0:
        raise UsageError(f"--eval_every_steps={args.eval_every_steps} must be >= 0 (0: evaluate "
                         "only at the end)")
    if args.eval_every_steps and not (args.do_train and args.do_eval):
        raise UsageError(f"--eval_every_steps={args.eval_every_steps} evaluates during training: "
                         "it needs both --do_train and --do_eval")


def setup_runtime(args: EngineArgs):
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


def has_checkpoints(output_dir: str) -> bool:
    from bert_tf.training.loop import checkpoint_dir

    directory = checkpoint_dir(output_dir)
    return os.path.isdir(directory) and any(n.endswith(".index") for n in os.listdir(directory))


def guard_output_dir(args: EngineArgs, config, is_chief: bool, num_workers: int = 1,
                     **identity_extra) -> dict:
    """Refuse to mix a new run into an output_dir holding another run's checkpoints; record this
    run's flags and config there (run_config.json, bert_config.json).

    The identity is `args.identity()` plus `identity_extra` (e.g. num_labels), the worker count
    (it sets the global batch, hence the steps, the schedule and where in the data a resumed run
    starts) and the model config. Returns the record run_config.json holds ({"identity",
    "flags"}; the same on every worker). Raises UsageError naming every difference."""
    path = os.path.join(args.output_dir, "run_config.json")
    current = args.identity()
    current.update(identity_extra)
    current["num_workers"] = num_workers
    current["bert_config"] = config.to_dict()
    resuming = has_checkpoints(args.output_dir) and args.do_train
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            previous = json.load(f).get("identity", {})
        if resuming:
            previous.setdefault("num_workers", 1)  # run_config.json of earlier versions
            # A key only one side has was added or renamed by another bert_tf version: not
            # comparable, so not a difference (logged).
            unknown = sorted(set(previous) ^ set(current))
            if unknown and is_chief:
                logger.info("run_config.json of another bert_tf version: not compared: %s",
                            ", ".join(unknown))
            diff = sorted(k for k in set(previous) & set(current)
                          if previous.get(k) != current.get(k))
            if diff:
                details = "; ".join(f"{k}: {previous.get(k)!r} -> {current.get(k)!r}"
                                    for k in diff if k != "bert_config")
                if "bert_config" in diff:
                    details += "; bert_config differs"
                raise UsageError(
                    f"--output_dir={args.output_dir} holds checkpoints of another run "
                    f"({details.strip('; ')}). To resume it, rerun with its values; otherwise "
                    "use a new --output_dir, or delete the old one to start over")
    elif resuming:
        raise UsageError(f"--output_dir={args.output_dir} holds checkpoints without a "
                         "run_config.json (not a bert_tf run?): use a new --output_dir")
    record = {"identity": current, "flags": dataclasses.asdict(args)}
    if os.path.exists(path) and not args.do_train and has_checkpoints(args.output_dir):
        # Evaluating or predicting with a trained run's checkpoints (Google's SQuAD 2.0 step
        # with a new threshold, a GLUE --do_predict): the record stays the training run's, so
        # the training command still resumes and a different one is still refused.
        return record
    if is_chief:
        os.makedirs(args.output_dir, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2, sort_keys=True, default=str)
        os.replace(tmp, path)
        config.to_json_file(os.path.join(args.output_dir, "bert_config.json"))
    return record


# -- tracking --------------------------------------------------------------------------------------

def run_name(args: EngineArgs, task: str) -> str:
    """The MLflow run name: task, peak learning rate, batch per worker, seed, e.g.
    "MRPC-lr2e-05-bs32-seed42"."""
    return f"{task}-lr{args.learning_rate:g}-bs{args.train_batch_size}-seed{args.seed}"


def open_tracking(args: EngineArgs, record: dict, is_chief: bool, task: str):
    """The TrackingLog one script invocation trains and evaluates into (use it as a context
    manager: the MLflow run ends with the block, FINISHED or FAILED).

    MLflow is on where it records something, i.e. with --do_train or --do_eval: store
    --tracking_uri (default $MLFLOW_TRACKING_URI, else sqlite:///OUTPUT_DIR/mlflow.db; "none"
    turns it off), experiment --experiment_name (default `task`), run name `run_name`, and as
    parameters the flags, the identity values that are not flags (num_labels, num_workers) and
    the model config as bert_config.* (all of `record`, guard_output_dir's result); as
    artifacts run_config.json and bert_config.json."""
    from bert_tf.training.tracking import TrackingLog, flatten_params, resolve_tracking_uri

    uri = (resolve_tracking_uri(args.tracking_uri, args.output_dir)
           if args.do_train or args.do_eval else None)
    # Flags left unset (None: resolved later, logged then under run.*) are left out.
    params = {k: v for k, v in record["flags"].items() if v is not None}
    identity = record["identity"]
    params.update({k: v for k, v in identity.items() if k not in params and k != "bert_config"})
    params["bert_config"] = identity["bert_config"]
    log = TrackingLog(args.output_dir, is_chief, uri, args.experiment_name or task,
                      run_name(args, task), flatten_params(params))
    for name in ("run_config.json", "bert_config.json"):  # written by guard_output_dir
        if os.path.isfile(os.path.join(args.output_dir, name)):
            log.log_artifact(os.path.join(args.output_dir, name))
    return log


# -- feature cache ----------------------------------------------------------------------------------

def _pack_features(features: list[dict]) -> dict:
    """list of {name: int | float | list} -> flat arrays (+ row splits for list values)."""
    arrays = {}
    for key in features[0]:
        values = [f[key] for f in features]
        if isinstance(values[0], (list, tuple, np.ndarray)):
            lengths = np.array([len(v) for v in values], np.int64)
            flat = np.concatenate([np.asarray(v) for v in values]) if lengths.sum() else \
                np.zeros((0,), np.int32)
            arrays[f"{key}.values"] = flat
            arrays[f"{key}.splits"] = np.concatenate([[0], np.cumsum(lengths)])
        else:
            arrays[key] = np.asarray(values)
    return arrays


def _unpack_features(arrays) -> list[dict]:
    columns = {}
    for name in arrays.files:
        if name.endswith(".splits"):
            continue
        if name.endswith(".values"):
            key = name[:-len(".values")]
            flat, splits = arrays[name], arrays[f"{key}.splits"]
            columns[key] = [flat[a:b].tolist() for a, b in zip(splits[:-1], splits[1:])]
        else:
            columns[name] = arrays[name].tolist()
    n = len(next(iter(columns.values()))) if columns else 0
    return [{k: v[i] for k, v in columns.items()} for i in range(n)]


def cached(cache_dir: str, key: dict, build):
    """`build() -> list of feature dicts` once per key, cached as .npz under cache_dir
    (tokenizing SST-2 or MNLI again for every run would be minutes of Python). Feature values
    are ints, floats or lists of them. Plain arrays, loaded with allow_pickle=False: a cache
    file can never run code."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    path = os.path.join(cache_dir, f"features-{digest[:16]}.npz")
    if os.path.exists(path):
        try:
            with np.load(path, allow_pickle=False) as arrays:
                return _unpack_features(arrays)
        except (OSError, ValueError, KeyError):
            logger.warning("feature cache %s is unreadable: rebuilding it", path)
    features = build()
    if not features:
        return features
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.npz"
    np.savez(tmp, **_pack_features(features))
    os.replace(tmp, path)
    return features


def file_key(path: str) -> list:
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, int(st.st_mtime)]


# -- model state ------------------------------------------------------------------------------------

def init_model(model, assets, args: EngineArgs, dist, what: str = "fine-tuning"):
    """Load --init_checkpoint into `model` (any format checkpoints.load accepts); without one,
    warn loudly that training starts from random weights (unless output_dir has checkpoints
    to resume from). Returns the LoadReport or None."""
    from bert_tf import checkpoints

    if assets.init_checkpoint:
        return checkpoints.load(model, assets.init_checkpoint,  # logs what it loaded
                                fresh_head=args.fresh_head,
                                label_names=getattr(model, "label_names", None))
    # A run that resumes takes its weights from output_dir's checkpoints: no banner then.
    if args.do_train and dist.is_chief and not has_checkpoints(args.output_dir):
        logger.warning(
            "=" * 78 + f"\nNO --init_checkpoint: {what} starts from RANDOM weights. Expect "
            "scores near chance;\npass a pre-trained checkpoint (a directory, a prefix or a preset "
            "such as bert-base-uncased).\n" + "=" * 78)
    return None


def restore_trained(model, output_dir: str) -> bool:
    """The latest trained checkpoint in output_dir, for --do_eval/--do_predict without
    --do_train. Returns False when there is none."""
    import tensorflow as tf

    from bert_tf.training.loop import checkpoint_dir

    latest = tf.train.latest_checkpoint(checkpoint_dir(output_dir))
    if not latest:
        return False
    tf.train.Checkpoint(model=model).read(latest).expect_partial()
    logger.info("restored the trained checkpoint %s", latest)
    return True


# -- results ----------------------------------------------------------------------------------------

def write_eval_results(output_dir: str, results: dict, name: str = "eval_results") -> None:
    """Google's `key = value` eval_results.txt plus the same as JSON."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, f"{name}.txt"), "w", encoding="utf-8") as f:
        for key in sorted(results):
            f.write(f"{key} = {results[key]}\n")
    with open(os.path.join(output_dir, f"{name}.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, sort_keys=True)


def training_results(summary: dict) -> dict:
    """What a training run adds to eval_results: global_step, nonfinite_steps, the batch
    source's counters (corrupt_records_skipped) and train_loss (left out when a rerun of a
    finished run took no step, so there is no loss to report)."""
    if not summary:
        return {}
    out = {"global_step": summary["step"], "nonfinite_steps": summary["nonfinite_steps"]}
    out.update(summary.get("source_stats", {}))  # the batch source's counters, e.g. skipped
    if np.isfinite(summary["loss"]):
        out["train_loss"] = summary["loss"]
    return out


def warmup_steps(args: EngineArgs, num_train_steps: int) -> int:
    warmup = (args.num_warmup_steps if args.num_warmup_steps is not None
              else int(num_train_steps * args.warmup_proportion))
    return min(warmup, num_train_steps)


def train_settings(args: EngineArgs, num_train_steps: int, use_xla: bool):
    """The loop's TrainSettings from the engine flags."""
    from bert_tf.training.loop import TrainSettings

    return TrainSettings(
        output_dir=args.output_dir, train_batch_size=args.train_batch_size,
        num_train_steps=num_train_steps, learning_rate=args.learning_rate,
        num_warmup_steps=warmup_steps(args, num_train_steps), optimizer=args.optimizer,
        adam_bias_correction=args.adam_bias_correction, dtype=args.dtype, use_xla=use_xla,
        num_accumulation_steps=args.num_accumulation_steps,
        save_checkpoints_steps=args.save_checkpoints_steps,
        keep_checkpoint_max=args.keep_checkpoint_max, log_steps=args.log_steps, seed=args.seed,
        max_consecutive_nonfinite=args.max_consecutive_nonfinite,
        preemption_grace_seconds=args.preemption_grace_seconds)
