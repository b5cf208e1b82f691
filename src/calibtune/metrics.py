"""Calibration and discrimination metrics (docs/evaluation.md): one definition each, pure functions.

Inputs are confidences `c` in [0, 1] and outcomes `y` in {0, 1} or soft labels in [0, 1].
Invalid inputs (NaN, values outside [0, 1], mismatched or empty arrays) raise `MetricError`
with a message saying what is wrong; a metric that is undefined on valid inputs (AUROC of a
single-class set, quantile bins with fewer examples than bins) returns None, never a number.

This module imports no model or training code: numpy everywhere, torch only for `FullECE`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from typing import NamedTuple

import numpy as np
import torch

from calibtune.errors import CalibtuneError

BINNINGS = ("uniform", "quantile")
NORMS = ("l1", "l2", "max")
LOGIT_EPS = 1e-6  # confidences are clipped to [LOGIT_EPS, 1 - LOGIT_EPS] before a logit


class MetricError(CalibtuneError, ValueError):
    """Metric inputs that no metric can be computed on (NaN, out of range, mismatched)."""


def logit(c: np.ndarray) -> np.ndarray:
    """Log-odds of confidences clipped away from 0 and 1 (NaN stays NaN)."""
    c = np.clip(np.asarray(c, dtype=np.float64), LOGIT_EPS, 1.0 - LOGIT_EPS)
    return np.log(c) - np.log1p(-c)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function, stable for large |z|."""
    return np.exp(-np.logaddexp(0.0, -z))


def as_inputs(c, y) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert confidences and outcomes to float64 1-D arrays of equal length."""
    c = np.asarray(c, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if c.shape != y.shape:
        raise MetricError(f"confidences ({c.size}) and outcomes ({y.size}) differ in length")
    if c.size == 0:
        raise MetricError("no examples: confidences and outcomes are empty")
    for name, values in (("confidences", c), ("outcomes", y)):
        if not np.all(np.isfinite(values)):
            raise MetricError(f"{name} contain {int(np.sum(~np.isfinite(values)))} NaN/inf values")
        if values.min() < 0.0 or values.max() > 1.0:
            raise MetricError(
                f"{name} must lie in [0, 1], got range [{values.min():.6g}, {values.max():.6g}]"
            )
    return c, y


def bin_indices(c: np.ndarray, n_bins: int, binning: str = "uniform") -> np.ndarray | None:
    """Bin index of each confidence: uniform-width bins on [0, 1] or equal-count quantile bins.

    Uniform bins are [0, 1/B), [1/B, 2/B), ..., [(B-1)/B, 1] (1.0 falls in the last bin).
    Quantile bins split the examples sorted by confidence into B groups of (nearly) equal size,
    ties kept together by a stable sort; None when there are fewer examples than bins.
    """
    if n_bins < 1:
        raise MetricError(f"n_bins must be >= 1, got {n_bins}")
    if binning == "uniform":
        return np.minimum((c * n_bins).astype(np.int64), n_bins - 1)
    if binning == "quantile":
        if c.size < n_bins:
            return None
        order = np.argsort(c, kind="stable")
        indices = np.empty(c.size, dtype=np.int64)
        indices[order] = (np.arange(c.size) * n_bins) // c.size
        return indices
    raise MetricError(f"binning must be one of {BINNINGS}, got {binning!r}")


def bin_stats(c: np.ndarray, y: np.ndarray, indices: np.ndarray, n_bins: int):
    """Per-bin counts, mean confidence and mean outcome (means are 0 in empty bins)."""
    counts = np.bincount(indices, minlength=n_bins).astype(np.float64)
    sum_c = np.bincount(indices, weights=c, minlength=n_bins)
    sum_y = np.bincount(indices, weights=y, minlength=n_bins)
    safe = np.maximum(counts, 1.0)
    return counts, sum_c / safe, sum_y / safe


def ece(
    c, y, n_bins: int = 15, binning: str = "uniform", norm: str = "l1", debiased: bool = False
) -> float | None:
    """Binned calibration error of P(correct), bins weighted by their count.

    l1: sum_b w_b |conf_b - acc_b|; l2: sqrt(sum_b w_b (conf_b - acc_b)^2); max: max over
    non-empty bins. `debiased=True` (l2 only) subtracts Kumar et al. 2019's per-bin variance
    acc_b (1 - acc_b) / (n_b - 1) from each squared gap (bins of one example are left
    uncorrected) and clips the total at 0 before the square root. None when quantile binning
    has fewer examples than bins.
    """
    c, y = as_inputs(c, y)
    if norm not in NORMS:
        raise MetricError(f"norm must be one of {NORMS}, got {norm!r}")
    if debiased and norm != "l2":
        raise MetricError("debiased=True is defined for norm='l2' only")
    indices = bin_indices(c, n_bins, binning)
    if indices is None:
        return None
    counts, conf, acc = bin_stats(c, y, indices, n_bins)
    weights = counts / c.size
    gaps = np.abs(conf - acc)
    if norm == "l1":
        return float(np.sum(weights * gaps))
    if norm == "max":
        return float(np.max(gaps[counts > 0]))
    squared = gaps**2
    if debiased:
        many = counts > 1
        squared[many] -= acc[many] * (1.0 - acc[many]) / (counts[many] - 1.0)
        return float(math.sqrt(max(float(np.sum(weights * squared)), 0.0)))
    return float(math.sqrt(np.sum(weights * squared)))


def reliability_bins(c, y, n_bins: int = 15) -> dict[str, list[float]]:
    """Uniform-bin counts, mean confidence and accuracy (the data of a reliability diagram)."""
    c, y = as_inputs(c, y)
    indices = bin_indices(c, n_bins, "uniform")
    counts, conf, acc = bin_stats(c, y, indices, n_bins)
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        "count": counts.tolist(),
        "confidence": conf.tolist(),
        "accuracy": acc.tolist(),
    }


# -- smooth ECE (Błasiok & Nakkiran 2023), following their reference implementation `relplot`:
# residuals are rounded linearly onto a grid, smoothed with a Gaussian kernel reflected at 0 and
# 1, and the bandwidth sigma is the fixed point sigma = smECE_sigma found by bisection.


def _round_to_grid(c: np.ndarray, values: np.ndarray, n_points: int) -> np.ndarray:
    """Spread each value linearly onto the two nearest points of a uniform grid on [0, 1]."""
    grid = np.zeros(n_points)
    low = np.clip((c * (n_points - 1)).astype(np.int64), 0, n_points - 2)
    frac = c * (n_points - 1) - low
    np.add.at(grid, low, (1.0 - frac) * values)
    np.add.at(grid, low + 1, frac * values)
    return grid


def _reflected_gaussian_smooth(c: np.ndarray, values: np.ndarray, sigma: float, at: np.ndarray):
    """Kernel sum of `values` located at `c`, Gaussian reflected at 0 and 1, evaluated at `at`."""
    n_points = max(2000, round(20 / sigma)) // 2 + 1
    grid = _round_to_grid(c, values, n_points)
    t = np.linspace(0.0, 1.0, n_points)
    kernel = np.exp(-((t - 0.5) ** 2) / (2 * sigma**2)) / (math.sqrt(2 * math.pi) * sigma)
    extended = np.concatenate([np.flip(grid)[:-1], grid, np.flip(grid)[1:]])
    start = n_points // 2
    smoothed = np.convolve(extended, kernel, "valid")[start : start + n_points]
    low = np.clip((at * (n_points - 1)).astype(np.int64), 0, n_points - 2)
    frac = (at - low / (n_points - 1)) * (n_points - 1)
    return smoothed[low] * (1 - frac) + smoothed[low + 1] * frac


def smooth_ece_at(c, y, sigma: float) -> float:
    """Smooth ECE at a fixed kernel bandwidth `sigma`."""
    c, y = as_inputs(c, y)
    at = np.linspace(0.0, 1.0, max(round(10 / sigma), 200))
    residual_sum = _reflected_gaussian_smooth(c, c - y, sigma, at)
    density = _reflected_gaussian_smooth(c, np.ones_like(c), sigma, at) + 1e-4
    return float(np.sum(np.abs(residual_sum / density) * density) / np.sum(density))


def smooth_ece(c, y, eps: float = 1e-3) -> float:
    """Kernel-smoothed ECE with the bandwidth chosen as the fixed point sigma = smECE_sigma."""
    c, y = as_inputs(c, y)

    def wide_enough(sigma: float) -> bool:
        return sigma < eps or sigma < smooth_ece_at(c, y, sigma)

    sigma = 1.0
    if not wide_enough(sigma):
        high, low = 1.0, 0.0
        for _ in range(10):
            middle = (high + low) / 2
            if wide_enough(middle):
                low = middle
            else:
                high = middle
        sigma = high
    return smooth_ece_at(c, y, sigma)


# -- proper scores


def brier(c, y) -> float:
    """Mean squared difference between confidence and outcome."""
    c, y = as_inputs(c, y)
    return float(np.mean((c - y) ** 2))


def brier_decomposition(c, y, n_bins: int = 15) -> dict[str, float]:
    """Murphy's decomposition over uniform bins: brier ≈ reliability - resolution + uncertainty.

    reliability = sum_b w_b (conf_b - acc_b)^2 (lower is better), resolution =
    sum_b w_b (acc_b - base_rate)^2 (higher is better), uncertainty = base_rate (1 - base_rate);
    `within_bin` = brier - (reliability - resolution + uncertainty) is the part of the score from
    confidence spread inside bins, and `sharpness` is the variance of the confidences.
    """
    c, y = as_inputs(c, y)
    counts, conf, acc = bin_stats(c, y, bin_indices(c, n_bins, "uniform"), n_bins)
    weights = counts / c.size
    base_rate = float(np.mean(y))
    reliability = float(np.sum(weights * (conf - acc) ** 2))
    resolution = float(np.sum(weights * (acc - base_rate) ** 2))
    uncertainty = base_rate * (1.0 - base_rate)
    score = brier(c, y)
    return {
        "brier": score,
        "reliability": reliability,
        "resolution": resolution,
        "uncertainty": uncertainty,
        "within_bin": score - (reliability - resolution + uncertainty),
        "sharpness": float(np.var(c)),
    }


def nll(c, y, eps: float = float(np.finfo(np.float64).eps)) -> float:
    """Mean negative log-likelihood of the outcomes (binary cross-entropy), c clipped to [eps, 1-eps]."""
    c, y = as_inputs(c, y)
    c = np.clip(c, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(c) + (1.0 - y) * np.log1p(-c)))


# -- ranking metrics (soft labels count as weight y positive and 1 - y negative)


def _grouped_by_confidence(c: np.ndarray, y: np.ndarray):
    """Distinct confidences in decreasing order with the positive and negative weight at each."""
    values, inverse = np.unique(-c, return_inverse=True)
    positive = np.bincount(inverse, weights=y, minlength=values.size)
    negative = np.bincount(inverse, weights=1.0 - y, minlength=values.size)
    return -values, positive, negative


def auroc(c, y) -> float | None:
    """Area under the ROC curve of confidence as a detector of correct answers (ties count 1/2).

    None when the outcomes hold only one class (the area is undefined).
    """
    c, y = as_inputs(c, y)
    _, positive, negative = _grouped_by_confidence(c, y)
    total_pos, total_neg = positive.sum(), negative.sum()
    if total_pos <= 0 or total_neg <= 0:
        return None
    negative_below = total_neg - np.cumsum(negative)
    area = np.sum(positive * (negative_below + 0.5 * negative))
    return float(area / (total_pos * total_neg))


def auprc(c, y) -> float | None:
    """Average precision of confidence as a detector of correct answers (scikit-learn's step rule).

    None when there are no correct answers.
    """
    c, y = as_inputs(c, y)
    _, positive, negative = _grouped_by_confidence(c, y)
    if positive.sum() <= 0:
        return None
    true_pos, false_pos = np.cumsum(positive), np.cumsum(negative)
    precision = true_pos / np.maximum(true_pos + false_pos, 1e-300)
    recall_step = positive / positive.sum()
    return float(np.sum(recall_step * precision))


def risk_coverage_curve(c, y) -> tuple[np.ndarray, np.ndarray]:
    """Coverage and risk (error rate of the answered) when answering at each distinct threshold."""
    c, y = as_inputs(c, y)
    _, positive, negative = _grouped_by_confidence(c, y)
    answered = np.cumsum(positive + negative)
    return answered / c.size, np.cumsum(negative) / answered


def aurc(c, y) -> float:
    """Area under the risk-coverage curve (Geifman et al.): mean risk over the n coverage levels.

    Examples are answered in decreasing confidence; tied examples enter together, so each of the
    k-th coverage levels inside a tie group takes the risk of the whole group.
    """
    coverage, risk = risk_coverage_curve(c, y)
    steps = np.diff(np.concatenate([[0.0], coverage]))
    return float(np.sum(steps * risk))


def selective_accuracy(c, y, coverage: float) -> float:
    """Mean outcome of the ceil(coverage * n) most confident examples (stable order for ties)."""
    if not 0.0 < coverage <= 1.0:
        raise MetricError(f"coverage must be in (0, 1], got {coverage}")
    c, y = as_inputs(c, y)
    keep = max(1, math.ceil(coverage * c.size - 1e-9))
    order = np.argsort(-c, kind="stable")[:keep]
    return float(np.mean(y[order]))


# -- within-domain discrimination


class WithinDomain(NamedTuple):
    """Mean per-domain AUROC and the domains it averages over (sorted)."""

    value: float | None
    domains: list[str]


def auroc_within(
    c, y, domains, min_per_class: int = 30, include: Collection[str] | None = None
) -> WithinDomain:
    """Mean of the per-domain AUROCs over the domains (of `include`, when given) holding at least
    `min_per_class` correct and as many wrong examples (soft labels count their weight); value
    None when no domain qualifies. Unlike pooled AUROC, it does not reward telling domains of
    different accuracy apart."""
    c, y = as_inputs(c, y)
    domains = np.asarray(domains, dtype=object).reshape(-1)
    if domains.size != c.size:
        raise MetricError(f"domains ({domains.size}) and confidences ({c.size}) differ in length")
    used, scores = [], []
    for domain in sorted({str(d) for d in domains}):
        if include is not None and domain not in include:
            continue
        mask = domains.astype(str) == domain
        positive, negative = float(np.sum(y[mask])), float(np.sum(1.0 - y[mask]))
        score = auroc(c[mask], y[mask])
        if min(positive, negative) >= min_per_class and score is not None:
            used.append(domain)
            scores.append(score)
    return WithinDomain(float(np.mean(scores)) if scores else None, used)


# -- paired bootstrap


def resample_indices(
    rng: np.random.Generator, n: int, groups: np.ndarray | None
) -> Callable[[], np.ndarray]:
    """A function drawing one bootstrap resample: n row indices, or whole groups (all rows of
    each drawn group) when `groups` gives each row's cluster."""
    if groups is None:
        return lambda: rng.integers(0, n, size=n)
    _, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    return lambda: np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])


def paired_bootstrap(
    metric: Callable[..., float | None],
    c_a,
    c_b,
    y,
    n_boot: int = 1000,
    seed: int = 0,
    groups=None,
    covariates: dict[str, Sequence] | None = None,
) -> dict:
    """Delta metric(b) - metric(a) and its 95 % percentile interval over paired resamples.

    Both systems are scored on the same resampled example indices. With `groups` (one cluster
    id per example, e.g. the entity group) whole groups are resampled rather than rows, so the
    interval accounts for examples of one entity being alike. `covariates` (name -> one value
    per example, e.g. {"domains": ...}) are resampled with the rows and passed to the metric as
    keyword arguments. Resamples where either metric is undefined (None) are dropped and
    counted; value or interval is None (with a `reason`) when the metric is undefined on the full
    set or on every resample.
    """
    c_a, y = as_inputs(c_a, y)
    c_b, _ = as_inputs(c_b, y)
    extra = {k: np.asarray(v, dtype=object).reshape(-1) for k, v in (covariates or {}).items()}
    for name, values in extra.items():
        if values.size != y.size:
            raise MetricError(f"covariate {name!r} ({values.size}) and outcomes ({y.size}) differ")
    if groups is not None:
        groups = np.asarray([str(g) for g in np.asarray(groups, dtype=object).reshape(-1)])
        if groups.size != y.size:
            raise MetricError(f"groups ({groups.size}) and outcomes ({y.size}) differ in length")

    def score(c: np.ndarray, index: np.ndarray | None = None) -> float | None:
        if index is None:
            return metric(c, y, **extra)
        return metric(c[index], y[index], **{k: v[index] for k, v in extra.items()})

    score_a, score_b = score(c_a), score(c_b)
    resample = "groups" if groups is not None else "rows"
    if score_a is None or score_b is None:
        return {
            "value": None,
            "ci95": None,
            "n_boot": 0,
            "resample": resample,
            "reason": "metric undefined on this set",
        }
    draw = resample_indices(np.random.default_rng(seed), y.size, groups)
    deltas = []
    for _ in range(n_boot):
        index = draw()
        a, b = score(c_a, index), score(c_b, index)
        if a is not None and b is not None:
            deltas.append(b - a)
    result = {
        "value": float(score_b - score_a),
        "ci95": None,
        "n_boot": len(deltas),
        "resample": resample,
    }
    if groups is not None:
        result["n_groups"] = int(np.unique(groups).size)
    if deltas:
        low, high = np.percentile(np.asarray(deltas), [2.5, 97.5])
        result["ci95"] = [float(low), float(high)]
    else:
        result["reason"] = "metric undefined on every resample"
    return result


# -- Full-ECE over next-token distributions (Liu et al. 2024)


def full_ece_sums(
    logits: torch.Tensor,
    targets: torch.Tensor,
    owners: torch.Tensor,
    n_owners: int,
    temperatures: Sequence[float],
    n_bins: int,
    chunk: int = 32,
) -> torch.Tensor:
    """Full-ECE bin sums of positions (logits [T, V], target ids [T]) grouped by owner (a row
    index [T] in [0, n_owners)), at each temperature: [n_owners, len(temperatures), 2, n_bins]
    float64 (confidence sums, hit counts), which add up over positions. At most n_bins entries
    of a position can have p >= 1/n_bins, so only its top n_bins probabilities are binned (the
    same entries at every temperature: one top-k); bin 0 holds the rest, whose mass is 1 per
    position minus the binned entries above bin 0."""
    out = torch.zeros(n_owners, len(temperatures), 2, n_bins, dtype=torch.float64)
    owners = owners.to(logits.device).long()
    targets = targets.to(logits.device).long()
    for start in range(0, targets.numel(), chunk):  # small chunks: no large temporaries
        part = slice(start, start + chunk)
        chunk_logits, chunk_owners = logits[part].float(), owners[part]
        top = chunk_logits.topk(min(n_bins, chunk_logits.shape[-1]), dim=-1, sorted=False).values
        target_logits = chunk_logits.gather(1, targets[part, None]).squeeze(1)
        positions = torch.bincount(chunk_owners, minlength=n_owners).double().cpu()
        for column, t in enumerate(temperatures):
            norm = torch.logsumexp(chunk_logits / t, dim=-1)
            top_p = torch.exp(top / t - norm[:, None])
            target_p = torch.exp(target_logits / t - norm)
            if not (torch.isfinite(top_p).all() and torch.isfinite(target_p).all()):
                raise MetricError("Full-ECE: logits give NaN/inf probabilities")
            index = (chunk_owners[:, None] * n_bins + _bin_of(top_p, n_bins)).flatten()
            weights = top_p.flatten().double()
            sums = torch.bincount(index, weights=weights, minlength=n_owners * n_bins)
            sums = sums.reshape(n_owners, n_bins).cpu()
            sums[:, 0] = positions - sums[:, 1:].sum(dim=1)  # a position's probabilities sum to 1
            hits = torch.bincount(
                chunk_owners * n_bins + _bin_of(target_p, n_bins), minlength=n_owners * n_bins
            )
            out[:, column, 0] += sums
            out[:, column, 1] += hits.reshape(n_owners, n_bins).double().cpu()
    return out


def _bin_of(probs: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Uniform bin index of each probability."""
    return (probs * n_bins).long().clamp_(0, n_bins - 1)


class FullECE:
    """Streaming Full-ECE: every (position, vocabulary entry) is a prediction, binned together.

    FullECE = (1/N) sum_m |sum_{(i,k) in B_m} (1[y_i = k] - p_ik)| with N positions. `update`
    keeps per-bin sums on the logits' device, so memory does not grow with N. At most n_bins
    entries of a row can have p >= 1/n_bins, so only each row's top n_bins probabilities are
    binned; bin 0 holds the rest, whose mass is 1 per row minus the binned entries above bin 0.
    """

    def __init__(self, n_bins: int = 15, chunk_rows: int = 256):
        if n_bins < 1:
            raise MetricError(f"n_bins must be >= 1, got {n_bins}")
        self.n_bins, self.chunk_rows = n_bins, chunk_rows
        self.confidence_sum: torch.Tensor | None = None
        self.hit_count: torch.Tensor | None = None
        self.positions = 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Add positions: logits [T, V] (any float dtype) and target token ids [T]."""
        if logits.dim() != 2 or targets.shape != logits.shape[:1]:
            raise MetricError(
                f"FullECE.update wants logits [T, V] and targets [T], got "
                f"{tuple(logits.shape)} and {tuple(targets.shape)}"
            )
        if self.confidence_sum is None:
            self.confidence_sum = torch.zeros(
                self.n_bins, dtype=torch.float64, device=logits.device
            )
            self.hit_count = torch.zeros(self.n_bins, dtype=torch.float64, device=logits.device)
        targets = targets.to(logits.device).long()
        for start in range(0, logits.shape[0], self.chunk_rows):
            rows = slice(start, start + self.chunk_rows)
            self._update_chunk(logits[rows], targets[rows])
        self.positions += logits.shape[0]

    def _update_chunk(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Accumulate one chunk of rows (see `full_ece_sums`)."""
        owners = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        sums = full_ece_sums(logits, targets, owners, 1, [1.0], self.n_bins)[0, 0]
        self.confidence_sum += sums[0].to(self.confidence_sum.device)
        self.hit_count += sums[1].to(self.hit_count.device)

    def add_sums(
        self, confidence_sum: torch.Tensor, hit_count: torch.Tensor, positions: int
    ) -> None:
        """Add per-bin sums recorded elsewhere (another FullECE's `confidence_sum`, `hit_count`
        and `positions` at the same n_bins): the sums are additive over positions."""
        if confidence_sum.shape != (self.n_bins,) or hit_count.shape != (self.n_bins,):
            raise MetricError(f"FullECE.add_sums wants [{self.n_bins}] sums")
        if self.confidence_sum is None:
            self.confidence_sum = torch.zeros(self.n_bins, dtype=torch.float64)
            self.hit_count = torch.zeros(self.n_bins, dtype=torch.float64)
        self.confidence_sum += confidence_sum.double().to(self.confidence_sum.device)
        self.hit_count += hit_count.double().to(self.hit_count.device)
        self.positions += int(positions)

    def compute(self) -> float | None:
        """Full-ECE of all positions seen so far (None before any update)."""
        if self.positions == 0 or self.confidence_sum is None:
            return None
        gap = (self.hit_count - self.confidence_sum).abs().sum()
        return float(gap / self.positions)
