"""Per-example confidences of DESIGN.md §2 from a model: ptrue, pavg / seqlogp / pmin, verbalized.

Every function batches rows of similar length together and returns numpy arrays in the order
of its inputs. The shared encoding and query helpers of `calibtune.models` do the token work.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from calibtune.data.generation import generate_answers, length_sorted_batches
from calibtune.errors import ConfigError
from calibtune.metrics import FullECE
from calibtune.models.encoding import (
    answer_token_logits,
    collate_answers,
    collate_followup,
    encode_answer,
    encode_text,
    followup_full_pass,
    followup_prefix_pass,
    followup_suffix_logits,
    last_token_logits,
    pad_sequences,
)
from calibtune.models.prompts import QueryTokens, query_confidence, query_suffix

PERCENT = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d+)?)\s*%?")


def _device(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


def base_mode(model):
    """Context in which `model` runs as the base model (adapter disabled), if it has one."""
    return (
        model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    )


def alora_invocation_tokens(model) -> list[int] | None:
    """The invocation tokens of an activated-LoRA adapter on `model` (None for other models)."""
    config = getattr(model, "peft_config", {}).get("default")
    tokens = getattr(config, "alora_invocation_tokens", None)
    return list(tokens) if tokens else None


def followup_suffix_text(rows: Sequence[dict]) -> str | None:
    """The suffix every row's query adds to its prompt + response (follow-up queries), else None."""
    suffixes = {query_suffix(r["prompt"], r["response"], r["query"]) for r in rows}
    return suffixes.pop() if len(suffixes) == 1 else None


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
        _update_full_ece(full_ece, logits, targets)
        _record_answer_stats(result, logits, targets, rows, batch)
    return result


def _followup_batches(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[dict],
    suffix: str,
    batch_size: int,
    progress: str | None = None,
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """(row indices, collated follow-up batch on the model's device) in length-sorted batches."""
    encoded = [encode_answer(tokenizer, r["prompt"], r["response"]) for r in rows]
    suffix_ids = encode_text(tokenizer, suffix)
    device = _device(model)
    batches = length_sorted_batches([len(e.input_ids) for e in encoded], batch_size)
    for batch in tqdm(batches, desc=progress, unit="batch", disable=progress is None):
        collated = collate_followup([encoded[i] for i in batch], suffix_ids, tokenizer.pad_token_id)
        yield batch, _to_device(collated, device)


@torch.inference_mode()
def followup_confidences(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[dict],
    suffix: str,
    tokens: QueryTokens,
    batch_size: int,
    tuned: bool,
    base_full_ece: Sequence[tuple[float, FullECE]] = (),
    tuned_full_ece: Sequence[tuple[float, FullECE]] = (),
    progress: str | None = None,
) -> dict[str, np.ndarray]:
    """Every model confidence of rows whose query is prompt + response + `suffix`, sharing work.

    Per batch: one base pass over prompt + response gives pavg / seqlogp / pmin, the base
    Full-ECE logits and a KV cache; the suffix on that cache gives base ptrue. Tuned ptrue comes
    from the suffix with the adapter on the same cache for an activated LoRA (its prefix is the
    base model's), else from one adapter pass over the whole query, which also gives the tuned
    answer-token logits. Keys: base/ptrue, base/pavg, base/seqlogp, base/pmin, tuned/ptrue."""
    activated = alora_invocation_tokens(model) is not None
    names = ("base/ptrue", "tuned/ptrue", "pavg", "seqlogp", "pmin")
    result = {name: np.full(len(rows), np.nan) for name in names}
    for batch, collated in _followup_batches(model, tokenizer, rows, suffix, batch_size, progress):
        with base_mode(model):
            (logits, targets, rows_), cache = followup_prefix_pass(model, collated)
            base_last = followup_suffix_logits(model, collated, cache)
        result["base/ptrue"][batch] = query_confidence(base_last, tokens).double().cpu().numpy()
        _record_answer_stats(result, logits, targets, rows_, batch)
        _update_full_ece(base_full_ece, logits, targets)
        if not tuned:
            continue
        if activated:
            tuned_last = followup_suffix_logits(model, collated, cache)
            if tuned_full_ece:  # measured, though the adapter is inactive on prompt + response
                (logits, targets, _), _ = followup_prefix_pass(model, collated, use_cache=False)
        else:
            tuned_last, (logits, targets, _) = followup_full_pass(model, collated)
        result["tuned/ptrue"][batch] = query_confidence(tuned_last, tokens).double().cpu().numpy()
        _update_full_ece(tuned_full_ece, logits, targets)
    out = {"base/ptrue": result["base/ptrue"]}
    out.update({f"base/{name}": result[name] for name in ("pavg", "seqlogp", "pmin")})
    if tuned:
        out["tuned/ptrue"] = result["tuned/ptrue"]
    return out


@torch.inference_mode()
def followup_ptrue(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[dict],
    suffix: str,
    tokens: QueryTokens,
    batch_size: int,
) -> np.ndarray:
    """`model`'s own ptrue (adapter on, if it has one) for follow-up queries, computed exactly
    as `followup_confidences` computes tuned/ptrue (same batches give the same numbers)."""
    activated = alora_invocation_tokens(model) is not None
    confidences = np.full(len(rows), np.nan)
    for batch, collated in _followup_batches(model, tokenizer, rows, suffix, batch_size):
        if activated:
            with base_mode(model):
                _, cache = followup_prefix_pass(model, collated, answer_logits=False)
            last = followup_suffix_logits(model, collated, cache)
        else:
            last, _ = followup_full_pass(model, collated)
        confidences[batch] = query_confidence(last, tokens).double().cpu().numpy()
    return confidences


def _update_full_ece(
    full_ece: Sequence[tuple[float, FullECE]], logits: torch.Tensor, targets: torch.Tensor
) -> None:
    if targets.numel() == 0:
        return
    logits = logits.float()
    for temperature, metric in full_ece:
        metric.update(logits / temperature, targets)


def check_activated_queries(model, tokenizer, suffix: str | None) -> None:
    """An activated LoRA only acts on its invocation tokens: the queries must end in them."""
    invocation = alora_invocation_tokens(model)
    if invocation is None:
        return
    if model.peft_config["default"].task_type != "CAUSAL_LM":
        raise ConfigError(
            "the adapter is an activated LoRA without task_type CAUSAL_LM in its "
            "adapter_config.json, so PEFT would never activate it: set task_type to CAUSAL_LM"
        )
    if suffix is None or encode_text(tokenizer, suffix) != invocation:
        raise ConfigError(
            "the adapter is an activated LoRA (method=alora) whose invocation tokens are not the "
            "suffix of these queries, so it would never act: evaluate a labeled set built with "
            "the same prompt (prompt.query_style=followup and the same followup_template)"
        )


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
