#!/usr/bin/env bash
# Creates the virtualenv of the benchmark peer that cannot share the project's venv:
# TensorFlow Model Garden (tf-models-official) needs Keras 2 (tf-keras, TF_USE_LEGACY_KERAS=1),
# so it lives in its own venv and bench/bench_finetune.py runs it in a subprocess.
# The Hugging Face PyTorch peer runs from the project's venv (torch and transformers are
# already test/benchmark dependencies there).
#
#   bash bench/setup_peers.sh                 # creates .venv-peers next to .venv
#   PEERS_VENV=/elsewhere bash bench/setup_peers.sh
#
# Idempotent: an existing venv that already imports the pinned packages is left alone.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PEERS_VENV:-$ROOT/.venv-peers}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

check() {
  TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL=2 "$VENV/bin/python" - <<'EOF'
import tensorflow as tf, tf_keras
from official.nlp.modeling import models, networks  # noqa: F401
assert tf.__version__.startswith("2.18"), tf.__version__
assert tf_keras.__version__.startswith("2.18"), tf_keras.__version__
print("peers venv ok: tensorflow", tf.__version__, "tf-keras", tf_keras.__version__)
EOF
}

if [ -x "$VENV/bin/python" ] && check 2>/dev/null; then
  exit 0
fi

"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --upgrade pip
# The pip cache (~/.cache/pip) is used; nothing here is installed into the project's venv.
"$VENV/bin/pip" install "tensorflow==2.18.*" "tf-keras==2.18.*" "tf-models-official==2.18.*"
check
