"""The code behind azure/submit.py (Azure ML SDK v2, `azure-ai-ml`), by concern:

    sizes.py         VM sizes: GPUs per node, retired and non-CUDA sizes
    inputs.py        data flags as job inputs: local paths uploaded, datastore URIs mounted
    script_flags.py  the training script's flags: parsed and checked as the script would
    jobs.py          command and sweep jobs: building them with the SDK, their YAML, dry runs
    workspace.py     finding the workspace, the client, secrets redacted from all output
    trials.py        a finished sweep's trials read back from MLflow, and their report
    endpoints.py     deploy: a bert_tf export on a managed online endpoint
    commands.py      the subcommands (train, sweep, compute, status, stream, download, deploy)
    cli.py           the command line: parser, errors, exit status

The SDK is imported only inside the functions that talk to it (jobs, workspace, commands), so
checking flags and writing a dry run load nothing of Azure's.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]   # the repository root: scripts, configs, azure/
ENVIRONMENT_DIR = REPO / "azure" / "environment"
PROG = "submit.py"
