"""Stop cleanly when the scheduler says so: SIGTERM (and the first Ctrl-C) during training.

Low-priority / spot VMs, Kubernetes and Slurm send SIGTERM and kill the process a grace period
later (Kubernetes' terminationGracePeriodSeconds and Slurm's KillWait default to 30 s; Azure
spot VMs announce an eviction up to 30 s ahead). The training loop takes the signal as a
request: it finishes the step it is in, all workers agree on the step to stop at (the request
rides on the step's allreduce, so one rank receiving the signal stops every rank at the same
step), the chief saves a checkpoint of that step, and every rank raises `Preempted`; scripts
exit 143 (SIGTERM) or 130 (Ctrl-C). Running the same command again resumes bit-identically.

If no step boundary comes within the grace period (a step longer than the grace, or a peer
that is already gone and leaves the allreduce hanging), the process exits with the same code
without saving: the last periodic checkpoint is what a rerun resumes from. A second Ctrl-C
interrupts at once, as before.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

logger = logging.getLogger("bert_tf.training")

DEFAULT_GRACE_SECONDS = 25.0  # under the 30 s most schedulers give


class Preempted(Exception):
    """Training stopped on a signal after saving a checkpoint: .signum, .step, .checkpoint
    (the path saved, or None on a non-chief rank). Scripts exit 128 + signum."""

    def __init__(self, signum: int, step: int, checkpoint: str | None):
        self.signum, self.step, self.checkpoint = int(signum), int(step), checkpoint
        name = signal.Signals(self.signum).name
        where = f"; checkpoint {checkpoint}" if checkpoint else ""
        super().__init__(f"stopped by {name} at step {step}{where}: run the same command to "
                         "resume from it")


class StopRequest:
    """Context manager that turns SIGTERM and the first SIGINT into a request the loop polls
    (`requested`, `signum`). Installs handlers only in the main thread and only over the
    default ones (a caller's own handlers are left alone); restores them on exit.

    grace_seconds: after the first signal, exit the process (128 + signum) if the loop has not
    stopped within this many seconds; 0 or less: wait for ever."""

    def __init__(self, grace_seconds: float = DEFAULT_GRACE_SECONDS):
        self.grace_seconds = grace_seconds
        self.signum: int | None = None
        self._installed: dict = {}
        self._timer: threading.Timer | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum, default in ((signal.SIGTERM, signal.SIG_DFL),
                                (signal.SIGINT, signal.default_int_handler)):
            if signal.getsignal(signum) == default:
                self._installed[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        self.cancel_timer()
        for signum, previous in self._installed.items():
            signal.signal(signum, previous)
        self._installed.clear()

    def _handle(self, signum, frame):
        if self.signum is not None:
            if signum == signal.SIGINT:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            return  # a repeated SIGTERM: the stop is under way
        self.signum = signum
        name = signal.Signals(signum).name
        print(f"\n{name}: stopping at the end of this step and saving a checkpoint "
              f"(at most {self.grace_seconds:g} s; Ctrl-C again to stop now)", file=sys.stderr,
              flush=True)
        if self.grace_seconds and self.grace_seconds > 0:
            self._timer = threading.Timer(self.grace_seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _expire(self):
        print(f"\nno step boundary within {self.grace_seconds:g} s of "
              f"{signal.Signals(self.signum).name}: exiting without a new checkpoint (a rerun "
              "resumes from the last one saved)", file=sys.stderr, flush=True)
        os._exit(128 + self.signum)

    def cancel_timer(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Ask for a stop as a signal would (tests; other parts of the program)."""
        self._handle(signum, None)
