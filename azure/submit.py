"""Launch bert_tf's training scripts on Azure ML (SDK v2, `azure-ai-ml`): the entry point.

    python azure/submit.py {compute,train,sweep,glue,status,stream,download,deploy} ...
    (--help: each one)

The code lives in `bert_tf/azure_ml/`, a module per concern (VM sizes, job inputs, the script's
flags, jobs and sweeps, workspace and secrets, sweep trials, the subcommands, the command line:
cli.py, whose text is what --help prints). docs/azure.md says what to expect.
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bert_tf.azure_ml.cli import main  # noqa: E402  (after the path set-up)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
