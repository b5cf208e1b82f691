"""Batched answer generation (docs/data.md): left-padded greedy or sampled decoding through
Hugging Face `generate`, or vLLM's `LLM.generate` behind the same call.

Prompts are sorted by token length so each batch pads little; answers come back in the order of
the prompts. Sampling is seeded per batch, so a resumed build draws the same samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from calibtune.models.encoding import length_sorted_batches


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """The text before the first stop string, stripped."""
    end = len(text)
    for stop in stop_strings:
        index = text.find(stop) if stop else -1
        if index != -1:
            end = min(end, index)
    return text[:end].strip()


def _is_vllm(model: object) -> bool:
    return type(model).__module__.startswith("vllm")


def _generate_vllm(
    llm, prompts: Sequence[str], max_new_tokens, stop_strings, num_samples, temperature, seed
) -> list[list[str]]:
    """vLLM path: one call, vLLM batches internally."""
    from vllm import SamplingParams

    params = SamplingParams(
        n=num_samples,
        temperature=temperature,
        max_tokens=max_new_tokens,
        stop=list(stop_strings) or None,
        seed=seed,
    )
    outputs = llm.generate(list(prompts), params, use_tqdm=False)
    return [[cut_at_stop(c.text, stop_strings) for c in out.outputs] for out in outputs]


@torch.inference_mode()
def generate_answers(
    model,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    stop_strings: Sequence[str] = (),
    num_samples: int = 1,
    temperature: float = 0.0,
    seed: int = 0,
    progress: bool = False,
    on_batch: Callable[[list[int], dict, object, list[str]], None] | None = None,
) -> list[list[str]]:
    """Answer each rendered prompt; per prompt, `num_samples` strings (1 when greedy).

    `on_batch` (greedy Hugging Face decoding only) is called after each batch with the prompt
    indices, the padded inputs, `generate`'s output (sequences, raw logits of every step, KV
    cache) and the batch's answers: the data stage reads the base signals from it."""
    num_samples = 1 if temperature <= 0 else int(num_samples)
    if _is_vllm(model):
        return _generate_vllm(
            model, prompts, max_new_tokens, stop_strings, num_samples, temperature, seed
        )
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    answers: list[list[str]] = [[] for _ in prompts]
    device = next(model.parameters()).device
    sampling = {"do_sample": True, "temperature": float(temperature), "top_p": 1.0, "top_k": 0}
    greedy = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    bar = tqdm(total=len(prompts), desc="answers", unit="ans", disable=not progress)
    for number, batch in enumerate(length_sorted_batches([len(e) for e in encoded], batch_size)):
        inputs = tokenizer.pad(
            {"input_ids": [encoded[i] for i in batch]}, padding=True, return_tensors="pt"
        ).to(device)
        if temperature > 0:
            torch.manual_seed(seed * 1_000_003 + number)
        keep = on_batch is not None and temperature <= 0
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            num_return_sequences=num_samples,
            pad_token_id=tokenizer.pad_token_id,
            **(sampling if temperature > 0 else greedy),
            **({"return_dict_in_generate": True, "output_logits": True} if keep else {}),
        )
        sequences = out.sequences if keep else out
        texts = tokenizer.batch_decode(
            sequences[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        for row, index in enumerate(batch):
            chunk = texts[row * num_samples : (row + 1) * num_samples]
            answers[index] = [cut_at_stop(t, stop_strings) for t in chunk]
        if keep:
            on_batch(batch, inputs, out, [answers[i][0] for i in batch])
        bar.update(len(batch))
    bar.close()
    return answers
