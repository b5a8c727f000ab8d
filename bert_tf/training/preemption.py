"""Stop cleanly when the scheduler says so: SIGTERM (and the first Ctrl-C) during training.

Low-priority / spot VMs, Kubernetes and Slurm send SIGTERM and kill the process a grace period
later (Kubernetes' terminationGracePeriodSeconds and Slurm's KillWait default to 30 s; Azure
spot VMs announce an eviction up to 30 s ahead). The training loop takes the signal as a
request: it finishes the step it is in (an evaluation under way is cut short), all workers
agree on the step to stop at (the request rides on the step's allreduce, so one rank receiving
the signal stops every rank at the same step), the chief saves a checkpoint of that step, and
every rank raises `Preempted`; scripts exit 143 (SIGTERM) or 130 (Ctrl-C). Running the same
command again resumes bit-identically.

The grace period counts from the signal's arrival, even while the main thread is inside a
TensorFlow call (where Python cannot run a signal handler): the signal's number is written to
a wakeup file descriptor (`signal.set_wakeup_fd`) that a watchdog thread reads. If no step
boundary comes within the grace period (a step longer than it, or a peer that is already gone
and leaves the allreduce hanging), the process exits with the same code without saving: the
last periodic checkpoint is what a rerun resumes from. A second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading

logger = logging.getLogger("bert_tf.training")

DEFAULT_GRACE_SECONDS = 25.0  # under the 30 s most schedulers give
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """Training stopped on a signal after saving a checkpoint: .signum, .step, .checkpoint
    (the path saved, or None on a non-chief rank). Scripts exit 128 + signum."""

    def __init__(self, signum: int, step: int, checkpoint: str | None):
        self.signum, self.step, self.checkpoint = int(signum), int(step), checkpoint
        name = signal.Signals(self.signum).name
        where = f"; checkpoint {checkpoint}" if checkpoint else ""
        super().__init__(f"stopped by {name} at step {step}{where}: run the same command to "
                         "resume from it")


class EvaluationInterrupted(Exception):
    """An evaluation cut short because a stop was requested (the loop goes on to the step
    boundary where every rank stops)."""


class StopRequest:
    """Context manager that turns SIGTERM and the first SIGINT into a request the loop polls
    (`requested`, `signum`). Installs handlers only in the main thread and only over the
    default ones (a caller's own handlers are left alone); restores them on exit.

    grace_seconds: after the first signal, exit the process (128 + signum) if the loop has not
    reached a step boundary (`cancel_timer`) within this many seconds; 0 or less: wait for
    ever."""

    def __init__(self, grace_seconds: float = DEFAULT_GRACE_SECONDS):
        self.grace_seconds = grace_seconds
        self.signum: int | None = None
        self._installed: dict = {}
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._sigints = 0
        self._wakeup = None  # (read socket, write socket, previous wakeup fd)
        self._watchdog: threading.Thread | None = None

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
        if self._installed:
            self._start_watchdog()
        return self

    def __exit__(self, *exc):
        self.cancel_timer()
        self._stop_watchdog()
        for signum, previous in self._installed.items():
            signal.signal(signum, previous)
        self._installed.clear()

    # -- the watchdog: sees the signal at once, wherever the main thread is ----------------------

    def _start_watchdog(self):
        reader, writer = socket.socketpair()
        reader.setblocking(True)
        writer.setblocking(False)
        try:
            previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        except (ValueError, OSError):  # not the main thread of the main interpreter
            reader.close()
            writer.close()
            return
        self._wakeup = (reader, writer, previous)
        self._watchdog = threading.Thread(target=self._watch, args=(reader,), daemon=True,
                                          name="stop-request-watchdog")
        self._watchdog.start()

    def _watch(self, reader):
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in _STOP_SIGNALS:
                    self._note(signum)

    def _stop_watchdog(self):
        if self._wakeup is None:
            return
        reader, writer, previous = self._wakeup
        self._wakeup = None
        try:
            signal.set_wakeup_fd(previous)
        except (ValueError, OSError):
            pass
        writer.close()  # the watchdog's recv returns b"": it ends
        if self._watchdog is not None:
            self._watchdog.join(timeout=1.0)
        reader.close()

    # -- the request -----------------------------------------------------------------------------

    def _handle(self, signum, frame):
        """The Python-level handler (runs when the main thread is back in Python)."""
        if signum == signal.SIGINT:
            self._sigints += 1
            if self._sigints > 1:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
        self._note(signum)

    def _note(self, signum: int) -> None:
        """The first stop signal, from the watchdog or the handler: the request, a message and
        the grace timer. Later ones change nothing."""
        with self._lock:
            if self.signum is not None:
                return
            self.signum = signum
            name = signal.Signals(signum).name
            print(f"\n{name}: stopping at the end of this step and saving a checkpoint "
                  f"(at most {self.grace_seconds:g} s; Ctrl-C again to stop now)",
                  file=sys.stderr, flush=True)
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
        """The step boundary came: the save may take what it takes."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Ask for a stop as a signal would (tests; other parts of the program)."""
        self._note(signum)

    def check(self) -> None:
        """Raises EvaluationInterrupted when a stop was requested (evaluation polls this)."""
        if self.requested:
            raise EvaluationInterrupted


# The request of the training loop now running, for evaluations run inside it (they stop early
# when it is set). None outside training.
active: StopRequest | None = None
