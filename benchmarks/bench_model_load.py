"""Load time of the embedded default model: first conversion from GGUF vs reload of the cache.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_model_load.py [--reloads 3]

Converts into a fresh temporary cache (the GGUF path), then reloads the converted safetensors
copy `--reloads` times, and prints both times and their ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time


def main() -> None:
    """Time the first load and the cached reloads; print both and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reloads", type=int, default=3)
    args = parser.parse_args()
    from calibtune.config import compose

    model_cfg = compose("data", ["model.device=cpu", "model.dtype=float32"]).model  # the default
    with tempfile.TemporaryDirectory() as cache:
        os.environ["CALIBTUNE_CACHE"] = cache
        from calibtune.models import load_model, load_tokenizer

        start = time.perf_counter()
        load_tokenizer(model_cfg)
        load_model(model_cfg)
        first = time.perf_counter() - start
        reloads = []
        for _ in range(args.reloads):
            start = time.perf_counter()
            load_tokenizer(model_cfg)
            load_model(model_cfg)
            reloads.append(time.perf_counter() - start)
    reload = min(reloads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"first load (GGUF -> safetensors cache): {first:.2f} s")
    print(
        f"cached reload (tokenizer + model), best of {args.reloads}: {reload:.2f} s  (all: {reloads})"
    )
    print(f"ratio first/cached: {first / reload:.1f}x")


if __name__ == "__main__":
    main()
