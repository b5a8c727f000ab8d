"""What the three bench workers share: the command line, the stdin/stdout protocol with
bench_finetune.py, and the timing of a round. Imports only the standard library, so it loads in
both the project venv and the Model Garden venv (each worker script's folder is on sys.path).

Protocol: after setup a worker prints `READY`; each `round` line on stdin runs one round and
prints `RESULT {json}`; `quit` or end of input exits.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def arg_parser(description: str, paddings=("fixed", "dynamic")) -> argparse.ArgumentParser:
    """The flags every worker takes; a worker adds its own."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--features", required=True, help="npz written by bench_finetune.py")
    p.add_argument("--model_dir", required=True, help="Hugging Face directory (MiniLM)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--padding", choices=paddings, default="fixed")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per round")
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="for the length of the LR schedule")
    p.add_argument("--seed", type=int, default=42)
    return p


def timed_round(step, batches, warmup: int, steps: int, width_of) -> dict:
    """Run warmup + steps calls of step(batch) -> float loss (the float ends the step: the
    frameworks run asynchronously otherwise), each timed on its own with the batch fetch
    included; the warm-up steps are reported apart. `width_of(batch)` -> padded width."""
    times, widths, first, loss = [], [], [], float("nan")
    t_round = time.perf_counter()
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(batches)
        loss = step(batch)
        dt = time.perf_counter() - t0
        if i < warmup:
            first.append(dt)
        else:
            times.append(dt)
            widths.append(int(width_of(batch)))
    return {"step_seconds": times, "timed_widths": widths, "first_steps_seconds": first,
            "round_seconds": time.perf_counter() - t_round, "final_loss": loss}


def result(a, framework: str, xla: str, xla_flags: str, setup_seconds: float,
           round_info: dict, **extra) -> dict:
    """One RESULT record: the setting, examples/s over the timed steps, the raw timings."""
    times = round_info["step_seconds"]
    return {"framework": framework, "dtype": a.dtype, "xla": xla, "padding": a.padding,
            "xla_flags": xla_flags,
            "examples_per_second": a.batch_size * len(times) / sum(times),
            "setup_seconds": setup_seconds, **round_info, **extra}


def serve(run_round) -> None:
    print("READY", flush=True)
    for line in sys.stdin:
        if line.strip() == "round":
            record = run_round()
            record["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print("RESULT " + json.dumps(record), flush=True)
        elif line.strip() == "quit":
            break
