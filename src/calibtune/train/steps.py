"""What one training micro-step and one validation pass compute, on any (wrapped) model."""

from __future__ import annotations

import torch
from peft import PeftModel

from calibtune.models.confidence import QueryTokens, query_logits, yes_probability
from calibtune.models.encoding import (
    answer_token_logits,
    followup_full_pass,
    followup_prefix_pass,
    followup_suffix_outputs,
    last_token_logits,
)
from calibtune.train.loss import LossTerms, calibration_loss, soft_binary_cross_entropy


def micro_step_loss(
    model: torch.nn.Module,
    peft_model: PeftModel,
    batch: dict,
    tokens: QueryTokens,
    beta: float,
    normalizer: float,
    activated: bool = False,
    head: torch.nn.Module | None = None,
) -> LossTerms:
    """Loss of one micro-batch, the LM head only at the positions the loss needs.

    `activated` (method=alora): the prompt + response run once through the base model without
    gradients and the query suffix through the adapter on top of that KV cache, which is what
    PEFT's activated LoRA computes, without its per-layer token masks (the adapter is a plain
    LoRA during training; its invocation tokens are written when it is saved). Answers cannot
    change, so there is no KL term. With a `head` (method=alora_head) the confidence is the
    head's [no, yes] logits on the hidden state (model.feature_layer) at the query's last token,
    not the LM's yes/no logits. Otherwise the adapter runs over the whole query and, when
    beta > 0, the answer tokens are also scored with the adapter disabled (same weights): for a
    follow-up query both come from one pass over prompt + response + suffix."""
    followup = batch["followup"]
    if activated:
        with torch.no_grad(), peft_model.disable_adapter():
            _, cache = followup_prefix_pass(peft_model, followup, answer_logits=False)
        layer = head.layer if head is not None else None
        last, hidden = followup_suffix_outputs(model, followup, cache, layer)
        two_way = head.two_way(hidden) if head is not None else query_logits(last, tokens)
        return calibration_loss(two_way, batch["correct"], normalizer)
    if beta <= 0 or (followup is None and batch["answer"] is None):
        last = last_token_logits(model, followup if followup is not None else batch["query"])
        return calibration_loss(query_logits(last, tokens), batch["correct"], normalizer)
    if followup is not None:
        with torch.no_grad(), peft_model.disable_adapter():
            (base_logits, _, _), _ = followup_prefix_pass(peft_model, followup, use_cache=False)
        last, (tuned_logits, _, rows) = followup_full_pass(model, followup)
    else:
        with torch.no_grad(), peft_model.disable_adapter():
            base_logits, _, _ = answer_token_logits(peft_model, batch["answer"])
        last = last_token_logits(model, batch["query"])
        tuned_logits, _, rows = answer_token_logits(model, batch["answer"])
        rows = batch["answer_rows"][rows]
    return calibration_loss(
        query_logits(last, tokens),
        batch["correct"],
        normalizer,
        beta=beta,
        tuned_answer_logits=tuned_logits,
        base_answer_log_probs=torch.log_softmax(base_logits.float(), dim=-1),
        answer_rows=rows,
    )


def validation_metrics(two_way_logits: torch.Tensor, correct: torch.Tensor) -> dict[str, float]:
    """ECE (15 bins), Brier, AUROC of the confidence, and the CE part of the loss, on val."""
    from calibtune import metrics

    confidence = yes_probability(two_way_logits).double().numpy()
    labels = correct.double().numpy()
    return {
        "ece": metrics.ece(confidence, labels, n_bins=15),
        "brier": metrics.brier(confidence, labels),
        "auroc": metrics.auroc(confidence, labels),
        "val_loss": float(soft_binary_cross_entropy(two_way_logits, correct).mean()),
        "mean_confidence": float(confidence.mean()),
    }
