"""What every absl script shares: logging set-up and turning known errors into one clear line and
a non-zero exit instead of a traceback."""

from __future__ import annotations

import logging
import os
import re
import sys

from absl import logging as absl_logging

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


def setup_logging() -> None:
    """bert_tf's progress at INFO; TensorFlow's and MLflow's own INFO lines (checkpoint sharding
    callbacks, database set-up) are not for users: only their warnings and errors show."""
    absl_logging.set_verbosity(absl_logging.INFO)
    for name in ("bert_tf", "bert_tf.checkpoints"):
        logging.getLogger(name).setLevel(logging.INFO)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    tensorflow_source = os.sep + "tensorflow" + os.sep
    logging.getLogger("absl").addFilter(  # TensorFlow logs through absl as well
        lambda record: record.levelno >= logging.WARNING or tensorflow_source not in
        record.pathname)


# (module, class) of the errors a script turns into one line. Only modules already imported are
# consulted: an error class whose module was never loaded cannot have been raised, and importing
# it on the way out (TensorFlow sits behind some) would cost seconds and ~400 MB.
_KNOWN_ERRORS = (
    ("bert_tf.errors", "UsageError"),
    ("bert_tf.config", "ConfigError"),
    ("bert_tf.checkpoints", "CheckpointError"),
    ("bert_tf.data.glue", "DataError"),
    ("bert_tf.data.text_files", "DataError"),  # the same class, where it is defined
    ("bert_tf.training.step", "TrainingError"),
    # Records that fail mid-run (a corrupt record, a shard cut short): with the resume hint.
    ("bert_tf.data.pretraining_reader", "RecordError"),
    # Every download error: bert_tf.data.download's DownloadError is this class, and the presets'
    # DownloadError / ArchiveError derive from it.
    ("bert_tf.downloads", "DownloadError"),
)


def known_errors():
    errors = [FileNotFoundError]
    for module_name, class_name in _KNOWN_ERRORS:
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, class_name):
            errors.append(getattr(module, class_name))
    return tuple(errors)


# What TensorFlow's CUDA plugins print while they look for a GPU that is not there: at import
# (cuFFT/cuDNN/cuBLAS factories registered twice, the CUDA runtime stub) and at the first device
# query (cuInit failing). A new user reads them as failures.
_CUDA_PROBE_NOISE = re.compile(
    r"cudart_stub\.cc|Could not find cuda drivers|Unable to register cu(FFT|DNN|BLAS) factory"
    r"|failed call to cuInit|cuda_driver\.cc.*cuInit|cuda_executor\.cc.*(NUMA|cuInit)"
    r"|All log messages before absl::InitializeLog\(\) is called are written to STDERR")


def gpu_present() -> bool:
    """An NVIDIA driver is loaded on this machine (its device files or /proc entry exist)."""
    return os.path.exists("/dev/nvidia0") or os.path.exists("/proc/driver/nvidia/version")


def import_tensorflow_quietly():
    """Imports TensorFlow and lists its devices with file descriptor 2 captured, then writes
    back every captured line except the CUDA probe noise of a machine without an NVIDIA driver.
    Real errors and warnings (and everything on a GPU machine) still show. Returns the module."""
    if "tensorflow" in sys.modules or gpu_present():
        import tensorflow as tf

        return tf
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # the cuInit probe happens here
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(keepends=True)
                    if not _CUDA_PROBE_NOISE.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
    return tf


def parse_flags(argv):
    """absl's flag parsing for app.run(..., flags_parser=parse_flags): an unknown flag, a value of
    the wrong type or outside an enum is one line `script: error: ...` and exit 2, like every
    other bad input (absl's own handler prints two lines and exits 1)."""
    from absl import flags

    script = os.path.basename(argv[0]) if argv else "script"
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"{script}: error: {e} (pass --helpshort for the flags)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def run_main(main, argv, tensorflow: bool = True) -> None:
    """Call main(argv); a known error prints `script: error: message` and exits 2; Ctrl-C
    prints one line (with where to resume from, when the run has checkpoints) and exits 130.

    tensorflow=True imports TensorFlow first, without CUDA probe noise on machines without a GPU
    (`import_tensorflow_quietly`); scripts that never need it pass False."""
    script = sys.argv[0].rsplit("/", 1)[-1]
    try:
        if tensorflow:
            import_tensorflow_quietly()
        main(argv)
    except known_errors() as e:
        hint = ""
        reader = sys.modules.get("bert_tf.data.pretraining_reader")
        if reader is not None and isinstance(e, reader.CorruptRecordError):
            # The same command would stop at the same record again.
            hint = _resume_hint().replace("run the same command to resume",
                                          "the same command with --skip_corrupt_records "
                                          "resumes")
        elif reader is not None and isinstance(e, reader.RecordError):
            hint = _resume_hint()
        print(f"{script}: error: {e}{hint}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except _preempted() as e:  # SIGTERM / first Ctrl-C: a checkpoint of the step was saved
        print(f"\n{script}: {e}", file=sys.stderr)
        sys.exit(128 + e.signum)
    except KeyboardInterrupt:
        print(f"\n{script}: interrupted{_resume_hint()}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


def _preempted():
    """The Preempted class when training was imported (else a class nothing raises)."""
    module = sys.modules.get("bert_tf.training.preemption")
    return module.Preempted if module is not None else _NeverRaised


class _NeverRaised(Exception):
    pass


def _resume_hint() -> str:
    """'; ... run the same command to resume' when --output_dir holds training checkpoints."""
    from absl import flags

    try:
        output_dir = flags.FLAGS["output_dir"].value
        training = flags.FLAGS["do_train"].value
    except KeyError:
        return ""
    if not (output_dir and training):
        return ""
    from bert_tf.training.loop import checkpoint_dir
    from bert_tf.training.run import has_checkpoints

    try:
        if has_checkpoints(output_dir):  # the test a rerun uses to resume
            return (f"; the checkpoints so far are in {checkpoint_dir(output_dir)}: run the same "
                    "command to resume from the last one")
    except OSError:
        pass
    return ""


def split_after_dashdash(argv: list[str]) -> tuple[list[str], list[str]]:
    """argv -> (the command's own arguments, the script flags after `--`)."""
    if "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1:]
    return argv, []


def run_module(main, prog: str) -> None:
    """The entry of a `python -m bert_tf.X` command (tune, glue): main(argv) returns the exit
    status; SIGTERM stops it as Ctrl-C does (exit 130); a UsageError is one line
    `prog: error: ...`, exit 2."""
    import signal

    from bert_tf.errors import UsageError

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        sys.exit(main(sys.argv[1:]))
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        sys.exit(130)
