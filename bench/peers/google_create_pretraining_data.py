"""Runs Google's original create_pretraining_data.py, unmodified, under TensorFlow 2.

    python bench/peers/google_create_pretraining_data.py --google_bert_dir=/tmp/google-bert \
        --input_file=... --output_file=... --vocab_file=... [Google's other flags]

--google_bert_dir is a checkout of https://github.com/google-research/bert
(`git clone https://github.com/google-research/bert /tmp/google-bert`); nothing of it is
copied into this repository. Every other flag goes to Google's script as it is.

Google's script and its tokenization.py do `import tensorflow as tf` and call TF1 APIs
(tf.flags, tf.logging, tf.gfile, tf.python_io.TFRecordWriter, tf.app.run). Binding the name
`tensorflow` in sys.modules to `tensorflow.compat.v1` before they are imported is all they
need; the v2 behaviour is switched off as well, as in a TF1 program (the script builds no
graph, so this changes nothing it does). Google's tokenization.py needs `six`.
The script runs as `__main__` (runpy), so its `if __name__ == "__main__":` block, which marks
the required flags and calls tf.app.run(), runs as it would from the command line.
"""

from __future__ import annotations

import os
import runpy
import sys


def _take_google_bert_dir(argv: list[str]) -> tuple[str, list[str]]:
    """Removes --google_bert_dir=DIR (or --google_bert_dir DIR) from argv -> (DIR, rest)."""
    rest, found = [argv[0]], None
    args = iter(argv[1:])
    for arg in args:
        if arg.startswith("--google_bert_dir="):
            found = arg.split("=", 1)[1]
        elif arg == "--google_bert_dir":
            found = next(args, None)
        else:
            rest.append(arg)
    if not found:
        sys.exit("--google_bert_dir=DIR is required: a checkout of "
                 "https://github.com/google-research/bert "
                 "(git clone https://github.com/google-research/bert /tmp/google-bert)")
    return os.path.abspath(os.path.expanduser(found)), rest


def main() -> None:
    google_bert_dir, argv = _take_google_bert_dir(sys.argv)
    script = os.path.join(google_bert_dir, "create_pretraining_data.py")
    for name in ("create_pretraining_data.py", "tokenization.py"):
        if not os.path.isfile(os.path.join(google_bert_dir, name)):
            sys.exit(f"--google_bert_dir={google_bert_dir} has no {name}: pass a checkout of "
                     "https://github.com/google-research/bert")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import tensorflow.compat.v1 as tf_v1

    tf_v1.disable_v2_behavior()
    sys.modules["tensorflow"] = tf_v1
    sys.path.insert(0, google_bert_dir)  # `import tokenization`
    sys.argv = [script] + argv[1:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
