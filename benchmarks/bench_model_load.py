"""Load time of the embedded default model: first conversion from GGUF vs reload of the cache.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_model_load.py

Converts into a fresh temporary cache (the GGUF path), then reloads the converted safetensors
copy three times, and prints both times and their ratio.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time

from omegaconf import OmegaConf

DEFAULT = OmegaConf.create(
    {
        "name_or_path": "smollm2-135m-instruct",
        "revision": None,
        "dtype": "float32",
        "device": "cpu",
        "attn_implementation": "sdpa",
        "trust_remote_code": False,
    }
)


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        os.environ["CALIBTUNE_CACHE"] = cache
        from calibtune.models import load_model, load_tokenizer

        start = time.perf_counter()
        load_tokenizer(DEFAULT)
        load_model(DEFAULT)
        first = time.perf_counter() - start
        reloads = []
        for _ in range(3):
            start = time.perf_counter()
            load_tokenizer(DEFAULT)
            load_model(DEFAULT)
            reloads.append(time.perf_counter() - start)
    reload = min(reloads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"first load (GGUF -> safetensors cache): {first:.2f} s")
    print(f"cached reload (tokenizer + model), best of 3: {reload:.2f} s  (all: {reloads})")
    print(f"ratio first/cached: {first / reload:.1f}x")


if __name__ == "__main__":
    main()
