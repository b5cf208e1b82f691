"""`calibtune score` throughput on 1,000 (question, answer) pairs with the embedded default model,
and its agreement with the eval stage's tuned confidences for the same pairs.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_score.py [--pairs 1000] [--naive-pairs 100]

Pairs: questions of the built-in QA suite, half with a gold answer, half with another question's
answer. The tuned model: SmolLM2-135M-Instruct + a LoRA adapter (r=8, random B weights; weights
do not change the cost, and any adapter tests the agreement). Three measurements in one run:

1. `calibtune score` (run_score: read JSONL, batched length-sorted scoring, write scores.jsonl);
2. the eval stage's `tuned_confidences` (tuned ptrue) on the same pairs with the same model and batch size:
   the confidences must be identical (max |difference| printed);
3. the straightforward way: one pair per forward (on the first --naive-pairs pairs).
Prints pairs/s of 1 and 3 and their ratio.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np


def make_pairs(n: int, seed: int = 0) -> list[dict]:
    """n pairs from the built-in suite: even ones with a gold answer, odd ones with a wrong one."""
    from calibtune.data.builtin import builtin_suite

    rows = builtin_suite()
    rng = random.Random(seed)
    picked = rng.sample(rows, n)
    pairs = []
    for i, row in enumerate(picked):
        answer = row["answers"][0] if i % 2 == 0 else picked[(i + 1) % n]["answers"][0]
        pairs.append({"id": f"p{i}", "question": row["question"], "answer": str(answer)})
    return pairs


def write_adapter(cfg, out_dir: Path) -> Path:
    """A LoRA adapter (r=8 on attention and MLP) with random B weights, saved as train saves it."""
    import torch
    from peft import LoraConfig, get_peft_model

    from calibtune.models.loading import load_model

    model = get_peft_model(
        load_model(cfg.model),
        LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"]),
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.01)
    model.save_pretrained(out_dir / "adapter")
    return out_dir


def main() -> None:
    """Score the pairs three ways; print both rates, their ratio and the agreement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--naive-pairs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    import torch

    from calibtune.config import compose
    from calibtune.eval.stage import tuned_confidences
    from calibtune.models.prompts import render_answer_prompt
    from calibtune.serve.score import Scorer, load_tuned_model, run_score

    torch.set_num_threads(torch.get_num_threads())

    tmp = Path(tempfile.mkdtemp(prefix="bench-score-"))
    pairs = make_pairs(args.pairs)
    pairs_file = tmp / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    overrides = [
        f"run_dir={tmp}",
        "logger=none",
        "model.device=cpu",
        f"serve.adapter={tmp / 'train'}",
        f"serve.score.input={pairs_file}",
        f"serve.score.batch_size={args.batch_size}",
        "serve.calibrator=null",
    ]
    cfg = compose("eval", overrides)
    write_adapter(cfg, tmp / "train")
    print(
        f"{args.pairs} pairs, {cfg.model.name_or_path}, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads"
    )

    # 1. calibtune score, end to end (reading, scoring, writing)
    start = time.perf_counter()
    output = run_score(cfg)
    score_s = time.perf_counter() - start
    scored = [json.loads(line) for line in output.open()]
    served = np.array([row["raw_confidence"] for row in scored])

    # 2. the eval stage's ptrue on the same queries, same model and batch size
    scorer = Scorer.from_config(cfg)
    queries = scorer.query_prompts([p["question"] for p in pairs], [p["answer"] for p in pairs])
    rows = [
        {
            "prompt": render_answer_prompt(scorer.tokenizer, cfg.prompt, p["question"], None),
            "response": p["answer"],
            "query": query,
        }
        for p, query in zip(pairs, queries, strict=True)
    ]
    cfg.eval.batch_size = args.batch_size
    evaluated = tuned_confidences(
        cfg, scorer.query_model, scorer.tokenizer, rows, "test", full_ece=False
    )["tuned/ptrue"]
    max_diff = float(np.abs(served - evaluated).max())
    identical = bool(np.array_equal(served, evaluated))

    # 3. one pair per forward
    model = load_tuned_model(cfg.model, cfg.serve.adapter)
    naive = Scorer(model, scorer.tokenizer, cfg.prompt, batch_size=1)
    subset = pairs[: args.naive_pairs]
    start = time.perf_counter()
    one_by_one = naive.raw_confidences(
        [p["question"] for p in subset], [p["answer"] for p in subset]
    )
    naive_s = time.perf_counter() - start

    score_rate, naive_rate = args.pairs / score_s, len(subset) / naive_s
    print(f"calibtune score:      {score_rate:8.2f} pairs/s ({score_s:.1f} s for {args.pairs})")
    print(f"one pair per forward: {naive_rate:8.2f} pairs/s ({naive_s:.1f} s for {len(subset)})")
    print(f"ratio:                {score_rate / naive_rate:8.2f}x")
    print(
        f"vs eval stage ptrue:  identical={identical}, max |diff| = {max_diff:.3g} over {args.pairs}"
    )
    print(
        f"batch 1 vs batched:   max |diff| = "
        f"{float(np.abs(one_by_one - served[: len(subset)]).max()):.3g} over {len(subset)}"
    )


if __name__ == "__main__":
    main()
