"""Two CPU processes (torchrun + gloo) agree on a stop request that only one of them received:
preemption.stop_requested() is True on every rank, so all ranks checkpoint and exit at the same
optimizer step instead of one rank leaving the others in a collective."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.distributed

SCRIPT = """
import os, signal
from accelerate import Accelerator
from calibtune.runtime import leave_process_group
from calibtune.train import preemption

accelerator = Accelerator(cpu=True)
rank = accelerator.process_index
with preemption.stop_on_signals():
    before = preemption.stop_requested(accelerator)
    if rank == 1:
        os.kill(os.getpid(), signal.SIGUSR1)
    after = preemption.stop_requested(accelerator)
print(f"rank {rank} of {accelerator.num_processes}: before={before} after={after}", flush=True)
leave_process_group()
"""


def test_a_signal_on_one_rank_stops_every_rank(tmp_path: Path):
    script = tmp_path / "agree.py"
    script.write_text(SCRIPT)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"]
        + [str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    # The two ranks share one stdout pipe, so their lines can interleave without a newline between.
    lines = sorted(
        re.findall(r"rank \d of 2: before=(?:True|False) after=(?:True|False)", result.stdout)
    )
    assert lines == [
        "rank 0 of 2: before=False after=True",
        "rank 1 of 2: before=False after=True",
    ]
