"""The calibration-tuning loss (docs/training.md), as pure functions over logits.

    loss_i = CE([no, yes] query logits_i, correct_i) + beta * mean_t KL(p_base || p_tuned)_it

The KL term is taken over the full vocabulary at every answer token t of example i and averaged
over that example's answer tokens; the batch loss is the sum over examples divided by
`normalizer` (the number of examples in the optimizer step on this process), so gradient
accumulation and data-parallel averaging give the same gradient as one big batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LossTerms:
    """The loss to backpropagate and its two parts (each already divided by the normalizer)."""

    total: torch.Tensor
    ce: torch.Tensor
    kl: torch.Tensor


def soft_binary_cross_entropy(two_way_logits: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """Per-example CE of [no, yes] logits [B, 2] against labels in [0, 1] (soft labels allowed)."""
    log_probs = torch.log_softmax(two_way_logits.float(), dim=-1)
    correct = correct.to(log_probs.dtype)
    return -(correct * log_probs[:, 1] + (1.0 - correct) * log_probs[:, 0])


def token_kl(base_log_probs: torch.Tensor, tuned_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_base || p_tuned) over the full vocabulary for each row: [T, V] x [T, V] -> [T]."""
    tuned_log_probs = torch.log_softmax(tuned_logits.float(), dim=-1)
    base_log_probs = base_log_probs.float()
    return (base_log_probs.exp() * (base_log_probs - tuned_log_probs)).sum(dim=-1)


def per_example_mean(values: torch.Tensor, rows: torch.Tensor, num_examples: int) -> torch.Tensor:
    """Mean of `values` [T] grouped by example index `rows` [T] -> [num_examples] (0 if none)."""
    sums = torch.zeros(num_examples, dtype=values.dtype, device=values.device)
    counts = torch.zeros(num_examples, dtype=values.dtype, device=values.device)
    sums.index_add_(0, rows, values)
    counts.index_add_(0, rows, torch.ones_like(values))
    return sums / counts.clamp(min=1.0)


def calibration_loss(
    two_way_logits: torch.Tensor,
    correct: torch.Tensor,
    normalizer: float,
    beta: float = 0.0,
    tuned_answer_logits: torch.Tensor | None = None,
    base_answer_log_probs: torch.Tensor | None = None,
    answer_rows: torch.Tensor | None = None,
) -> LossTerms:
    """CE on the query tokens plus beta * KL(base || tuned) on the answer tokens, summed over the
    B examples of this micro-batch and divided by `normalizer`."""
    ce = soft_binary_cross_entropy(two_way_logits, correct)
    kl = torch.zeros_like(ce)
    if beta > 0 and tuned_answer_logits is not None and tuned_answer_logits.shape[0] > 0:
        if base_answer_log_probs is None or answer_rows is None:
            raise ValueError("beta > 0 needs base_answer_log_probs and answer_rows")
        kl = per_example_mean(
            token_kl(base_answer_log_probs, tuned_answer_logits), answer_rows, ce.shape[0]
        )
    ce_sum, kl_sum = ce.sum() / normalizer, kl.sum() / normalizer
    return LossTerms(total=ce_sum + beta * kl_sum, ce=ce_sum, kl=kl_sum)
