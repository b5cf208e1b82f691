"""A small synthetic labeled set (arithmetic and capitals questions) in the labeled-example
format, for tests, benchmarks and smoke runs before a real data stage output exists.

With a model, responses are its own greedy answers (what the data stage would produce) graded
by containment of the gold answer; without one, responses are right or wrong at random."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from calibtune.examples import MANIFEST, SPLITS, split_path
from calibtune.io import write_json_atomic, write_jsonl_atomic
from calibtune.models.confidence import render_query_prompt
from calibtune.models.prompts import render_answer_prompt

CAPITALS = {
    "France": "Paris",
    "Peru": "Lima",
    "Germany": "Berlin",
    "Japan": "Tokyo",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Egypt": "Cairo",
    "Kenya": "Nairobi",
    "Canada": "Ottawa",
    "Chile": "Santiago",
}


def synthetic_questions(n: int, seed: int) -> list[dict]:
    """`n` distinct-ish QA items: small sums and country capitals."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        if i % 3 == 2:
            country = rng.choice(sorted(CAPITALS))
            question, answer, domain = (
                f"What is the capital of {country}?",
                CAPITALS[country],
                "capitals",
            )
        else:
            a, b = rng.randint(0, 99), rng.randint(0, 99)
            question, answer, domain = f"What is {a} plus {b}?", str(a + b), "arithmetic"
        items.append({"qid": f"q{i}", "question": question, "answers": [answer], "domain": domain})
    return items


@torch.no_grad()
def greedy_answers(model, tokenizer, prompts: list[str], max_new_tokens: int = 8) -> list[str]:
    """The model's greedy continuation of each prompt (left-padded batches of 16)."""
    responses = []
    for start in range(0, len(prompts), 16):
        enc = tokenizer(
            prompts[start : start + 16], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(model.device)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        new = out[:, enc["input_ids"].shape[1] :]
        responses += tokenizer.batch_decode(new, skip_special_tokens=True)
    return responses


def write_synthetic_labeled_set(
    out_dir: str | Path,
    tokenizer,
    prompt_cfg,
    sizes: dict[str, int],
    model=None,
    seed: int = 0,
) -> Path:
    """Write train/val/test.jsonl + manifest.json with `sizes[split]` examples each."""
    out_dir = Path(out_dir)
    rng = random.Random(seed)
    items = synthetic_questions(sum(sizes.values()), seed)
    prompts = [render_answer_prompt(tokenizer, prompt_cfg, it["question"], None) for it in items]
    if model is not None:
        responses = greedy_answers(model, tokenizer, prompts)
        correct = [
            float(it["answers"][0].lower() in r.lower())
            for it, r in zip(items, responses, strict=True)
        ]
    else:
        correct = [float(rng.random() < 0.5) for _ in items]
        responses = [
            it["answers"][0] if ok else str(rng.randint(0, 200))
            for it, ok in zip(items, correct, strict=True)
        ]
    start = 0
    counts = {}
    for split in SPLITS:
        rows = []
        for i in range(start, start + sizes.get(split, 0)):
            item = items[i]
            rows.append(
                {
                    "id": f"{item['qid']}-0",
                    "qid": item["qid"],
                    "domain": item["domain"],
                    "question": item["question"],
                    "answers": item["answers"],
                    "choices": None,
                    "prompt": prompts[i],
                    "response": responses[i],
                    "correct": correct[i],
                    "grader": "synthetic-contains",
                    "split": split,
                    "query": render_query_prompt(
                        tokenizer, prompt_cfg, item["question"], None, responses[i]
                    ),
                }
            )
        start += sizes.get(split, 0)
        counts[split] = len(rows)
        write_jsonl_atomic(split_path(out_dir, split), rows)
    write_json_atomic(out_dir / MANIFEST, {"synthetic": True, "seed": seed, "counts": counts})
    return out_dir
