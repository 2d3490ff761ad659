"""Preemption: SIGTERM / SIGINT ask a training loop to save at its next step boundary and stop.

A spot or preemptible TPU VM gets SIGTERM and about 30 seconds before it goes; a user stops a
run with Ctrl-C (SIGINT). Either one only sets a flag here. The loop keeps running its
current step, then asks :meth:`PreemptionGuard.should_stop`; where the answer is yes, it saves
a checkpoint of the step just finished, waits for it to commit and raises :class:`Preempted`.
The ``rlhf-jax`` command turns that into the message "preempted at step N; rerun the same
command to resume" and exit status :data:`EXIT_PREEMPTED`. A second signal while the first is
pending stops the process at once, as it would without the guard; a killed run resumes from
its last checkpoint anyway.

In a multi-process run (one process per host) every process must stop at the same step, or
the ones still running would wait forever in the next collective. So with several processes
:meth:`~PreemptionGuard.should_stop` is a collective itself: the flags of all processes are
gathered, and all stop when any one was signalled.
"""

from __future__ import annotations

import logging
import signal
import threading

import jax
import numpy as np

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 75
"""Exit status of a run that saved and stopped on a signal (``EX_TEMPFAIL``: "try again").
``launch/tpu_vm.sh`` reruns the command while it exits with this status."""

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """A stage saved its checkpoint at ``step`` and stopped on a signal; rerun to resume."""

    def __init__(self, stage: str, step: int, signal_name: str):
        self.stage, self.step, self.signal_name = stage, step, signal_name
        super().__init__(f"{stage}: {signal_name} received; preempted at step {step} (checkpoint "
                         "saved); rerun the same command to resume")


class PreemptionGuard:
    """``with PreemptionGuard() as guard:`` … ``if guard.should_stop(): save and raise``.

    Installs the handlers of :data:`SIGNALS` while the block runs (main thread only: elsewhere
    signals cannot be caught, and the guard never asks to stop) and puts the previous ones back
    on exit.
    """

    def __init__(self):
        self.received = None  # the name of the first signal caught
        self._previous = {}

    def __enter__(self) -> "PreemptionGuard":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:  # the second signal: stop now, as without the guard
            log.warning("%s received again: stopping now, without a checkpoint of this step",
                        name)
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
            return
        self.received = name
        log.warning("%s received: saving a checkpoint at the end of this step, then stopping "
                    "(send it again to stop at once)", name)

    def should_stop(self) -> bool:
        """Whether this process, or any other (a collective with several processes), was
        signalled. Every process must call it at the same step boundaries."""
        mine = self.received is not None
        if jax.process_count() == 1:
            return mine
        from jax.experimental import multihost_utils
        flags = multihost_utils.process_allgather(np.asarray([mine], np.int32))
        if flags.any() and not mine:
            self.received = "a signal on another process"
        return bool(flags.any())
