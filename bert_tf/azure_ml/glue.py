"""`azure/submit.py glue` and `download --glue`: the GLUE table of `python -m bert_tf.glue` with
its runs on Azure ML.

    python azure/submit.py glue --compute gpu-a100 --vm_size Standard_NC24ads_A100_v4 \\
        --instance_count 1 --init_checkpoint=bert-base-uncased \\
        --data_dir=azureml://datastores/workspaceblobstore/paths/glue --trials_at_once=4 \\
        --output_dir=output/glue_azure
    python azure/submit.py download --glue output/glue_azure

`glue` writes each task's grid (learning rates x seeds, bert_tf.sweeps.glue_table.spec_text:
the same file the local command runs) to OUTPUT/specs/glue_TASK.yaml and submits it as one Azure
ML sweep job with grid sampling; the job names go to OUTPUT/glue_jobs.json as each is accepted,
so a rerun after a failure submits only the tasks not yet there. `download --glue OUTPUT` reads
every task's trials from the workspace's MLflow store (bert_tf.azure_ml.trials): their last dev
metrics, and GLUE's prediction files, which run_classifier.py logs as MLflow artifacts, into
OUTPUT/TASK/trials/RUN/ (no checkpoint is fetched). The cells, the table, the plot and the
submission zip are then made by the code that makes the local table (glue_table.cell_of_runs,
write_outputs).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from bert_tf.errors import UsageError
from bert_tf.azure_ml import PROG
from bert_tf.azure_ml.inputs import is_remote
from bert_tf.azure_ml.jobs import SWEEP_TAG, job_yaml, loaded_back, write_file
from bert_tf.azure_ml.workspace import Redactor, talking_to_azure

JOBS_FILE = "glue_jobs.json"
GLUE_TAG = "bert_tf.glue_task"


def _read_jobs(folder: Path) -> dict:
    """OUTPUT/glue_jobs.json: {"init_checkpoint": ..., "tasks": {TASK: job name}}; an empty
    record when the file is absent. UsageError when it is not such a file."""
    path = folder / JOBS_FILE
    if not path.exists():
        return {"init_checkpoint": None, "tasks": {}}
    try:
        jobs = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(jobs.get("tasks"), dict):
            raise ValueError("no 'tasks' object")
    except (ValueError, AttributeError) as e:
        raise UsageError(f"{path}: not a {JOBS_FILE} written by {PROG} glue ({e}); move it "
                         "away to submit again") from None
    return jobs


def cmd_glue(args, extra: list[str], redact: Redactor) -> int:
    """Submit (or, with --dry-run FOLDER, write) one grid sweep job per GLUE task."""
    from bert_tf import sweeps
    from bert_tf.azure_ml.commands import _connect, check_sweep, sweep_job, sweep_tag
    from bert_tf.sweeps import glue_table

    glue_table.check_grid_arguments(args, extra, f"{PROG} glue")
    data_dir = args.data_dir
    remote = bool(data_dir) and is_remote(data_dir)
    if remote and "://" not in data_dir:
        raise UsageError(f"--data_dir={data_dir}: give a folder URI holding one folder per task "
                         "(azureml://datastores/NAME/paths/PATH), not a data asset")
    if not remote and data_dir and not os.path.isdir(data_dir):
        raise UsageError(f"--data_dir={data_dir}: no such folder (a local GLUE folder, uploaded, "
                         "or azureml://datastores/NAME/paths/PATH)")
    # A datastore cannot be listed offline: without --tasks every task is submitted.
    tasks = glue_table.find_tasks(None if remote else data_dir, args.tasks)
    output_dir = Path(args.output_dir).expanduser().resolve()
    if output_dir.is_file():
        raise UsageError(f"--output_dir {args.output_dir} is a file: give a folder")
    dry = Path(args.dry_run).expanduser() if args.dry_run else None
    if dry is not None and dry.is_file():
        raise UsageError(f"--dry-run {args.dry_run} is a file: give a folder for the sweep jobs' "
                         "YAML (one per task)")
    jobs = _read_jobs(output_dir)
    if jobs["tasks"] and jobs.get("init_checkpoint") != args.init_checkpoint:
        raise UsageError(f"{output_dir / JOBS_FILE} holds the jobs of --init_checkpoint="
                         f"{jobs.get('init_checkpoint')}: give another --output_dir")
    checked = []  # every task's grid checked before anything is written or contacted
    with tempfile.TemporaryDirectory(prefix="bert_tf_glue_") as scratch:
        for task in tasks:
            path = glue_table.write_spec(scratch, task, args, data_dir)
            parts = check_sweep(sweeps.load(path), extra, args)
            if dry is not None and parts[2] is None:
                raise UsageError("give --vm_size (the cluster's VM size) or --gpus_per_node: a "
                                 "dry run does not ask the workspace for the cluster's size")
            submitted = output_dir / "specs" / f"glue_{task}.yaml"
            if task in jobs["tasks"] and submitted.is_file() and \
                    submitted.read_text(encoding="utf-8") != Path(path).read_text(encoding="utf-8"):
                raise UsageError(f"{task} was submitted as {jobs['tasks'][task]} with the grid in "
                                 f"{submitted}, and these flags make another: give another "
                                 "--output_dir for a new table")
            checked.append((task, parts))
    # The grids go beside the job names (a dry run: beside its YAML, OUTPUT stays untouched);
    # a submitted task's file is the record of what its sweep ran and is never rewritten.
    spec_root = str(dry.resolve()) if dry is not None else str(output_dir)
    checked = [(task, sweeps.load(path), Path(path), parts) for task, parts in checked
               for path in [glue_table.write_spec(spec_root, task, args, data_dir)]]
    client = _connect(args, redact)
    total = sum(spec.max_total_trials for _, spec, _, _ in checked)
    summary = []
    print(f"{PROG}: GLUE table of {args.init_checkpoint}: {', '.join(tasks)}; {total} runs in "
          f"{len(tasks)} grid sweep(s), each {args.trials_at_once} trial(s) at a time")
    for task, spec, path, parts in checked:
        if dry is None and task in jobs["tasks"]:
            print(f"  {task}: already submitted as {jobs['tasks'][task]} ({JOBS_FILE}); "
                  "skipped")
            continue
        plan, job, summary = sweep_job(spec, parts, args, redact, client, f"glue-{task}",
                                       {SWEEP_TAG: sweep_tag(path), GLUE_TAG: task})
        if dry is not None:
            target = dry / f"glue_{task}.sweep.yaml"
            write_file(target, job_yaml(job, target, "sweep", plan))
            print(f"  {task}: wrote {target} ({spec.max_total_trials} trials; nothing submitted)")
            continue
        with talking_to_azure(redact, f"submitting the {task} sweep"), \
                loaded_back(job, "sweep", plan) as loaded:
            created = client.jobs.create_or_update(loaded)
        jobs["init_checkpoint"] = args.init_checkpoint
        jobs["tasks"][task] = created.name
        write_file(output_dir / JOBS_FILE, json.dumps(jobs, indent=1) + "\n")
        print(redact(f"  {task}: submitted sweep {created.name} ({spec.max_total_trials} "
                     f"trials)"))
    if summary:
        print(f"  {summary[0]}")
    if "MNLI" in tasks:
        print("  MNLI's trials predict AX (GLUE's diagnostic set) only when MNLI's folder holds "
              "AX.tsv or diagnostic.tsv: each task's folder is its own job input")
    if dry is not None:
        print(f"  submit them: az ml job create --file {dry}/glue_TASK.sweep.yaml, or rerun "
              "without --dry-run")
    else:
        print(f"  job names: {output_dir / JOBS_FILE}")
        print(f"  the table, when the sweeps end: python azure/submit.py download --glue "
              f"{args.output_dir}")
    return 0


def _download_glue_files(mlflow_client, run_id: str, folder: Path) -> list[str]:
    """GLUE's prediction files among a run's MLflow artifacts, into folder (each whole or not
    at all; files already there are kept). Returns the names present afterwards."""
    from bert_tf.sweeps.glue_table import GLUE_FILES

    names = [a.path for a in mlflow_client.list_artifacts(run_id) if a.path in GLUE_FILES]
    for name in names:
        if (folder / name).is_file():
            continue
        with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
            local = mlflow_client.download_artifacts(run_id, name, tmp)
            os.replace(local, folder / name)
    return names


def _trial_runs(task: str, trials: list[dict], task_dir: Path, mlflow_client) -> list:
    """The finished trials of a task's sweep as local folders (eval_results.json from the
    run's last eval/ metrics, GLUE's files from its artifacts) -> [(lr, folder, results)]."""
    runs = []
    for trial in trials:
        results = {k.split("/", 1)[1]: v for k, v in trial["metrics"].items()
                   if k.startswith("eval/")}
        if trial["state"] != "COMPLETE" or "learning_rate" not in trial["params"] or not results:
            continue
        # By run id: unique, where display names need not be.
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in trial["run_id"])
        folder = task_dir / "trials" / name
        folder.mkdir(parents=True, exist_ok=True)
        write_file(folder / "eval_results.json", json.dumps(results, indent=2, sort_keys=True))
        _download_glue_files(mlflow_client, trial["run_id"], folder)
        runs.append((float(trial["params"]["learning_rate"]), str(folder), results))
    return runs


def download_glue(args, redact: Redactor) -> int:
    """`download --glue OUTPUT`: every task's trials -> the table, plot and zip in OUTPUT."""
    from mlflow.tracking import MlflowClient

    from bert_tf import sweeps
    from bert_tf.azure_ml.commands import _connect, require_azureml_mlflow
    from bert_tf.azure_ml.trials import read_trials
    from bert_tf.sweeps.glue_table import cell_of_runs, write_outputs

    folder = Path(args.glue).expanduser().resolve()
    if not (folder / JOBS_FILE).is_file():
        raise UsageError(f"--glue {args.glue}: no {JOBS_FILE} there (give the --output_dir of "
                         f"{PROG} glue)")
    jobs = _read_jobs(folder)
    if not jobs["tasks"]:
        raise UsageError(f"{folder / JOBS_FILE} names no job: submit with {PROG} glue first")
    specs = {}
    for task in jobs["tasks"]:
        path = folder / "specs" / f"glue_{task}.yaml"
        if not path.is_file():
            raise UsageError(f"{path} is missing: it is the grid {task}'s sweep ran")
        specs[task] = sweeps.load(str(path))
    require_azureml_mlflow()
    client = _connect(args, redact)
    cells = {}
    with talking_to_azure(redact, "reading the workspace's MLflow store"):
        tracking_uri = client.workspaces.get(client.workspace_name).mlflow_tracking_uri
        mlflow_client = MlflowClient(tracking_uri=tracking_uri)
    for task, name in jobs["tasks"].items():
        with talking_to_azure(redact, f"reading {task}'s sweep {name}"):
            job = client.jobs.get(name)
            trials = read_trials(tracking_uri, name, specs[task], job.experiment_name)
            runs = _trial_runs(task, trials, folder / task, mlflow_client)
        cells[task] = cell_of_runs(task, runs, args.statistic)
        states: dict = {}
        for trial in trials:
            states[trial["state"]] = states.get(trial["state"], 0) + 1
        print(redact(f"{PROG}: {task}: sweep {name} ({job.status}), "
                     + (", ".join(f"{n} {s}" for s, n in sorted(states.items()))
                        or "no trials yet")))
    out = write_outputs(cells, args.statistic, str(folder))
    print("\n" + out["markdown"])
    print("wrote " + ", ".join(out["paths"].values()))
    for line in out["notes"]:
        print(line)
    for task, cell in cells.items():
        if cell is None:
            print(f"{task}: no finished trial yet (python azure/submit.py status "
                  f"{jobs['tasks'][task]})")
    return 0


def cmd_download(args, extra, redact: Redactor) -> int:
    """`download`: with --glue the GLUE table (download_glue), else a sweep's trials
    (commands.cmd_download)."""
    from bert_tf.azure_ml import commands

    if not args.glue:
        return commands.cmd_download(args, extra, redact)
    if args.job or args.sweep or args.output_dir:
        raise UsageError("download --glue FOLDER takes no SWEEP_JOB, --sweep or --output_dir "
                         "(the table is written in FOLDER)")
    return download_glue(args, redact)
