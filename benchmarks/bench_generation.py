"""Answers/s of the data stage's batched generation against a one-question-at-a-time loop.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_generation.py
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_generation.py --questions 128 --batch-size 64

Same model (the embedded default, SmolLM2-135M-Instruct, fp32), same questions from the built-in
suite (a fixed sample over every domain), same prompts, greedy, same max_new_tokens. The batched
side is `calibtune.data.generation.generate_answers` (left padding, length-sorted batches); the
baseline calls `model.generate` on one prompt at a time. Prints both rates, the ratio, and how
many answers agree (batched padding may flip a rare near-tie).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time


def one_at_a_time(model, tokenizer, prompts, max_new_tokens, stop_strings) -> list[str]:
    """The baseline: a plain `generate` call per prompt, no padding."""
    from calibtune.data.generation import cut_at_stop

    answers = []
    for prompt in prompts:
        inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=tokenizer.pad_token_id,
        )
        text = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        answers.append(cut_at_stop(text, stop_strings))
    return answers


def main() -> None:
    """Generate the same answers both ways and print both rates and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=12)
    args = parser.parse_args()
    import torch

    from calibtune.config import compose
    from calibtune.data.builtin import builtin_suite
    from calibtune.data.generation import generate_answers
    from calibtune.models import load_model, load_tokenizer, render_answer_prompt

    cfg = compose("data", ["model.device=cpu", "model.dtype=float32"])
    tokenizer, model = load_tokenizer(cfg.model), load_model(cfg.model)
    rows = builtin_suite()
    random.Random(0).shuffle(rows)
    prompts = [
        render_answer_prompt(tokenizer, cfg.prompt, r["question"], r["choices"])
        for r in rows[: args.questions]
    ]
    stops = list(cfg.data.stop_strings)
    generate_answers(model, tokenizer, prompts[:4], max_new_tokens=2, batch_size=4)  # warm-up

    with torch.inference_mode():
        start = time.perf_counter()
        batched = generate_answers(
            model,
            tokenizer,
            prompts,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            stop_strings=stops,
        )
        batched_s = time.perf_counter() - start
        start = time.perf_counter()
        single = one_at_a_time(model, tokenizer, prompts, args.max_new_tokens, stops)
        single_s = time.perf_counter() - start

    n = len(prompts)
    agree = sum(b[0] == s for b, s in zip(batched, single, strict=True))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}"
    )
    print(f"questions: {n}, max_new_tokens: {args.max_new_tokens}, greedy")
    print(f"batched (batch {args.batch_size}): {batched_s:8.1f} s  {n / batched_s:6.2f} answers/s")
    print(f"one at a time:        {single_s:8.1f} s  {n / single_s:6.2f} answers/s")
    print(f"ratio: {single_s / batched_s:.1f}x   identical answers: {agree}/{n}")


if __name__ == "__main__":
    main()
