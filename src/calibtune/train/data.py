"""Training data: tokenize labeled examples once, plan length-grouped batches, and collate
dynamically padded micro-batches.

Follow-up queries (`prompt.query_style=followup`: the query is prompt + response + a fixed
suffix) collate into one left-padded batch whose first `prefix_width` columns are the answer
(`followup`); other queries collate as separate query rows (left-padded) and answer rows
(right-padded)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from calibtune.models.confidence import common_suffix_ids, encode_query
from calibtune.models.encoding import (
    EncodedAnswer,
    collate_answers,
    collate_followup,
    pad_sequences,
)

MEGABATCH_FACTOR = 50  # like transformers' LengthGroupedSampler: sort within 50 batches


@dataclass(frozen=True)
class TrainExample:
    """One tokenized labeled example: the query, the answer (prompt + response) and its label.
    A follow-up query has `suffix_ids` and query_ids = answer.input_ids + suffix_ids."""

    query_ids: list[int]
    answer: EncodedAnswer
    correct: float
    suffix_ids: tuple[int, ...] | None = None

    @property
    def num_tokens(self) -> int:
        """Tokens this example puts through the model (query + prompt + response)."""
        return len(self.query_ids) + len(self.answer.input_ids)


def tokenize_examples(
    tokenizer: PreTrainedTokenizerBase, rows: Sequence[dict], with_answers: bool = True
) -> list[TrainExample]:
    """Encode each labeled row's query and (for a follow-up query, or when the KL term needs it)
    prompt + response."""
    examples = []
    for row in rows:
        query = encode_query(tokenizer, row, with_answer=with_answers)
        examples.append(
            TrainExample(query.query_ids, query.answer, float(row["correct"]), query.suffix_ids)
        )
    return examples


def plan_batches(
    lengths: Sequence[int], batch_size: int, seed: int, group_by_length: bool = True
) -> list[list[int]]:
    """Global batches of example indices for one epoch, deterministic in `seed`.

    With `group_by_length`, indices are shuffled, cut into mega-batches of 50 batches, each
    sorted by length (longest first) and cut into batches, and the batch order is shuffled;
    a last short batch is dropped so every step has the same number of examples."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        mega = batch_size * MEGABATCH_FACTOR
        chunks = [order[i : i + mega] for i in range(0, len(order), mega)]
        order = [i for chunk in chunks for i in sorted(chunk, key=lambda j: -lengths[j])]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches = [b for b in batches if len(b) == batch_size]
    if group_by_length:
        rng.shuffle(batches)
    return batches


def shard_and_split(
    batch: Sequence[int],
    lengths: Sequence[int],
    rank: int,
    world_size: int,
    micro_batch_size: int,
) -> list[list[int]]:
    """This process's share of a global batch (every world_size-th example), cut into
    micro-batches of similar length."""
    mine = sorted(batch[rank::world_size], key=lambda j: -lengths[j])
    return [mine[i : i + micro_batch_size] for i in range(0, len(mine), micro_batch_size)]


def collate(examples: Sequence[TrainExample], pad_id: int, with_answers: bool) -> dict:
    """Tensors for one micro-batch and `correct`: follow-up queries with a shared suffix as one
    `followup` batch; else `query` (left-padded) and `answer` (right-padded with answer_mask,
    only rows that have a response)."""
    batch = {
        "followup": None,
        "query": None,
        "correct": torch.tensor([e.correct for e in examples], dtype=torch.float32),
        "answer": None,
        "answer_rows": None,
    }
    suffix = common_suffix_ids(examples)
    if suffix is not None:
        batch["followup"] = collate_followup([e.answer for e in examples], suffix, pad_id)
        batch["count_answers"] = with_answers
        return batch
    batch["query"] = pad_sequences([e.query_ids for e in examples], pad_id, side="left")
    if with_answers:
        rows = [
            i for i, e in enumerate(examples) if len(e.answer.input_ids) > e.answer.answer_start
        ]
        if rows:
            batch["answer"] = collate_answers([examples[i].answer for i in rows], pad_id)
            batch["answer_rows"] = torch.tensor(rows, dtype=torch.long)
    return batch


def count_tokens(batch: dict) -> int:
    """Non-padding tokens of a micro-batch's query sequences, plus its answer sequences when the
    KL term uses them (a follow-up query's prompt + response then counts twice), so the count
    does not depend on the query style."""
    if batch["followup"] is not None:
        mask = batch["followup"]["attention_mask"]
        answers = mask[:, : int(batch["followup"]["prefix_width"])].sum()
        return int(mask.sum() + (answers if batch["count_answers"] else 0))
    total = int(batch["query"]["attention_mask"].sum())
    if batch["answer"] is not None:
        total += int(batch["answer"]["attention_mask"].sum())
    return total


def to_device(batch: dict, device: torch.device) -> dict:
    """Move every tensor of a (nested) batch to `device`."""
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch.to(device) if isinstance(batch, torch.Tensor) else batch
