"""Per-example confidences of DESIGN.md §2 from a model: ptrue, pavg / seqlogp / pmin, verbalized.

Every function batches rows of similar length together and returns numpy arrays in the order
of its inputs. The shared encoding and query helpers of `calibtune.models` do the token work.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from calibtune.data.generation import generate_answers, length_sorted_batches
from calibtune.metrics import FullECE
from calibtune.models.encoding import (
    answer_token_logits,
    collate_answers,
    encode_answer,
    encode_text,
    last_token_logits,
    pad_sequences,
)
from calibtune.models.prompts import QueryTokens, query_confidence

PERCENT = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d+)?)\s*%?")


def _device(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


@torch.inference_mode()
def ptrue_confidences(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    queries: Sequence[str],
    tokens: QueryTokens,
    batch_size: int,
    progress: str | None = None,
) -> np.ndarray:
    """P(yes) / (P(yes) + P(no)) after each rendered uncertainty query (a bar named `progress`)."""
    encoded = [encode_text(tokenizer, query) for query in queries]
    confidences = np.zeros(len(queries))
    device = _device(model)
    batches = length_sorted_batches([len(ids) for ids in encoded], batch_size)
    for batch in tqdm(batches, desc=progress, unit="batch", disable=progress is None):
        padded = pad_sequences([encoded[i] for i in batch], tokenizer.pad_token_id, side="left")
        logits = last_token_logits(model, _to_device(padded, device))
        confidences[batch] = query_confidence(logits, tokens).double().cpu().numpy()
    return confidences


@torch.inference_mode()
def answer_confidences(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
    batch_size: int,
    full_ece: Sequence[tuple[float, FullECE]] = (),
    progress: str | None = None,
) -> dict[str, np.ndarray]:
    """pavg, seqlogp and pmin of each response under `model`; NaN where a response is empty.

    pavg is the mean probability of the response tokens, seqlogp the length-normalised sequence
    log-probability mapped to (0, 1) by exp (the geometric-mean token probability), pmin the
    smallest token probability. Each (temperature, FullECE) in `full_ece` also receives the
    answer tokens' next-token logits divided by its temperature.
    """
    encoded = [encode_answer(tokenizer, p, r) for p, r in zip(prompts, responses, strict=True)]
    result = {name: np.full(len(prompts), np.nan) for name in ("pavg", "seqlogp", "pmin")}
    usable = [i for i, item in enumerate(encoded) if len(item.input_ids) > item.answer_start]
    device = _device(model)
    lengths = [len(encoded[i].input_ids) for i in usable]
    batches = length_sorted_batches(lengths, batch_size)
    for batch_positions in tqdm(batches, desc=progress, unit="batch", disable=progress is None):
        batch = [usable[i] for i in batch_positions]
        collated = collate_answers([encoded[i] for i in batch], tokenizer.pad_token_id)
        logits, targets, rows = answer_token_logits(model, _to_device(collated, device))
        logits = logits.float()
        for temperature, metric in full_ece:
            metric.update(logits / temperature, targets)
        token_logp = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)
        token_logp, rows = token_logp.double().cpu(), rows.cpu()
        for row, index in enumerate(batch):
            logp = token_logp[rows == row]
            result["pavg"][index] = float(logp.exp().mean())
            result["seqlogp"][index] = float(logp.mean().exp())
            result["pmin"][index] = float(logp.min().exp())
    return result


def parse_percent(text: str) -> float | None:
    """The first number 0-100 in a reply (with or without %), as a probability; else None."""
    match = PERCENT.search(text)
    if match is None:
        return None
    value = float(match.group(1))
    return value / 100.0 if 0.0 <= value <= 100.0 else None


def verbalized_confidences(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    batch_size: int,
    max_new_tokens: int,
) -> tuple[np.ndarray, int]:
    """Ask for a 0-100 % confidence under each rendered prompt; NaN and a count where unparseable."""
    replies = generate_answers(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    parsed = [parse_percent(samples[0]) for samples in replies]
    confidences = np.array([np.nan if p is None else p for p in parsed], dtype=np.float64)
    return confidences, sum(p is None for p in parsed)
