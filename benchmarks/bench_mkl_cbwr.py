"""Speed cost of reproducible CPU math (MKL_CBWR=AUTO,STRICT, set by calibtune's entry points,
see calibtune.runtime.reproducible_cpu_math) on the embedded default model's forward pass.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_mkl_cbwr.py [--rounds 3] [--passes 8]

Each round times `--passes` forward passes (batch 8 x 64 tokens, fp32, CPU) in a fresh process
without MKL_CBWR and in one with it, alternating, so that load on a shared machine hits both;
prints the median seconds per pass of each and their ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys

CHILD = """
import time, torch
from omegaconf import OmegaConf
from calibtune.models import load_model
cfg = OmegaConf.create({"name_or_path": "smollm2-135m-instruct", "revision": None,
    "dtype": "float32", "device": "cpu", "attn_implementation": "sdpa", "trust_remote_code": False})
model = load_model(cfg).eval()
ids = torch.randint(100, 20000, (8, 64), generator=torch.Generator().manual_seed(0))
with torch.inference_mode():
    model(input_ids=ids)  # warm-up
    start = time.perf_counter()
    for _ in range(PASSES):
        model(input_ids=ids)
print((time.perf_counter() - start) / PASSES)
"""


def seconds_per_pass(cbwr: str, passes: int) -> float:
    """One fresh process: MKL_CBWR=cbwr ("" = unset for MKL), seconds per forward pass."""
    env = {**os.environ, "MKL_CBWR": cbwr, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD.replace("PASSES", str(passes))],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passes", type=int, default=8)
    args = parser.parse_args()
    default, strict = [], []
    for _ in range(args.rounds):
        default.append(seconds_per_pass("", args.passes))
        strict.append(seconds_per_pass("AUTO,STRICT", args.passes))
    d, s = statistics.median(default), statistics.median(strict)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"forward pass, MKL default:           {d:.3f} s  (rounds {default})")
    print(f"forward pass, MKL_CBWR=AUTO,STRICT:  {s:.3f} s  (rounds {strict})")
    print(f"ratio strict / default: {s / d:.3f}")


if __name__ == "__main__":
    main()
