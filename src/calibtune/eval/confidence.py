"""Per-example confidences of the eval stage from a model: ptrue (base, tuned), pavg / seqlogp /
pmin, verbalized, and the Full-ECE logits.

ptrue is `calibtune.models.confidence`'s: the same passes as train validation and `Scorer`.
Every function batches rows of similar length together and returns numpy arrays in the order
of its inputs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from calibtune.data.generation import generate_answers
from calibtune.metrics import FullECE
from calibtune.models.confidence import (
    EncodedQuery,
    QueryModel,
    QueryTokens,
    confidences,
    followup_batches,
    followup_query_logits,
    query_logits,
    query_two_way_logits,
)
from calibtune.models.encoding import (
    answer_token_logits,
    collate_answers,
    encode_answer,
    followup_prefix_pass,
    followup_suffix_outputs,
    length_sorted_batches,
)

HIDDEN = "hidden"  # the key of the base hidden states beside the confidences
PERCENT = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d+)?)\s*%?")


def _record_answer_stats(
    result: dict[str, np.ndarray],
    logits: torch.Tensor,
    targets: torch.Tensor,
    rows: torch.Tensor,
    indices: Sequence[int],
) -> None:
    """pavg / seqlogp / pmin of each batch row that has answer tokens, into `result[...][index]`."""
    token_logp = torch.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None]).squeeze(1)
    token_logp, rows = token_logp.double().cpu(), rows.cpu()
    for row, index in enumerate(indices):
        logp = token_logp[rows == row]
        if logp.numel():
            result["pavg"][index] = float(logp.exp().mean())
            result["seqlogp"][index] = float(logp.mean().exp())
            result["pmin"][index] = float(logp.min().exp())


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
    device = next(model.parameters()).device
    lengths = [len(encoded[i].input_ids) for i in usable]
    batches = length_sorted_batches(lengths, batch_size)
    for batch_positions in tqdm(batches, desc=progress, unit="batch", disable=progress is None):
        batch = [usable[i] for i in batch_positions]
        collated = collate_answers([encoded[i] for i in batch], tokenizer.pad_token_id)
        logits, targets, rows = answer_token_logits(
            model, {k: v.to(device) for k, v in collated.items()}
        )
        _update_full_ece(full_ece, logits, targets)
        _record_answer_stats(result, logits, targets, rows, batch)
    return result


def _update_full_ece(
    full_ece: Sequence[tuple[float, FullECE]], logits: torch.Tensor, targets: torch.Tensor
) -> None:
    if targets.numel() == 0:
        return
    logits = logits.float()
    for temperature, metric in full_ece:
        metric.update(logits / temperature, targets)


def bar(progress: str | None):
    """A tqdm wrapper named `progress` for batch iterators, or None (no bar)."""
    if progress is None:
        return None
    return lambda batches: tqdm(batches, desc=progress, unit="batch")


def ptrue(
    qm: QueryModel,
    queries: Sequence[EncodedQuery],
    tokens: QueryTokens,
    pad_id: int,
    batch_size: int,
    *,
    base: bool,
    progress: str | None = None,
) -> np.ndarray:
    """P(yes) of each query, base (adapter disabled) or tuned: the shared confidence passes."""
    two_way = query_two_way_logits(
        qm, queries, tokens, pad_id, batch_size, base=base, progress=bar(progress)
    )
    return confidences(two_way)


@torch.inference_mode()
def followup_confidences(
    qm: QueryModel,
    queries: Sequence[EncodedQuery],
    suffix_ids: Sequence[int],
    tokens: QueryTokens,
    pad_id: int,
    batch_size: int,
    tuned: bool,
    base_full_ece: Sequence[tuple[float, FullECE]] = (),
    tuned_full_ece: Sequence[tuple[float, FullECE]] = (),
    progress: str | None = None,
    hidden_state: bool = False,
) -> dict[str, np.ndarray]:
    """Every model confidence of follow-up queries (prompt + response + suffix), sharing work.

    Per batch: one base pass over prompt + response gives pavg / seqlogp / pmin, the base
    Full-ECE logits and a KV cache; the suffix on that cache gives base ptrue (and, with
    `hidden_state`, the base model's last hidden state at the query's end, key HIDDEN: the
    probe baseline's features, with no pass of their own). Tuned ptrue is
    `followup_query_logits` (an aLoRA's suffix on the same cache; a LoRA's one pass over the
    whole query, which also gives the tuned answer-token logits), a probe's is its head on the
    query features. Keys: base/ptrue, base/pavg, base/seqlogp, base/pmin, tuned/ptrue."""
    names = ("pavg", "seqlogp", "pmin")
    stats = {name: np.full(len(queries), np.nan) for name in names}
    two_way = {"base": torch.empty(len(queries), 2), "tuned": torch.empty(len(queries), 2)}
    features = torch.empty(len(queries), qm.module.config.hidden_size) if hidden_state else None
    device = next(qm.module.parameters()).device
    batches = followup_batches(queries, suffix_ids, pad_id, batch_size)
    for batch, collated in bar(progress)(batches) if progress else batches:
        collated = {k: v.to(device) for k, v in collated.items()}
        with qm.base_mode():
            (logits, targets, rows), cache = followup_prefix_pass(qm.module, collated)
            last, state = followup_suffix_outputs(qm.module, collated, cache, hidden_state)
        two_way["base"][batch] = query_logits(last, tokens).cpu()
        if features is not None:
            features[batch] = state.float().cpu()
        _record_answer_stats(stats, logits, targets, rows, batch)
        _update_full_ece(base_full_ece, logits, targets)
        if not tuned or qm.kind == "probe":  # a probe leaves the answer tokens as they are
            _update_full_ece(tuned_full_ece if tuned else (), logits, targets)
            continue
        last, answer = followup_query_logits(qm, collated, base=False, cache=cache)
        two_way["tuned"][batch] = query_logits(last, tokens).cpu()
        if answer is None and tuned_full_ece:  # aLoRA: inactive on prompt + response, measured
            answer, _ = followup_prefix_pass(qm.module, collated, use_cache=False)
        if answer is not None:
            _update_full_ece(tuned_full_ece, answer[0], answer[1])
    out = {"base/ptrue": confidences(two_way["base"])}
    out.update({f"base/{name}": stats[name] for name in names})
    if features is not None:
        out[HIDDEN] = features.double().numpy()
    if tuned and qm.kind == "probe":
        two_way["tuned"] = query_two_way_logits(qm, queries, tokens, pad_id, batch_size)
    if tuned:
        out["tuned/ptrue"] = confidences(two_way["tuned"])
    return out


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
    values = np.array([np.nan if p is None else p for p in parsed], dtype=np.float64)
    return values, sum(p is None for p in parsed)
