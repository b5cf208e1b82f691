"""Stop training cleanly when the scheduler asks, so the job can be requeued and resume.

SIGUSR1 (sent ahead of the time limit: `#SBATCH --signal=B:USR1@<seconds>`, forwarded to the
trainer by launch/slurm/train.sbatch) and SIGTERM (preemption, `scancel`, the time limit itself)
only set a flag. At the next optimizer-step boundary every rank learns whether any rank got a
signal (one all-reduce, so all ranks stop at the same step), rank 0 writes a resume checkpoint,
and every process exits with STOPPED_EXIT_CODE. Run again with the same run_dir
(`train.resume=auto`, the default) to continue from that step; the result is bit-identical to
an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

import torch
from accelerate import Accelerator

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
# EX_TEMPFAIL: stopped on request after writing a checkpoint; run again to continue.
STOPPED_EXIT_CODE = 75

_received: list[int] = []  # signal numbers seen since stop_on_signals() was entered


def _on_signal(signum: int, _frame) -> None:
    """Signal handler: only remember the signal (the train loop acts at a step boundary)."""
    _received.append(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While inside, SIGUSR1 and SIGTERM request a stop instead of killing the process; the
    previous handlers come back on exit. Outside the main thread nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = {sig: signal.signal(sig, _on_signal) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _received.clear()


def stop_requested(accelerator: Accelerator) -> bool:
    """True on every rank when any rank received a stop signal. A collective when there are
    several processes: call it at the same point on every rank."""
    requested = torch.tensor(float(bool(_received)), device=accelerator.device)
    if accelerator.num_processes > 1:
        requested = accelerator.reduce(requested, reduction="sum")
    return bool(requested.item() > 0)


def received_signals() -> list[str]:
    """Names of the stop signals this process received (each once, in order)."""
    return [signal.Signals(s).name for s in dict.fromkeys(_received)]


def exit_stopped(step: int) -> None:
    """Exit with STOPPED_EXIT_CODE after the checkpoint of `step` was written."""
    names = ", ".join(received_signals()) or "another rank"
    log.warning(
        "stop requested (%s): checkpoint of step %d written; exiting with %d, run again with the "
        "same run_dir (train.resume=auto) to continue",
        names,
        step,
        STOPPED_EXIT_CODE,
    )
    raise SystemExit(STOPPED_EXIT_CODE)
