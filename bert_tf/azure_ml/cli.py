"""Launch bert_tf's training scripts on Azure ML (SDK v2, `azure-ai-ml`): a thin launcher, no
model logic.

    # a GPU cluster that scales to zero (dedicated; --low_priority for spot nodes)
    python azure/submit.py compute --name gpu-a100 --vm_size Standard_ND96amsr_A100_v4 \\
        --min_nodes 0 --max_nodes 2 --idle_seconds 600
    # a Horovod job on 2 nodes x 8 GPUs (16 MPI workers); after `--`: the script's own flags
    python azure/submit.py train --compute gpu-a100 --vm_size Standard_ND96amsr_A100_v4 \\
        --instance_count 2 --script run_classifier.py -- --task=MRPC --do_train --do_eval \\
        --init_checkpoint=bert-base-uncased --train_batch_size=32 --learning_rate=8e-5
    # a hyperparameter sweep from a search-space file (configs/sweeps/)
    python azure/submit.py sweep --compute gpu-a100 --vm_size Standard_ND96amsr_A100_v4 \\
        --instance_count 1 --sweep configs/sweeps/mrpc_lr.yaml
    python azure/submit.py status JOB        # state (a sweep: its trials by state)
    python azure/submit.py stream JOB        # follow the logs until the job ends
    # a finished sweep's trials -> trials.json + the local sweep's plots (loss_curves.png, ...)
    python azure/submit.py download SWEEP_JOB --output_dir output/mrpc_lr_azure
    # the GLUE table (python -m bert_tf.glue) as one grid sweep per task, then the table
    python azure/submit.py glue --compute gpu-a100 --vm_size Standard_NC24ads_A100_v4 \\
        --instance_count 1 --init_checkpoint=bert-base-uncased --trials_at_once=4 \\
        --data_dir=azureml://datastores/workspaceblobstore/paths/glue --output_dir output/glue
    python azure/submit.py download --glue output/glue
    # serve an export (export_model.py) on a managed online endpoint
    python azure/submit.py deploy --model export/mrpc --endpoint_name mrpc-bert \\
        --instance_type Standard_DS3_v2 --instance_count 1

What a job is: a command job running `python <script> --use_horovod <flags> --output_dir=
${{outputs.output_dir}}` with `MpiDistribution(process_count_per_instance=<GPUs per node>)` on
`--instance_count` nodes: Azure ML starts MPI itself (never horovodrun). The code is the
repository root (minus what .amlignore lists); the image is built from azure/environment/
(Dockerfile: CUDA 12.5, TF 2.18, Horovod 0.28.1 with NCCL and MPI, azureml-mlflow). Flags naming
data (--data_dir, --input_file, --eval_input_file, --train_file, --predict_file,
--init_checkpoint, --vocab_file, --bert_config_file) become job inputs: a local path is uploaded, a datastore URI
(azureml://datastores/NAME/paths/PATH) is mounted; a preset name stays a flag. The GPUs per node
come from the VM size (a table below; `--gpus_per_node` for sizes it does not know).

`--dry-run PATH` writes the job (or cluster) YAML, with local paths relative to the YAML's
folder, and contacts nothing: no workspace config needed, no credential constructed. The YAML can
be submitted as it is with `az ml job create --file PATH`; without --dry-run, submit.py sends
that same YAML (written to a temporary folder and read back with load_job), so what a dry run
shows is what is submitted.

Workspace: `--config PATH` (a workspace config.json), else the environment variables
AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and AZUREML_WORKSPACE_NAME, else config.json or
.azureml/config.json in this folder or a parent (where MLClient.from_config finds it);
credential: DefaultAzureCredential (`az login`, a managed identity, AZURE_CLIENT_* variables).

Bad input (an unknown script or flag, a flag of the wrong type, flags the script itself would
refuse at start-up, a search space that cannot run, a VM size without GPUs, a retired one, no
workspace) is one line `submit.py: error: ...`, exit status 2, before anything is written or
sent. Azure's own failures (no credential among them) are one line too, exit 1.
Nothing printed or written contains a token, key or subscription id (Azure's messages and the
studio links that carry one are redacted); the Azure SDK's DEBUG logging, which prints bearer
tokens, is never turned on.

This module is the command line of azure/submit.py (its parser takes the description and the
examples above from this text); the other modules of bert_tf.azure_ml hold the work.
"""

from __future__ import annotations

import argparse
import sys

from bert_tf.errors import UsageError
from bert_tf.azure_ml import PROG, glue
from bert_tf.azure_ml.commands import COMMANDS
from bert_tf.azure_ml.workspace import AzureFailure, Redactor, quiet_azure_logging
from bert_tf.cli import EXIT_USAGE
from bert_tf.flags import SCRIPTS
from bert_tf.sweeps.glue_table import STATISTICS, add_grid_arguments


DEFAULT_EXPERIMENT = "bert_tf"


EXIT_AZURE = 1


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (`submit.py: error: ...`, exit 2) like every other bad
    input, instead of the usage block plus a line."""

    def error(self, message):
        raise UsageError(message + f" (python azure/submit.py {self._sub()}--help)")

    def _sub(self):
        parts = self.prog.split()
        return parts[-1] + " " if len(parts) > 1 else ""


def build_parser() -> argparse.ArgumentParser:
    examples = __doc__.split("\n\n")[1]
    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="examples:\n" + examples + "\n\nMore: docs/azure.md.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def workspace_option(p):
        p.add_argument("--config", metavar="PATH", help="workspace config.json (default: "
                       "$AZURE_SUBSCRIPTION_ID/$AZURE_RESOURCE_GROUP/$AZUREML_WORKSPACE_NAME, else "
                       "./config.json or ./.azureml/config.json)")

    def dry_run_option(p, what):
        p.add_argument("--dry-run", "--dry_run", dest="dry_run", metavar="PATH",
                       help=f"write the {what} YAML to PATH and stop: nothing is contacted")

    def cluster_options(p):
        p.add_argument("--vm_size", help="the cluster's VM size: sets the MPI processes per node")
        p.add_argument("--gpus_per_node", type=int,
                       help="MPI processes per node, for a size the table does not know")
        p.add_argument("--experiment_name", default=DEFAULT_EXPERIMENT,
                       help=f"Azure ML experiment (default {DEFAULT_EXPERIMENT})")
        p.add_argument("--inputs", action="append", metavar="NAME=PATH",
                       help="a job input: a local path or azureml://datastores/.../paths/...; "
                            "NAME a flag of the script, or referred to as ${{inputs.NAME}}")

    c = sub.add_parser("compute", help="create or update a GPU cluster (AmlCompute)")
    c.add_argument("--name", required=True, help="cluster name")
    c.add_argument("--vm_size", required=True, help="e.g. Standard_ND96amsr_A100_v4")
    c.add_argument("--min_nodes", type=int, default=0, help="nodes kept running (default 0)")
    c.add_argument("--max_nodes", type=int, required=True, help="most nodes")
    c.add_argument("--low_priority", action="store_true", help="low-priority (spot) nodes")
    c.add_argument("--idle_seconds", type=int, default=600,
                   help="idle seconds before a node is released (default 600)")
    dry_run_option(c, "cluster")
    workspace_option(c)

    for command, what in (("train", "a Horovod command job"), ("sweep", "a sweep job")):
        p = sub.add_parser(command, help=f"submit {what} (script flags after --)")
        p.add_argument("--compute", required=True, help="cluster name")
        p.add_argument("--instance_count", type=int, required=True, help="nodes")
        if command == "train":
            p.add_argument("--script", required=True, help=" | ".join(SCRIPTS))
            p.add_argument("--output_path", metavar="URI",
                           help="a datastore folder (azureml://datastores/NAME/paths/PATH) for "
                                "the job's --output_dir, mounted read-write: checkpoints land "
                                "there as they are written, and the same command resubmitted "
                                "with the same path resumes a preempted run (default: a new "
                                "folder per job)")
        else:
            p.add_argument("--sweep", required=True, metavar="YAML",
                           help="search-space file (configs/sweeps/*.yaml)")
        cluster_options(p)
        p.add_argument("--display_name", help="job display name")
        dry_run_option(p, "job")
        workspace_option(p)

    for command, what in (("status", "a job's state"), ("stream", "follow a job's logs")):
        p = sub.add_parser(command, help=what)
        p.add_argument("job", metavar="JOB", help="job name")
        workspace_option(p)

    e = sub.add_parser("deploy", help="serve an export on a managed online endpoint")
    e.add_argument("--model", metavar="EXPORT",
                   help="the folder export_model.py (or a run's --export=saved_model) wrote")
    e.add_argument("--endpoint_name", required=True, help="the endpoint (created if new; 3-32 "
                   "letters, digits, hyphens; unique in the region)")
    e.add_argument("--deployment_name", default="blue", help="the deployment (default blue)")
    e.add_argument("--instance_type", default="Standard_DS3_v2",
                   help="VM size of each instance (default Standard_DS3_v2, 4 cores, 14 GiB)")
    e.add_argument("--instance_count", type=int, default=1, help="instances (default 1)")
    e.add_argument("--request_timeout_ms", type=int, default=5000,
                   help="per request (default 5000; Azure allows up to 180000)")
    e.add_argument("--traffic", type=int, default=100,
                   help="percent of the endpoint's traffic sent to this deployment (default 100)")
    e.add_argument("--dry-run", "--dry_run", dest="dry_run", metavar="FOLDER",
                   help="write endpoint.yml and deployment.yml to FOLDER and stop: nothing is "
                        "contacted")
    workspace_option(e)

    g = sub.add_parser("glue", help="the GLUE table's grid: one grid sweep job per task (script "
                       "flags after --)")
    add_grid_arguments(g)
    g.add_argument("--data_dir", help="a local folder holding one folder per GLUE task (each "
                   "uploaded), or azureml://datastores/NAME/paths/PATH; none: each trial "
                   "downloads its task")
    g.add_argument("--output_dir", required=True, help="local folder for the grids (specs/), "
                   "glue_jobs.json and, after download --glue, the table")
    g.add_argument("--compute", required=True, help="cluster name")
    g.add_argument("--instance_count", type=int, default=1, help="nodes per trial (default 1)")
    cluster_options(g)
    g.add_argument("--dry-run", "--dry_run", dest="dry_run", metavar="FOLDER",
                   help="write each task's sweep job YAML to FOLDER (their grids to "
                        "FOLDER/specs) and stop: nothing is contacted, --output_dir untouched")
    workspace_option(g)

    d = sub.add_parser("download", help="a finished sweep's trials -> trials.json and plots; "
                       "--glue: the GLUE table of `glue`'s sweeps")
    d.add_argument("job", metavar="SWEEP_JOB", nargs="?", help="sweep job name")
    d.add_argument("--output_dir", help="folder for trials.json and the plots")
    d.add_argument("--sweep", metavar="YAML", help="its search-space file (default: the one "
                   "the job was submitted with, from its tags)")
    d.add_argument("--glue", metavar="FOLDER", help="the --output_dir of `glue`: the table, "
                   "plot and submission zip of its sweeps are written there")
    d.add_argument("--statistic", choices=STATISTICS, default="median",
                   help="with --glue: what a cell is over seeds (default median)")
    workspace_option(d)
    return parser


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns the exit status (0, 1 for Azure's failures, 2 for bad
    input). Never raises for bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_azure_logging()
    redact = Redactor()
    try:
        extra: list[str] = []
        if "--" in argv:
            cut = argv.index("--")
            argv, extra = argv[:cut], argv[cut + 1:]
        args = build_parser().parse_args(argv)
        if extra and args.command not in ("train", "sweep", "glue"):
            raise UsageError(f"{args.command} takes no script flags after --")
        commands = {**COMMANDS, "glue": glue.cmd_glue, "download": glue.cmd_download}
        return commands[args.command](args, extra, redact)
    except UsageError as e:  # bert_tf.sweeps.SweepError too
        return _fail(redact(str(e)), EXIT_USAGE)
    except AzureFailure as e:
        return _fail(str(e), EXIT_AZURE)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
