"""What one training micro-step and one validation pass compute, on any (wrapped) model."""

from __future__ import annotations

import torch
from peft import PeftModel

from calibtune.models.encoding import answer_token_logits, last_token_logits, pad_sequences
from calibtune.models.prompts import QueryTokens, query_logits
from calibtune.train.loss import LossTerms, calibration_loss, soft_binary_cross_entropy


def micro_step_loss(
    model: torch.nn.Module,
    peft_model: PeftModel,
    batch: dict,
    tokens: QueryTokens,
    beta: float,
    normalizer: float,
) -> LossTerms:
    """Loss of one micro-batch: LM head at the query's last position only, and (beta > 0) the
    answer span twice, once with the adapter and once with it disabled (same weights)."""
    two_way = query_logits(last_token_logits(model, batch["query"]), tokens)
    if beta <= 0 or batch["answer"] is None:
        return calibration_loss(two_way, batch["correct"], normalizer)
    with torch.no_grad(), peft_model.disable_adapter():
        base_logits, _, _ = answer_token_logits(peft_model, batch["answer"])
        base_log_probs = torch.log_softmax(base_logits.float(), dim=-1)
    tuned_logits, _, rows = answer_token_logits(model, batch["answer"])
    return calibration_loss(
        two_way,
        batch["correct"],
        normalizer,
        beta=beta,
        tuned_answer_logits=tuned_logits,
        base_answer_log_probs=base_log_probs,
        answer_rows=batch["answer_rows"][rows],
    )


@torch.no_grad()
def query_confidences(
    model: torch.nn.Module,
    query_ids: list[list[int]],
    tokens: QueryTokens,
    pad_id: int,
    batch_size: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-way [no, yes] logits [N, 2] and confidences P(yes|yes or no) [N] for each query,
    in batches sorted by length (returned in the input order)."""
    order = sorted(range(len(query_ids)), key=lambda i: -len(query_ids[i]))
    logits = torch.empty(len(query_ids), 2)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = pad_sequences([query_ids[i] for i in chunk], pad_id, side="left")
        batch = {k: v.to(device) for k, v in batch.items()}
        logits[chunk] = query_logits(last_token_logits(model, batch), tokens).float().cpu()
    return logits, torch.softmax(logits, dim=-1)[:, 1]


def validation_metrics(two_way_logits: torch.Tensor, correct: torch.Tensor) -> dict[str, float]:
    """ECE (15 bins), Brier, AUROC of the confidence, and the CE part of the loss, on val."""
    from calibtune import metrics

    confidence = torch.softmax(two_way_logits.float(), dim=-1)[:, 1].double().numpy()
    labels = correct.double().numpy()
    return {
        "ece": metrics.ece(confidence, labels, n_bins=15),
        "brier": metrics.brier(confidence, labels),
        "auroc": metrics.auroc(confidence, labels),
        "val_loss": float(soft_binary_cross_entropy(two_way_logits, correct).mean()),
        "mean_confidence": float(confidence.mean()),
    }
