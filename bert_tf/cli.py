"""What every absl script shares: logging set-up and turning known errors into one clear line and
a non-zero exit instead of a traceback."""

from __future__ import annotations

import logging
import sys

from absl import logging as absl_logging

from bert_tf.config import ConfigError

EXIT_USAGE = 2


def setup_logging() -> None:
    absl_logging.set_verbosity(absl_logging.INFO)
    for name in ("bert_tf", "bert_tf.checkpoints"):
        logging.getLogger(name).setLevel(logging.INFO)


def known_errors():
    from bert_tf.assets import UsageError
    from bert_tf.checkpoints import CheckpointError
    from bert_tf.data.glue import DataError
    from bert_tf.training.loop import TrainingError
    errors = [UsageError, ConfigError, CheckpointError, FileNotFoundError, DataError,
              TrainingError]
    try:
        from bert_tf.checkpoints.presets import PresetError
        errors.append(PresetError)
    except ImportError:
        pass
    return tuple(errors)


def run_main(main, argv) -> None:
    """Call main(argv); a known error prints `script: error: message` and exits 2."""
    script = sys.argv[0].rsplit("/", 1)[-1]
    try:
        main(argv)
    except known_errors() as e:
        print(f"{script}: error: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
