"""The calibration-tuning loss against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from calibtune.train.loss import (
    calibration_loss,
    per_example_mean,
    soft_binary_cross_entropy,
    token_kl,
)

LN3 = math.log(3.0)


def test_soft_cross_entropy_hand_values():
    logits = torch.tensor([[0.0, 0.0], [0.0, LN3], [0.0, LN3], [0.0, LN3]])  # p_yes: .5 .75 .75 .75
    correct = torch.tensor([1.0, 1.0, 0.0, 0.5])
    expected = [
        math.log(2.0),
        -math.log(0.75),
        -math.log(0.25),
        -(0.5 * math.log(0.75) + 0.5 * math.log(0.25)),
    ]
    assert soft_binary_cross_entropy(logits, correct).tolist() == pytest.approx(expected, rel=1e-6)


def test_token_kl_hand_value_and_zero_for_identical():
    base = torch.log(torch.tensor([[0.5, 0.5], [0.2, 0.8]]))
    tuned = torch.tensor([[0.0, LN3], [math.log(0.2), math.log(0.8)]])  # [.25, .75] and == base
    kl = token_kl(base, tuned)
    assert kl[0].item() == pytest.approx(0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0), rel=1e-6)
    assert kl[1].item() == pytest.approx(0.0, abs=1e-7)


def test_kl_direction_is_base_to_tuned():
    base = torch.log(torch.tensor([[0.9, 0.1]]))
    tuned = torch.log(torch.tensor([[0.5, 0.5]]))
    forward = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert token_kl(base, tuned).item() == pytest.approx(forward, rel=1e-6)


def test_per_example_mean_groups_by_row():
    values = torch.tensor([1.0, 3.0, 5.0])
    rows = torch.tensor([0, 0, 2])
    assert per_example_mean(values, rows, 3).tolist() == [2.0, 0.0, 5.0]


def test_calibration_loss_sums_examples_over_normalizer_and_weights_kl():
    two_way = torch.tensor([[0.0, 0.0], [0.0, LN3]])
    correct = torch.tensor([1.0, 0.0])
    base = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]))
    tuned = torch.tensor([[0.0, LN3], [0.0, 0.0], [0.0, LN3]])  # KL: k, 0 | k
    rows = torch.tensor([0, 0, 1])
    k = 0.5 * math.log(4.0 / 3.0)
    terms = calibration_loss(two_way, correct, 4.0, 2.0, tuned, base, rows)
    ce = (math.log(2.0) - math.log(0.25)) / 4.0
    kl = (k / 2 + k) / 4.0  # example 0: mean(k, 0); example 1: k
    assert terms.ce.item() == pytest.approx(ce, rel=1e-6)
    assert terms.kl.item() == pytest.approx(kl, rel=1e-6)
    assert terms.total.item() == pytest.approx(ce + 2.0 * kl, rel=1e-6)


def test_beta_zero_ignores_answer_terms():
    two_way = torch.tensor([[0.0, 1.0]])
    terms = calibration_loss(two_way, torch.tensor([1.0]), 1.0, beta=0.0)
    assert terms.kl.item() == 0.0
    assert terms.total.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.0))), rel=1e-6)


def test_micro_batches_add_up_to_the_full_batch():
    torch.manual_seed(0)
    two_way = torch.randn(6, 2, requires_grad=True)
    correct = torch.rand(6)
    full = calibration_loss(two_way, correct, 6.0).total
    parts = sum(
        calibration_loss(two_way[i : i + 2], correct[i : i + 2], 6.0).total for i in (0, 2, 4)
    )
    assert parts.item() == pytest.approx(full.item(), rel=1e-6)
