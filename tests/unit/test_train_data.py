"""Batch planning, sharding and collation of the train stage."""

from __future__ import annotations

import random

import torch

from calibtune.models.encoding import EncodedAnswer
from calibtune.train.data import (
    TrainExample,
    collate,
    count_tokens,
    plan_batches,
    shard_and_split,
)


def padding_waste(batches, lengths) -> int:
    return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)


def test_plan_batches_is_deterministic_covers_examples_and_groups_lengths():
    rng = random.Random(1)
    lengths = [rng.randint(10, 300) for _ in range(203)]
    grouped = plan_batches(lengths, 8, seed=3)
    assert grouped == plan_batches(lengths, 8, seed=3)
    assert grouped != plan_batches(lengths, 8, seed=4)
    flat = [i for b in grouped for i in b]
    assert len(flat) == len(set(flat)) == 200  # 25 full batches, the short last one dropped
    plain = plan_batches(lengths, 8, seed=3, group_by_length=False)
    assert all(len(b) == 8 for b in plain)
    assert padding_waste(grouped, lengths) < padding_waste(plain, lengths) / 3


def test_shards_partition_a_global_batch():
    lengths = list(range(10))
    batch = [9, 2, 5, 7, 1, 0, 3, 8]
    shards = [shard_and_split(batch, lengths, r, 2, micro_batch_size=3) for r in (0, 1)]
    seen = sorted(i for shard in shards for micro in shard for i in micro)
    assert seen == sorted(batch)
    assert [len(m) for m in shards[0]] == [3, 1]
    assert shards[0][0] == sorted(batch[0::2], key=lambda j: -j)[:3]


def test_collate_pads_query_left_and_answer_right_and_counts_tokens():
    examples = [
        TrainExample([1, 2, 3], EncodedAnswer([4, 5, 6, 7], answer_start=2), 1.0),
        TrainExample([8], EncodedAnswer([9, 10], answer_start=2), 0.0),  # empty response
    ]
    batch = collate(examples, pad_id=0, with_answers=True)
    assert batch["query"]["input_ids"].tolist() == [[1, 2, 3], [0, 0, 8]]
    assert batch["answer"]["input_ids"].tolist() == [[4, 5, 6, 7]]
    assert batch["answer_rows"].tolist() == [0]
    assert torch.equal(batch["correct"], torch.tensor([1.0, 0.0]))
    assert count_tokens(batch) == 3 + 1 + 4
    assert collate(examples, 0, with_answers=False)["answer"] is None
