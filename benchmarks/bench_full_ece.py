"""Benchmark: streaming FullECE vs a NumPy Full-ECE that materialises every probability.

    .venv/bin/python benchmarks/bench_full_ece.py [--positions 2000] [--vocab 49152] [--batch 250]

Both sides score the same logits (positions x vocabulary, the default model's vocabulary size);
the script checks they agree, prints each time, the ratio, and peak extra memory of each side.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def full_ece_reference(logits: np.ndarray, targets: np.ndarray) -> float:
    """The tests' materialising NumPy Full-ECE (tests/fixtures/reference.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # shared test fixtures
    from fixtures.reference import full_ece_reference as reference

    return reference(logits, targets)


def time_streaming(logits: torch.Tensor, targets: torch.Tensor, batch: int) -> tuple[float, float]:
    """Seconds and result of FullECE fed `batch` positions at a time."""
    from calibtune.metrics import FullECE

    start = time.perf_counter()
    full = FullECE()
    for row in range(0, logits.shape[0], batch):
        full.update(logits[row : row + batch], targets[row : row + batch])
    value = full.compute()
    return time.perf_counter() - start, value


def time_numpy(logits: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """Seconds and result of the materialising NumPy version."""
    start = time.perf_counter()
    value = full_ece_reference(logits, targets)
    return time.perf_counter() - start, value


def peak_numpy_bytes(logits: np.ndarray, targets: np.ndarray) -> int:
    """Peak bytes NumPy allocates while computing the reference."""
    tracemalloc.start()
    full_ece_reference(logits, targets)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main() -> None:
    """Run both sides on the same inputs and print times and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=2000)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    from calibtune.metrics import FullECE

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(args.positions, args.vocab, generator=generator) * 3
    logits[torch.arange(args.positions), torch.arange(args.positions) % args.vocab] += 12
    targets = torch.randint(0, args.vocab, (args.positions,), generator=generator)
    targets[::2] = torch.arange(0, args.positions, 2) % args.vocab  # half the argmaxes correct
    targets_np = targets.numpy()
    as_float32, as_float64 = logits.numpy(), logits.numpy().astype(np.float64)

    stream = min(time_streaming(logits, targets, args.batch) for _ in range(args.repeats))
    numpy32 = min(time_numpy(as_float32, targets_np) for _ in range(args.repeats))
    numpy64 = min(time_numpy(as_float64, targets_np) for _ in range(args.repeats))
    assert abs(stream[1] - numpy64[1]) < 1e-5, (stream[1], numpy64[1])
    print(f"positions={args.positions} vocab={args.vocab} torch_threads={torch.get_num_threads()}")
    print(f"full_ece={stream[1]:.6f} (numpy float64 {numpy64[1]:.6f}, float32 {numpy32[1]:.6f})")
    print(
        f"FullECE streaming (batch {args.batch}, float32): {stream[0]:.3f} s (best of {args.repeats})"
    )
    print(f"NumPy materialising, float32:            {numpy32[0]:.3f} s")
    print(f"NumPy materialising, float64:            {numpy64[0]:.3f} s")
    print(f"speed-up vs NumPy float32: {numpy32[0] / stream[0]:.1f}x")
    print(f"speed-up vs NumPy float64: {numpy64[0] / stream[0]:.1f}x")
    print(
        f"NumPy float64 peak extra memory: {peak_numpy_bytes(as_float64, targets_np) / 2**20:.0f} MiB; "
        f"FullECE state: 2 x {FullECE().n_bins} float64 + one chunk of "
        f"{FullECE().chunk_rows} x vocab probabilities"
    )


if __name__ == "__main__":
    main()
