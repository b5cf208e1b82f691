"""Process-level helpers: seeding, rank checks, device and dtype choice, git/version info."""

from __future__ import annotations

import functools
import os
import random
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from calibtune.errors import ConfigError

T = TypeVar("T")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (all devices) once per process."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def reproducible_cpu_math() -> None:
    """Ask MKL (torch's CPU BLAS) for strict conditional numerical reproducibility (MKL_CBWR):
    without it an fp32 GEMM's rounding depends on how its inputs happen to lie in memory, so the
    same row can score differently on another process (measured: one confidence moved by 6e-8
    between 1 and 2 processes). Takes effect before MKL's first call, so entry points call it
    first; a value set by the user is kept. Its speed cost: docs/BENCHMARKS.md (history)."""
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")


def rank() -> int:
    """Global rank of this process (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def is_rank_zero() -> bool:
    """True on the process that writes files and logs."""
    return rank() == 0


def process_group(device: str):
    """accelerate's PartialState when launched with several processes (torchrun, accelerate
    launch): it joins the process group and gives this rank its device; None for one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    return PartialState(cpu=device == "cpu")


def leave_process_group() -> None:
    """Destroy the process group, if one was joined, while the interpreter is fully alive: gloo's
    worker threads left to interpreter shutdown abort the process now and then (SIGABRT,
    "terminate called without an active exception", after all the work is done)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def share_work(state, tasks: dict[str, Callable[[], T]]) -> dict[str, T]:
    """Run each task once: task k on rank k % world_size (every task on this process when
    `state` is None), and return every result on every rank. Each task runs exactly as it
    would in one process, so the results do not depend on the number of processes."""
    if state is None:
        return {name: task() for name, task in tasks.items()}
    from accelerate.utils import gather_object

    mine = [
        (name, task())
        for k, (name, task) in enumerate(tasks.items())
        if k % state.num_processes == state.process_index
    ]
    return dict(gather_object(mine))


def resolve_device(device: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; anything else is passed to torch.device."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Map a config dtype name to torch; `auto` is bf16 on a GPU that supports it, else fp32."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in DTYPES:
        raise ConfigError(f"model.dtype={name!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def git_commit(repo_dir: Path | None = None) -> str | None:
    """Current git commit of the calibtune checkout, or None outside a checkout."""
    repo_dir = repo_dir or Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(repo_dir), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@functools.cache
def commit_at_start() -> str | None:
    """`git_commit()` as first read in this process. The CLI reads it before any work, so an
    output records the code its stage started with, not a commit made in the checkout while
    a long stage ran."""
    return git_commit()


def provenance() -> dict:
    """What produced an output: calibtune's and its numeric libraries' versions, the git commit
    (the block every manifest, metrics file and export carries)."""
    import accelerate
    import peft
    import transformers

    import calibtune

    versions = {
        "calibtune": calibtune.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
    }
    return {"versions": versions, "git_commit": commit_at_start()}
