"""The subcommands of submit.py: train, sweep, glue, compute, status, stream, download, deploy."""

from __future__ import annotations

import os
import re
from pathlib import Path

from bert_tf.errors import UsageError
from bert_tf.azure_ml import PROG, REPO
from bert_tf.azure_ml.inputs import parse_named_inputs, plan_inputs
from bert_tf.azure_ml.jobs import (SWEEP_TAG, JobPlan, build_command_job, build_sweep_job,
                                   check_dry_run_path, check_output_path, job_yaml, loaded_back,
                                   write_file)
from bert_tf.azure_ml.script_flags import check_script, flag_words, parse_script_flags
from bert_tf.azure_ml.sizes import gpus_per_node, vm_size_info
from bert_tf.azure_ml.trials import read_trials, write_trials_report
from bert_tf.azure_ml.workspace import (Redactor, find_workspace, make_client,
                                        require_azureml_mlflow, talking_to_azure)


def _check_counts(args) -> None:
    if args.instance_count < 1:
        raise UsageError(f"--instance_count {args.instance_count}: give 1 or more nodes")
    if not re.fullmatch(r"[A-Za-z0-9][\w-]{0,254}", args.experiment_name):
        raise UsageError(f"--experiment_name {args.experiment_name!r}: letters, digits, '_' and "
                         "'-' only")
    if not args.compute.strip():
        raise UsageError("--compute: give the cluster's name")


def _describe_gpus(plan: JobPlan) -> str:
    size = ""
    if plan.vm_size:
        info = vm_size_info(plan.vm_size)
        size = f" ({info.describe()})" if info else f" ({plan.vm_size})"
    workers = plan.instance_count * plan.gpus
    return (f"{plan.instance_count} node(s) x {plan.gpus} GPU(s){size} = {workers} Horovod "
            f"worker(s) (--train_batch_size is per worker)")


def _finish_plan(plan: JobPlan, args, redact: Redactor, client) -> None:
    """Fill in the GPUs per node: from the flags, else (submitting) the cluster's VM size."""
    if plan.gpus is not None:
        return
    if args.dry_run:
        raise UsageError("give --vm_size (the cluster's VM size) or --gpus_per_node: a dry run "
                         "does not ask the workspace for the cluster's size")
    with talking_to_azure(redact, f"reading cluster {args.compute}"):
        size = getattr(client.compute.get(args.compute), "size", None)
    if not size:
        raise UsageError(f"cluster {args.compute} has no VM size (not an AmlCompute cluster?): "
                         "pass --gpus_per_node")
    plan.vm_size = size
    plan.gpus = gpus_per_node(size, args.gpus_per_node)


def _submit_or_write(entity, kind: str, plan: JobPlan, path: Path | None, redact, client,
                     summary: list[str]) -> int:
    """Write the job's YAML to `path` (--dry-run, checked by check_dry_run_path), else submit
    exactly that YAML read back (loaded_back)."""
    if path is not None:
        write_file(path, job_yaml(entity, path, kind, plan))
        print(f"{PROG}: wrote {path} ({kind} job; nothing submitted)")
        for line in summary:
            print("  " + line)
        print(f"  submit it: az ml job create --file {path}  (or rerun without --dry-run)")
        return 0
    with talking_to_azure(redact, f"submitting the {kind} job"), \
            loaded_back(entity, kind, plan) as job:
        created = client.jobs.create_or_update(job)
    print(redact(f"{PROG}: submitted {kind} job {created.name} ({created.status}), experiment "
                 f"{plan.experiment_name}"))
    for line in summary:
        print("  " + line)
    print(f"  follow it: python azure/submit.py stream {created.name}")
    print(f"  its state: python azure/submit.py status {created.name}")
    if kind == "sweep":
        print(f"  when it ends: python azure/submit.py download {created.name} "
              "--output_dir output/<name>")
    return 0


def _connect(args, redact: Redactor):
    """The MLClient of a command that talks to Azure, or None for a dry run (nothing is
    constructed then: no credential, no workspace needed)."""
    if getattr(args, "dry_run", None):
        return None
    workspace = find_workspace(args.config)
    redact.add(workspace.subscription_id)
    return make_client(workspace)


def cmd_train(args, extra: list[str], redact: Redactor) -> int:
    script = check_script(args.script)
    pairs = parse_script_flags(script, extra, complete=True)
    _check_counts(args)
    gpus = gpus_per_node(args.vm_size, args.gpus_per_node, f"a Horovod job of {script}")
    flags, inputs = plan_inputs(script, pairs, parse_named_inputs(args.inputs))
    dry_run = check_dry_run_path(args.dry_run)
    client = _connect(args, redact)
    plan = JobPlan(script=script, flags=flags, inputs=inputs, compute=args.compute,
                   instance_count=args.instance_count, gpus=gpus, vm_size=args.vm_size,
                   experiment_name=args.experiment_name,
                   display_name=args.display_name or Path(script).stem,
                   tags={"bert_tf.script": script},
                   output_path=check_output_path(args.output_path))
    _finish_plan(plan, args, redact, client)
    job = build_command_job(plan)
    summary = [f"compute {plan.compute}: {_describe_gpus(plan)}", f"command: {job.command}"]
    summary += [f"input {n}: {i.type} {'upload of ' if i.local else ''}{i.path}"
                for n, i in inputs.items()]
    return _submit_or_write(job, "command", plan, dry_run, redact, client, summary)


def check_sweep(spec, extra: list[str], args) -> tuple:
    """A search-space file's sweep checked before anything is contacted: the script's flags
    after --, the counts, the GPUs per node, the job inputs. Returns (flags, inputs, gpus)."""
    pairs = parse_script_flags(spec.script, extra)
    merged = spec.check_flags(flag_words(pairs))
    _check_counts(args)
    gpus = gpus_per_node(args.vm_size, args.gpus_per_node, f"a Horovod job of {spec.script}")
    fixed = [(name, value if eq else None) for name, eq, value in
             (word[2:].partition("=") for word in spec.flag_args(merged))]
    flags, inputs = plan_inputs(spec.script, fixed, parse_named_inputs(args.inputs))
    return flags, inputs, gpus


def sweep_job(spec, checked: tuple, args, redact: Redactor, client, display_name: str,
              tags: dict) -> tuple:
    """The SweepJob of a checked sweep (check_sweep) -> (plan, job, summary lines)."""
    flags, inputs, gpus = checked
    plan = JobPlan(script=spec.script, flags=flags, inputs=inputs, compute=args.compute,
                   instance_count=args.instance_count, gpus=gpus, vm_size=args.vm_size,
                   experiment_name=args.experiment_name, display_name=display_name,
                   tags={"bert_tf.script": spec.script, **tags})
    _finish_plan(plan, args, redact, client)
    job = build_sweep_job(plan, spec)
    space = []
    for name, param in spec.space.items():
        if param.type == "loguniform":
            low, high = param.log_bounds()
            space.append(f"{name} loguniform {param.low:g}..{param.high:g} "
                         f"(LogUniform({low:.4f}, {high:.4f}): natural logs)")
        elif param.type == "uniform":
            space.append(f"{name} uniform {param.low:g}..{param.high:g}")
        else:
            space.append(f"{name} choice {list(param.values)}")
    summary = [f"compute {plan.compute}, each trial: {_describe_gpus(plan)}",
               f"trial command: {job.trial.command}",
               "search space: " + "; ".join(space),
               f"objective: {spec.goal} {spec.primary_metric}; "
               + ("grid sampling; " if spec.sampling == "grid" else
                  f"random sampling, seed {spec.seed}; ")
               + f"{spec.max_total_trials} trials, {spec.max_concurrent_trials} at a time"]
    return plan, job, summary


def sweep_tag(sweep_path: Path) -> str:
    """How a job names its search-space file: relative to the repository when inside it."""
    try:
        return sweep_path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return str(sweep_path.resolve())


def cmd_sweep(args, extra: list[str], redact: Redactor) -> int:
    from bert_tf import sweeps

    spec = sweeps.load(args.sweep)
    checked = check_sweep(spec, extra, args)
    dry_run = check_dry_run_path(args.dry_run)
    client = _connect(args, redact)
    sweep_path = Path(args.sweep)
    plan, job, summary = sweep_job(spec, checked, args, redact, client,
                                   args.display_name or sweep_path.stem,
                                   {SWEEP_TAG: sweep_tag(sweep_path)})
    return _submit_or_write(job, "sweep", plan, dry_run, redact, client, summary)


def cmd_compute(args, extra, redact: Redactor) -> int:
    if not args.name.strip():
        raise UsageError("--name: give the cluster a name")
    if args.max_nodes < 1:
        raise UsageError(f"--max_nodes {args.max_nodes}: give 1 or more")
    if not 0 <= args.min_nodes <= args.max_nodes:
        raise UsageError(f"--min_nodes {args.min_nodes}: between 0 and --max_nodes "
                         f"{args.max_nodes} (0 lets the cluster scale to zero, free when idle)")
    if args.idle_seconds < 0:
        raise UsageError(f"--idle_seconds {args.idle_seconds}: give 0 or more seconds")
    info = vm_size_info(args.vm_size)
    if info is None:
        note = "a GPU size this tool does not know: train/sweep will need --gpus_per_node"
    elif info.gpus == 0:
        note = "no GPUs: train and sweep refuse it (they run one Horovod worker per GPU)"
    else:
        note = (f"{info.describe()}: train/sweep run {info.gpus} MPI worker(s) per node "
                "(process_count_per_instance)")
    path = check_dry_run_path(args.dry_run)
    client = _connect(args, redact)
    from azure.ai.ml.entities import AmlCompute

    compute = AmlCompute(name=args.name, size=info.name if info else args.vm_size,
                         min_instances=args.min_nodes, max_instances=args.max_nodes,
                         idle_time_before_scale_down=args.idle_seconds,
                         tier="low_priority" if args.low_priority else "dedicated")
    tier = "low-priority" if args.low_priority else "dedicated"
    summary = (f"cluster {args.name}: {args.min_nodes}..{args.max_nodes} {tier} node(s), scale "
               f"down after {args.idle_seconds} s idle; {note}")
    if path is not None:
        write_file(path, job_yaml(compute, path, "amlcompute"))
        print(f"{PROG}: wrote {path} (nothing created)\n  {summary}\n"
              f"  create it: az ml compute create --file {path}  (or rerun without --dry-run)")
        return 0
    with talking_to_azure(redact, f"creating cluster {args.name}"):
        result = client.compute.begin_create_or_update(compute).result()
    print(redact(f"{PROG}: cluster {result.name} ready ({result.size})\n  {summary}"))
    return 0


def _check_job_name(name: str) -> str:
    if not re.fullmatch(r"[\w.-]+", name):
        raise UsageError(f"job {name!r}: a job name is letters, digits, '_', '-' and '.'")
    return name


def cmd_status(args, extra, redact: Redactor) -> int:
    name = _check_job_name(args.job)
    client = _connect(args, redact)
    with talking_to_azure(redact, f"reading job {name}"):
        job = client.jobs.get(name)
        lines = [f"{job.name}: {job.status} ({job.type} job, experiment {job.experiment_name}, "
                 f"compute {str(job.compute or '-').rsplit('/', 1)[-1]})"]
        if job.type == "sweep":
            counts: dict[str, int] = {}
            for child in client.jobs.list(parent_job_name=name):
                counts[child.status] = counts.get(child.status, 0) + 1
            lines.append("trials: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                                       or "none yet"))
    for line in lines:
        print(redact(line))
    print(f"  logs: python azure/submit.py stream {name}")
    return 0


def cmd_stream(args, extra, redact: Redactor) -> int:
    name = _check_job_name(args.job)
    client = _connect(args, redact)
    with talking_to_azure(redact, f"streaming job {name}"):
        client.jobs.stream(name)
    return 0


def cmd_download(args, extra, redact: Redactor) -> int:
    from bert_tf import sweeps

    if not args.job or not args.output_dir:
        raise UsageError("download: give SWEEP_JOB and --output_dir (or --glue FOLDER)")
    name = _check_job_name(args.job)
    spec = sweeps.load(args.sweep) if args.sweep else None
    if os.path.isfile(args.output_dir):
        raise UsageError(f"--output_dir {args.output_dir} is a file: give a folder")
    require_azureml_mlflow()
    client = _connect(args, redact)
    with talking_to_azure(redact, f"reading sweep {name}"):
        job = client.jobs.get(name)
        if job.type != "sweep":
            raise UsageError(f"job {name} is a {job.type} job, not a sweep")
        if spec is None:
            tag = (job.tags or {}).get(SWEEP_TAG)
            path = Path(tag) if tag and Path(tag).is_absolute() else REPO / str(tag)
            if not tag or not path.is_file():
                raise UsageError(f"job {name} does not say which search-space file it ran "
                                 f"({tag or 'no ' + SWEEP_TAG + ' tag'}): pass --sweep PATH")
            spec = sweeps.load(str(path))
        metric = getattr(job.objective, "primary_metric", None)
        if metric and metric != spec.primary_metric:
            raise UsageError(f"sweep {name} optimised {metric}, {spec.path} says "
                             f"{spec.primary_metric}: pass the --sweep file it was submitted with")
        tracking_uri = client.workspaces.get(client.workspace_name).mlflow_tracking_uri
        trials = read_trials(tracking_uri, name, spec, job.experiment_name)
    if not trials:
        raise UsageError(f"sweep {name} has no trials yet (python azure/submit.py status {name})")
    written = write_trials_report(spec, trials, args.output_dir)
    states: dict[str, int] = {}
    for trial in trials:
        states[trial["state"]] = states.get(trial["state"], 0) + 1
    print(f"{PROG}: {len(trials)} trial(s) of sweep {name} "
          f"({', '.join(f'{n} {s}' for s, n in sorted(states.items()))}) -> {args.output_dir}")
    print(f"  {Path(args.output_dir) / 'trials.json'}")
    for path in (written or {}).values():
        print(f"  {path}")
    return 0


def cmd_deploy(args, extra, redact: Redactor) -> int:
    """A managed online endpoint and deployment serving a bert_tf export (endpoints.py)."""
    from bert_tf.azure_ml import endpoints

    plan = endpoints.plan_deployment(args)
    if not 0 <= args.traffic <= 100:
        raise UsageError(f"--traffic {args.traffic}: a percentage, 0 to 100")
    summary = plan.describe()
    if args.dry_run:
        folder = Path(args.dry_run).expanduser()
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--dry-run {args.dry_run} is a file: give a folder for "
                             "endpoint.yml and deployment.yml")
        folder.mkdir(parents=True, exist_ok=True)
        code = os.path.relpath(endpoints.SCORING_DIR, folder.resolve())
        endpoint, deployment = endpoints.entities(plan, code_path=code)
        write_file(folder / "endpoint.yml", endpoints.endpoint_yaml(endpoint))
        write_file(folder / "deployment.yml", endpoints.deployment_yaml(deployment))
        print(f"{PROG}: wrote {folder / 'endpoint.yml'} and {folder / 'deployment.yml'} "
              "(nothing created)")
        for line in summary:
            print("  " + line)
        route = "--all-traffic" if args.traffic == 100 else \
            f"(then route {args.traffic}% with az ml online-endpoint update --traffic)"
        print(f"  create them: az ml online-endpoint create --file {folder / 'endpoint.yml'} && "
              f"az ml online-deployment create --file {folder / 'deployment.yml'} {route}  "
              "(or rerun without --dry-run)")
        return 0
    client = _connect(args, redact)
    endpoint, deployment = endpoints.entities(plan)
    with talking_to_azure(redact, f"creating or updating endpoint {plan.endpoint_name}"):
        client.online_endpoints.begin_create_or_update(endpoint).result()
    with talking_to_azure(redact, f"creating or updating deployment {plan.deployment_name} "
                                  "(building the image and starting the instances takes "
                                  "minutes)"):
        client.online_deployments.begin_create_or_update(deployment).result()
    with talking_to_azure(redact, "routing traffic"):
        current = client.online_endpoints.get(plan.endpoint_name)
        current.traffic = endpoints.route_traffic(dict(current.traffic or {}),
                                                  plan.deployment_name, args.traffic)
        current = client.online_endpoints.begin_create_or_update(current).result()
    print(redact(f"{PROG}: endpoint {plan.endpoint_name} serves deployment "
                 f"{plan.deployment_name} ({args.traffic}% of traffic)"))
    for line in summary:
        print("  " + line)
    print(redact(f"  scoring URI: {getattr(current, 'scoring_uri', None)}"))
    print(f"  its keys: az ml online-endpoint get-credentials --name {plan.endpoint_name}")
    print(f"  logs: az ml online-deployment get-logs --name {plan.deployment_name} "
          f"--endpoint-name {plan.endpoint_name}")
    return 0


# glue and download --glue: bert_tf/azure_ml/glue.py, which builds on these (cli.py joins them).
COMMANDS = {"compute": cmd_compute, "train": cmd_train, "sweep": cmd_sweep,
            "status": cmd_status, "stream": cmd_stream, "download": cmd_download,
            "deploy": cmd_deploy}
