"""calibtune.metrics: hand-computed values, undefined cases, and agreement with established
implementations (scikit-learn, torchmetrics, relplot) on random inputs to 1e-6."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fixtures.reference import full_ece_reference

from calibtune import metrics
from calibtune.metrics import MetricError

C4 = [0.1, 0.2, 0.9, 0.95]
Y4 = [0, 1, 1, 1]


def test_ece_hand_computed_two_bins():
    # bin [0, .5): conf .15, acc .5 -> gap .35; bin [.5, 1]: conf .925, acc 1 -> gap .075
    assert metrics.ece(C4, Y4, n_bins=2) == pytest.approx(0.5 * 0.35 + 0.5 * 0.075)
    assert metrics.ece(C4, Y4, n_bins=2, norm="l2") == pytest.approx(
        math.sqrt(0.5 * 0.35**2 + 0.5 * 0.075**2)
    )
    assert metrics.ece(C4, Y4, n_bins=2, norm="max") == pytest.approx(0.35)


def test_ece_quantile_bins_group_by_rank():
    c = [0.1, 0.15, 0.2, 0.9]
    y = [0, 0, 1, 1]
    # equal-count bins: {.1, .15} (conf .125, acc 0) and {.2, .9} (conf .55, acc 1)
    assert metrics.ece(c, y, n_bins=2, binning="quantile") == pytest.approx(
        0.5 * 0.125 + 0.5 * 0.45
    )
    # uniform bins put .1 .15 .2 together: conf .15, acc 1/3; .9 alone: gap .1
    assert metrics.ece(c, y, n_bins=2) == pytest.approx(0.75 * (1 / 3 - 0.15) + 0.25 * 0.1)


def test_ece_soft_labels_use_mean_label():
    assert metrics.ece([0.3, 0.5], [0.5, 0.1], n_bins=1) == pytest.approx(abs(0.4 - 0.3))


def test_ece_debiased_subtracts_bin_variance():
    c = [0.2, 0.3, 0.8, 0.9, 0.7]
    y = [0, 1, 1, 1, 0]
    # bin0: n=2 conf .25 acc .5: .0625 - .25/1 ; bin1: n=3 conf .8 acc 2/3: (.8-2/3)^2 - (2/9)/2
    total = 0.4 * (0.0625 - 0.25) + 0.6 * ((0.8 - 2 / 3) ** 2 - (2 / 9) / 2)
    assert metrics.ece(c, y, n_bins=2, norm="l2", debiased=True) == pytest.approx(
        math.sqrt(max(total, 0.0))
    )
    rng = np.random.default_rng(1)
    c = rng.random(4000)
    y = (rng.random(4000) < np.clip(c + 0.2, 0, 1)).astype(float)
    biased = metrics.ece(c, y, norm="l2")
    debiased = metrics.ece(c, y, norm="l2", debiased=True)
    assert 0 < debiased < biased
    with pytest.raises(MetricError, match="l2"):
        metrics.ece(c, y, debiased=True)


def test_brier_nll_hand_computed():
    assert metrics.brier([0.8, 0.4], [1, 0]) == pytest.approx((0.04 + 0.16) / 2)
    assert metrics.nll([0.8, 0.4], [1, 0]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert math.isfinite(metrics.nll([1.0, 0.0], [0, 1]))  # clipped, not inf


def test_brier_decomposition_adds_up():
    rng = np.random.default_rng(2)
    c = rng.random(500)
    y = (rng.random(500) < c).astype(float)
    parts = metrics.brier_decomposition(c, y, n_bins=10)
    assert parts["brier"] == pytest.approx(metrics.brier(c, y))
    assert parts["uncertainty"] == pytest.approx(y.mean() * (1 - y.mean()))
    assert parts["reliability"] == pytest.approx(metrics.ece(c, y, n_bins=10, norm="l2") ** 2)
    recomposed = parts["reliability"] - parts["resolution"] + parts["uncertainty"]
    assert parts["brier"] == pytest.approx(recomposed + parts["within_bin"])
    # confidences constant inside each bin: the decomposition is exact
    step = np.floor(c * 10) / 10 + 0.05  # bin centres
    exact = metrics.brier_decomposition(step, y, n_bins=10)
    assert exact["within_bin"] == pytest.approx(0.0, abs=1e-12)


def test_ranking_metrics_hand_computed():
    c, y = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    assert metrics.auroc(c, y) == pytest.approx(0.75)
    assert metrics.auroc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)  # a tie counts 1/2
    # ranked .8(+) .4(-) .35(+) .1(-): AP = 1/2 * 1 + 1/2 * 2/3
    assert metrics.auprc(c, y) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # answered in order .9 .8 .7 .6 with outcomes 1 0 1 1: risks 0, 1/2, 1/3, 1/4
    c, y = [0.6, 0.9, 0.7, 0.8], [1, 1, 1, 0]
    assert metrics.aurc(c, y) == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    assert metrics.selective_accuracy(c, y, 0.5) == pytest.approx(0.5)
    assert metrics.selective_accuracy(c, y, 0.25) == pytest.approx(1.0)
    assert metrics.selective_accuracy(c, y, 1.0) == pytest.approx(0.75)


def test_undefined_cases_return_none():
    assert metrics.auroc([0.2, 0.9], [1, 1]) is None
    assert metrics.auroc([0.2, 0.9], [0, 0]) is None
    assert metrics.auprc([0.2, 0.9], [0, 0]) is None
    assert metrics.ece([0.2, 0.9], [0, 1], n_bins=15, binning="quantile") is None
    # uniform bins with fewer examples than bins are well defined (empty bins carry no weight)
    assert metrics.ece([0.2, 0.9], [0, 1], n_bins=15) == pytest.approx((0.2 + 0.1) / 2)


@pytest.mark.parametrize(
    ("c", "y", "match"),
    [
        ([0.2, float("nan")], [0, 1], "NaN"),
        ([0.2, 1.3], [0, 1], r"\[0, 1\]"),
        ([-0.1, 0.5], [0, 1], r"\[0, 1\]"),
        ([0.2, 0.5], [0, 2], "outcomes"),
        ([0.2, 0.5], [0], "length"),
        ([], [], "empty"),
    ],
)
def test_invalid_inputs_raise_clear_errors(c, y, match):
    for metric in (metrics.ece, metrics.brier, metrics.auroc, metrics.smooth_ece, metrics.aurc):
        with pytest.raises(MetricError, match=match):
            metric(c, y)


def test_paired_bootstrap_pairs_examples_and_is_seeded():
    rng = np.random.default_rng(3)
    y = (rng.random(300) < 0.5).astype(float)
    good = np.clip(y * 0.6 + 0.2 + rng.normal(0, 0.1, 300), 0, 1)
    noise = rng.random(300)
    same = metrics.paired_bootstrap(metrics.brier, good, good, y, n_boot=200, seed=0)
    assert same["value"] == 0.0 and same["ci95"] == [0.0, 0.0]
    delta = metrics.paired_bootstrap(metrics.auroc, noise, good, y, n_boot=200, seed=5)
    assert delta["value"] == pytest.approx(metrics.auroc(good, y) - metrics.auroc(noise, y))
    assert 0 < delta["ci95"][0] <= delta["value"] <= delta["ci95"][1]
    assert delta == metrics.paired_bootstrap(metrics.auroc, noise, good, y, n_boot=200, seed=5)
    single = metrics.paired_bootstrap(metrics.auroc, good, noise, np.ones(300), n_boot=10)
    assert single["value"] is None and single["reason"]


# -- agreement with established implementations on random inputs


@pytest.fixture(params=[37, 400, 2500])
def random_inputs(request):
    rng = np.random.default_rng(request.param)
    c = rng.beta(2, 1.2, request.param)
    y = (rng.random(request.param) < c**1.5).astype(np.float64)
    return c, y


def test_agrees_with_scikit_learn(random_inputs):
    sk = pytest.importorskip("sklearn.metrics")
    c, y = random_inputs
    for grid in (c, np.round(c, 1)):  # also with many ties
        assert metrics.auroc(grid, y) == pytest.approx(sk.roc_auc_score(y, grid), abs=1e-6)
        assert metrics.auprc(grid, y) == pytest.approx(
            sk.average_precision_score(y, grid), abs=1e-6
        )
    assert metrics.brier(c, y) == pytest.approx(sk.brier_score_loss(y, c), abs=1e-6)
    assert metrics.nll(c, y) == pytest.approx(sk.log_loss(y, c), abs=1e-6)


def test_agrees_with_torchmetrics(random_inputs):
    tm = pytest.importorskip("torchmetrics.functional.classification")
    c, y = random_inputs
    for norm in ("l1", "l2", "max"):
        for n_bins in (10, 15):
            expected = tm.binary_calibration_error(
                torch.tensor(c), torch.tensor(y).long(), n_bins=n_bins, norm=norm
            ).item()
            assert metrics.ece(c, y, n_bins=n_bins, norm=norm) == pytest.approx(expected, abs=1e-6)


def test_agrees_with_relplot(random_inputs):
    relplot = pytest.importorskip("relplot")
    c, y = random_inputs
    assert metrics.smooth_ece(c, y) == pytest.approx(relplot.smECE(c, y), abs=1e-6)
    assert metrics.smooth_ece_at(c, y, 0.05) == pytest.approx(
        relplot.smECE_sigma(c, y, 0.05), abs=1e-6
    )


def test_smooth_ece_is_small_when_calibrated_and_large_when_not():
    rng = np.random.default_rng(7)
    c = rng.random(5000)
    calibrated = (rng.random(5000) < c).astype(float)
    assert metrics.smooth_ece(c, calibrated) < 0.03
    assert metrics.smooth_ece(np.full(5000, 0.9), np.zeros(5000)) > 0.5


# -- FullECE


def test_full_ece_hand_computed():
    full = metrics.FullECE(n_bins=2)
    # p = [.75, .25], target 1: bin1 holds .75 (miss), bin0 holds .25 (hit): |0-.75| + |1-.25|
    full.update(torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([1]))
    assert full.compute() == pytest.approx(1.5)
    assert metrics.FullECE().compute() is None


def test_full_ece_streams_and_matches_references():
    tm = pytest.importorskip("torchmetrics.functional.classification")
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 500, generator=generator) * 4
    targets = torch.randint(0, 500, (300,), generator=generator)
    streamed = metrics.FullECE(chunk_rows=64)
    for part in range(0, 300, 70):
        streamed.update(logits[part : part + 70], targets[part : part + 70])
    whole = metrics.FullECE()
    whole.update(logits.to(torch.bfloat16).float(), targets)
    reference = full_ece_reference(logits.double().numpy(), targets.numpy())
    assert streamed.compute() == pytest.approx(reference, abs=1e-6)
    # Full-ECE is the binary calibration error over all (position, token) pairs, times V
    probs = torch.softmax(logits.double(), -1).flatten()
    onehot = torch.nn.functional.one_hot(targets, 500).flatten()
    binary = tm.binary_calibration_error(probs, onehot, n_bins=15, norm="l1").item()
    assert streamed.compute() == pytest.approx(500 * binary, abs=1e-6)
    assert streamed.confidence_sum.shape == (15,)  # memory independent of positions


def test_full_ece_rejects_bad_shapes():
    with pytest.raises(MetricError, match=r"\[T, V\]"):
        metrics.FullECE().update(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))


def test_auroc_within_averages_qualifying_domains_by_hand():
    # domain a: positives 0.9, 0.3 against negatives 0.8, 0.1 -> 3 of 4 pairs ordered: 0.75
    # domain b: positive 0.2 below both negatives 0.6, 0.4 -> 0.0
    # domain c: positives only -> never used
    c = [0.9, 0.8, 0.3, 0.1, 0.2, 0.6, 0.4, 0.7, 0.5]
    y = [1, 0, 1, 0, 1, 0, 0, 1, 1]
    d = ["a", "a", "a", "a", "b", "b", "b", "c", "c"]
    assert metrics.auroc_within(c, y, d, min_per_class=1) == (pytest.approx(0.375), ["a", "b"])
    assert metrics.auroc_within(c, y, d, min_per_class=2) == (pytest.approx(0.75), ["a"])
    assert metrics.auroc_within(c, y, d, min_per_class=3) == (None, [])
    assert metrics.auroc_within(c, y, d, min_per_class=1, include={"b"}).value == 0.0
    with pytest.raises(MetricError, match="domains"):
        metrics.auroc_within(c, y, d[:-1])


def test_auroc_within_ignores_the_domain_shortcut():
    """Confidence that only tells a right-heavy domain from a wrong-heavy one ranks well pooled
    but at chance within each domain."""
    y = np.array([1] * 40 + [0] * 10 + [1] * 10 + [0] * 40, dtype=float)
    c = np.array([0.8] * 50 + [0.2] * 50)
    d = ["easy"] * 50 + ["hard"] * 50
    assert metrics.auroc(c, y) == pytest.approx(0.8)  # (40*40 + (40*10 + 10*40) / 2) / 50**2
    assert metrics.auroc_within(c, y, d, min_per_class=10) == (0.5, ["easy", "hard"])


def test_cluster_bootstrap_resamples_whole_groups():
    """Each example repeated 3 times as one group: the cluster bootstrap equals the row
    bootstrap of the distinct examples (same seed, same draws), while a row bootstrap of the
    repeated rows is too narrow."""
    rng = np.random.default_rng(7)
    y = (rng.random(120) < 0.4).astype(float)
    a = np.clip(y * 0.3 + 0.3 + rng.normal(0, 0.2, 120), 0, 1)
    b = np.clip(y * 0.5 + 0.2 + rng.normal(0, 0.2, 120), 0, 1)
    rep = np.repeat(np.arange(120), 3)
    groups = [f"g{i:03d}" for i in rep]
    distinct = metrics.paired_bootstrap(metrics.brier, a, b, y, n_boot=300, seed=1)
    cluster = metrics.paired_bootstrap(
        metrics.brier, a[rep], b[rep], y[rep], n_boot=300, seed=1, groups=groups
    )
    rows = metrics.paired_bootstrap(metrics.brier, a[rep], b[rep], y[rep], n_boot=300, seed=1)
    assert cluster["value"] == pytest.approx(distinct["value"])
    assert cluster["ci95"] == pytest.approx(distinct["ci95"])
    assert (cluster["resample"], cluster["n_groups"], rows["resample"]) == ("groups", 120, "rows")
    width = lambda r: r["ci95"][1] - r["ci95"][0]  # noqa: E731
    assert width(rows) < 0.75 * width(cluster)


def test_cluster_bootstrap_of_auroc_within_with_domains_as_covariate():
    rng = np.random.default_rng(2)
    n = 400
    d = np.where(np.arange(n) < n // 2, "easy", "hard")
    y = (rng.random(n) < np.where(d == "easy", 0.7, 0.3)).astype(float)
    base = np.where(d == "easy", 0.7, 0.3)  # domain prior: no ranking within a domain
    tuned = np.clip(base + 0.3 * (y - 0.5) + rng.normal(0, 0.1, n), 0, 1)
    groups = np.arange(n) // 2

    def within(c, y, domains):
        return metrics.auroc_within(c, y, domains, min_per_class=10).value

    delta = metrics.paired_bootstrap(
        within, base, tuned, y, n_boot=200, seed=0, groups=groups, covariates={"domains": d}
    )
    expected = within(tuned, y, d) - within(base, y, d)
    assert within(base, y, d) == 0.5 and delta["value"] == pytest.approx(expected)
    assert 0 < delta["ci95"][0] <= delta["value"] <= delta["ci95"][1]
    assert delta["n_boot"] == 200 and delta["n_groups"] == n // 2
    with pytest.raises(MetricError, match="covariate"):
        metrics.paired_bootstrap(within, base, tuned, y, covariates={"domains": d[:-1]})
