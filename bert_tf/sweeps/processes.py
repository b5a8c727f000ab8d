"""Trial processes: where a trial's script is, stopping a process (SIGTERM, then SIGKILL),
tying a trial to the sweep's life (PR_SET_PDEATHSIG) and stopping one left over by a killed sweep,
and the tail of a trial's log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


GRACE_SECONDS = 15.0      # SIGTERM -> SIGKILL


LOG_TAIL_LINES = 12       # of a failed trial's log.txt, in the summary


def script_path(script: str) -> str:
    return script if os.path.isfile(script) else os.path.join(REPO, script)


def die_with_parent_fn():
    """A preexec_fn that asks Linux to SIGTERM the trial when the thread that started it dies
    (the sweep killed, even by SIGKILL); None elsewhere. The C function is looked up here, in
    the parent, so the child only makes the system call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def fn():
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))

    return fn


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after GRACE_SECONDS."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kill_leftover(pid: int | None, trial_dir: str | None) -> None:
    """A trial process of a killed sweep that is still alive (a platform without
    PR_SET_PDEATHSIG): stopped when its command line names the trial's folder."""
    if not pid or not trial_dir:
        return
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().decode("utf-8", "replace")
    except OSError:
        return
    if f"--output_dir={trial_dir}" not in cmdline.split("\0"):
        return
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(int(GRACE_SECONDS * 10)):
            time.sleep(0.1)
            os.kill(pid, 0)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def display_path(path: str) -> str:
    """A path as the user gave it: relative to the working directory when under it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def log_tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return ""
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])
