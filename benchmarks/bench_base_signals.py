"""Base signals in one pass: the data stage's generation with the signals read off it (the
answer-token logits of generation, the query suffix on generation's KV cache; current) vs
generation followed by a base pass of its own over prompt + response + suffix (what train and
eval ran before the signals were recorded), with generation alone as the floor.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_base_signals.py [--rows 256] [--rounds 2]
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_base_signals.py --batch-sizes 64 128 256

`--batch-sizes`: time the one pass (the data stage's work) at each `data.batch_size` instead, the
sizes interleaved in each round; prints each median, its ratio to the first size's, and the
largest signal differences from the first size's (the batch shape's float noise).

On `--rows` built-in questions (seed 0) with the embedded default model (fp32, CPU, the default
data.batch_size and eval.batch_size), each round times both ways back to back, so that load on
a shared machine hits both; prints the median seconds of each, the ratio, the signal work as
model row-passes per row, and the largest differences between the two sets of signals.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

OVERRIDES = ["logger=none", "model.device=cpu", "data.progress=false"]


def questions_and_model(cfg, n_rows: int) -> tuple[list[dict], object, object]:
    """`n_rows` built-in questions spread over the suite (seed 0), the tokenizer and the model."""
    from calibtune.data.sources import load_qa_rows
    from calibtune.models import load_model, load_tokenizer

    rows = load_qa_rows(cfg.dataset)[:: max(1, 22000 // n_rows)][:n_rows]
    return rows, load_tokenizer(cfg.model), load_model(cfg.model)


def main() -> None:
    """Time both ways back to back; print medians, ratio, row-passes and the largest gaps."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    args = parser.parse_args()
    if args.batch_sizes:
        compare_batch_sizes(args.rows, args.rounds, args.batch_sizes)
        return
    import numpy as np
    import torch

    from calibtune.config import compose
    from calibtune.data.stage import label_and_signal
    from calibtune.models.confidence import QueryModel, query_tokens_of
    from calibtune.models.signals import compute_signals, temperature_grid

    cfg = compose("run", OVERRIDES)
    rows, tokenizer, model = questions_and_model(cfg, args.rows)
    tokens = query_tokens_of(tokenizer, cfg.prompt)
    grid, n_bins = temperature_grid(cfg.eval), int(cfg.eval.n_bins)

    def one_pass():
        return label_and_signal(model, tokenizer, rows, cfg)

    def generation_only():
        return label_and_signal(model, tokenizer, rows, cfg, record=False)

    def two_passes():
        labeled, _, _ = label_and_signal(model, tokenizer, rows, cfg, record=False)
        qm = QueryModel.of(model)
        signals = compute_signals(
            qm, tokenizer, labeled, tokens, cfg.eval.batch_size, grid, n_bins, -1
        )
        return labeled, signals

    ways = {
        "generation only": generation_only,
        "one pass": one_pass,
        "generation + base pass": two_passes,
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, run in ways.items():
            start = time.perf_counter()
            result = run()
            times[name].append(time.perf_counter() - start)
            if name == "one pass":
                recorded, work = result[1], result[2]
            elif name == "generation + base pass":
                reference = result[1]
    print(
        f"{len(rows)} questions, {cfg.model.name_or_path}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    )
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, seconds in medians.items():
        print(f"{name:<24} {seconds:8.1f} s")
    print(
        f"ratio (generation + base pass) / one pass: "
        f"{medians['generation + base pass'] / medians['one pass']:.2f}; "
        f"one pass / generation only: {medians['one pass'] / medians['generation only']:.2f}"
    )
    extra = work["whole_query_rows"]
    print(
        f"one pass: {work['suffix_rows']} suffix rows, {extra} rows needing a base pass "
        f"({(len(rows) + extra) / len(rows):.3f} row-passes per row, generation included; "
        "the other way: 2.000)"
    )
    recorded = recorded.select(reference.ids)
    for name, values in reference.confidences().items():
        gap = np.nanmax(np.abs(recorded.confidences()[name] - values))
        print(f"max |difference| {name:<14} {gap:.2e}")
    print(f"max |difference| hidden state  {(recorded.hidden - reference.hidden).abs().max():.2e}")


def compare_batch_sizes(n_rows: int, rounds: int, sizes: list[int]) -> None:
    """The one pass at each data.batch_size, interleaved per round: medians, ratios, gaps."""
    import numpy as np

    from calibtune.config import compose
    from calibtune.data.stage import label_and_signal

    configs = {size: compose("run", [*OVERRIDES, f"data.batch_size={size}"]) for size in sizes}
    rows, tokenizer, model = questions_and_model(configs[sizes[0]], n_rows)
    times: dict[int, list[float]] = {size: [] for size in sizes}
    results = {}
    for _ in range(rounds):
        for size in sizes:
            start = time.perf_counter()
            results[size] = label_and_signal(model, tokenizer, rows, configs[size])
            times[size].append(time.perf_counter() - start)
    print(f"{len(rows)} questions, one pass, {os.cpu_count()} CPUs, {rounds} rounds")
    first = statistics.median(times[sizes[0]])
    reference, signals = results[sizes[0]][0], results[sizes[0]][1]
    for size in sizes:
        median = statistics.median(times[size])
        labeled, other = results[size][0], results[size][1].select(signals.ids)
        answers = {r["id"]: r["response"] for r in labeled}
        same = sum(answers.get(r["id"]) == r["response"] for r in reference)
        gap = max(
            np.nanmax(np.abs(other.confidences()[name] - values))
            for name, values in signals.confidences().items()
        )
        print(
            f"batch {size:>4}: {median:7.1f} s  ratio to {sizes[0]}: {median / first:.3f}  "
            f"same responses {same}/{len(rows)}  max signal gap {gap:.1e}"
        )


if __name__ == "__main__":
    main()
