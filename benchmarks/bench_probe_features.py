"""The probe baseline's features in the eval stage: read off the base suffix pass of the
confidence passes (calibtune.eval.confidence.followup_confidences(hidden_state=True), current)
vs the same confidence passes plus a pass of their own (query_features, the code before).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_probe_features.py <labeled set> \
        [--rows 128] [--rounds 3]

On the first `--rows` train rows of a labeled set (follow-up queries), with the embedded default
model (fp32, CPU, batch 32 as eval.batch_size), each round times both ways back to back, so that
load on a shared machine hits both; prints the median seconds of each, their ratio, and the
largest difference between the two feature sets.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time


def main() -> None:
    """Time both ways back to back; print the medians, their ratio and the feature gap."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labeled_set")
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import torch

    from calibtune.config import compose
    from calibtune.eval.confidence import HIDDEN, followup_confidences
    from calibtune.examples import read_labeled_split
    from calibtune.models import load_model, load_tokenizer
    from calibtune.models.confidence import (
        attach_adapter,
        common_suffix_ids,
        encode_query,
        query_features,
        query_tokens_of,
    )

    cfg = compose("eval", [])
    tokenizer = load_tokenizer(cfg.model)
    qm = attach_adapter(load_model(cfg.model), None)
    rows = read_labeled_split(args.labeled_set, "train")[: args.rows]
    queries = [encode_query(tokenizer, row) for row in rows]
    suffix, pad = common_suffix_ids(queries), tokenizer.pad_token_id
    tokens, batch = query_tokens_of(tokenizer, cfg.prompt), cfg.eval.batch_size

    def separate() -> torch.Tensor:
        followup_confidences(qm, queries, suffix, tokens, pad, batch, tuned=False)
        with torch.inference_mode():
            return query_features(qm.module, queries, pad, batch).double()

    def shared() -> torch.Tensor:
        out = followup_confidences(
            qm, queries, suffix, tokens, pad, batch, tuned=False, hidden_state=True
        )
        return torch.from_numpy(out[HIDDEN])

    times: dict[str, list[float]] = {"separate": [], "shared": []}
    features = {}
    for _ in range(args.rounds):
        for name, run in (("separate", separate), ("shared", shared)):
            start = time.perf_counter()
            features[name] = run()
            times[name].append(time.perf_counter() - start)
    sep, sha = statistics.median(times["separate"]), statistics.median(times["shared"])
    gap = (features["separate"] - features["shared"]).abs().max().item()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(
        f"{len(rows)} rows, {args.rounds} rounds (median s): separate pass {sep:.2f}, shared {sha:.2f}"
    )
    print(f"separate / shared: {sep / sha:.2f}x; largest feature difference {gap:.2e}")


if __name__ == "__main__":
    main()
