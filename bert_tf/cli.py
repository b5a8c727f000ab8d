"""What every absl script shares: logging set-up and turning known errors into one clear line and
a non-zero exit instead of a traceback."""

from __future__ import annotations

import logging
import sys

from absl import logging as absl_logging

EXIT_USAGE = 2


def setup_logging() -> None:
    absl_logging.set_verbosity(absl_logging.INFO)
    for name in ("bert_tf", "bert_tf.checkpoints"):
        logging.getLogger(name).setLevel(logging.INFO)


# (module, class) of the errors a script turns into one line. Only modules already imported are
# consulted: an error class whose module was never loaded cannot have been raised, and importing
# it on the way out (TensorFlow sits behind some) would cost seconds and ~400 MB.
_KNOWN_ERRORS = (
    ("bert_tf.assets", "UsageError"),
    ("bert_tf.config", "ConfigError"),
    ("bert_tf.checkpoints", "CheckpointError"),
    ("bert_tf.data.glue", "DataError"),
    ("bert_tf.training.loop", "TrainingError"),
    ("bert_tf.checkpoints.presets", "PresetError"),
)


def known_errors():
    errors = [FileNotFoundError]
    for module_name, class_name in _KNOWN_ERRORS:
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, class_name):
            errors.append(getattr(module, class_name))
    return tuple(errors)


def run_main(main, argv) -> None:
    """Call main(argv); a known error prints `script: error: message` and exits 2."""
    script = sys.argv[0].rsplit("/", 1)[-1]
    try:
        main(argv)
    except known_errors() as e:
        print(f"{script}: error: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
