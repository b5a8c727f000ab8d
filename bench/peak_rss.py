"""Run a command; print its wall time, CPU time and the peak memory of its whole process tree.

  python bench/peak_rss.py [--interval 0.05] -- COMMAND ARGS...

Memory: the RSS of the process and all its descendants, summed, sampled every --interval
seconds with psutil (pages shared between processes count once per process, so this is an
upper bound). CPU: user + system seconds of the command and every descendant it waited for.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import psutil


def tree_rss(root: psutil.Process) -> int:
    total = 0
    try:
        processes = [root] + root.children(recursive=True)
    except psutil.Error:
        return 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:  # exited between listing and reading
            pass
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    started = time.perf_counter()
    child = subprocess.Popen(command)
    root = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        peak = max(peak, tree_rss(root))
        time.sleep(args.interval)
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"exit {child.returncode}  wall {wall:.2f} s  cpu {usage.ru_utime + usage.ru_stime:.2f} s"
          f"  peak tree RSS {peak / 2**20:.0f} MiB", file=sys.stderr)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
