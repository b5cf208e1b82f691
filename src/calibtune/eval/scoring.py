"""Scoring confidences on the test split: every metric with a reason when it is n/a, per-domain
tables, paired deltas and selective prediction at a target risk (thresholds chosen on val)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from calibtune import metrics
from calibtune.metrics import MetricError

UNDEFINED = {
    "auroc": "undefined: test outcomes hold a single class",
    "auprc": "undefined: no correct answers",
    "ece_quantile": "undefined: fewer examples than bins",
}
DELTA_METRICS = ("ece", "brier", "auroc", "nll", "aurc")
WITHIN_METRICS = ("auroc_within", "ece_within", "brier_within")
POINT_DELTA_METRICS = ("smooth_ece",)


def metric_functions(n_bins: int) -> dict[str, Callable]:
    """The metrics reported for every method, by name."""
    return {
        "ece": lambda c, y: metrics.ece(c, y, n_bins=n_bins),
        "ece_quantile": lambda c, y: metrics.ece(c, y, n_bins=n_bins, binning="quantile"),
        "ece_l2_debiased": lambda c, y: metrics.ece(c, y, n_bins=n_bins, norm="l2", debiased=True),
        "smooth_ece": metrics.smooth_ece,
        "brier": metrics.brier,
        "nll": metrics.nll,
        "auroc": metrics.auroc,
        "auprc": metrics.auprc,
        "aurc": metrics.aurc,
    }


def score_method(c: np.ndarray, y: np.ndarray, n_bins: int) -> dict:
    """All metrics of one method; examples without a confidence (NaN) are left out and counted.

    A metric that cannot be computed is None with its reason under `n/a`.
    """
    c, y = np.asarray(c, dtype=np.float64), np.asarray(y, dtype=np.float64)
    present = ~np.isnan(c)
    result: dict = {"n": int(present.sum()), "n_missing": int((~present).sum()), "n/a": {}}
    c, y = c[present], y[present]
    if c.size == 0:
        reason = "no confidences (every example missing or unparseable)"
        result["n/a"] = {"all": reason}
        return {**result, **dict.fromkeys(metric_functions(n_bins)), "reliability": None}
    for name, function in metric_functions(n_bins).items():
        try:
            value = function(c, y)
        except MetricError as err:
            value = None
            result["n/a"][name] = str(err)
        if value is None and name not in result["n/a"]:
            result["n/a"][name] = UNDEFINED.get(name, "undefined")
        result[name] = value
    try:
        result["mean_confidence"] = float(np.mean(c)) if c.size else None
        result["brier_decomposition"] = metrics.brier_decomposition(c, y, n_bins)
        result["reliability"] = metrics.reliability_bins(c, y, n_bins)
    except MetricError as err:
        result["brier_decomposition"] = result["reliability"] = None
        result["n/a"].setdefault("reliability", str(err))
    if not result["n/a"]:
        del result["n/a"]
    return result


def paired_deltas(
    base: np.ndarray,
    tuned: np.ndarray,
    y: np.ndarray,
    n_bins: int,
    n_boot: int,
    seed: int,
    groups: Sequence[str] | None = None,
    domains: Sequence[str] | None = None,
    min_per_class: int = 30,
) -> dict:
    """Tuned-minus-base delta with a 95 % paired-bootstrap interval for each delta metric;
    with `groups` (one cluster id per example) whole groups are resampled, and with `domains`
    the within-domain metrics (`WITHIN_METRICS`) are compared too."""
    functions = metric_functions(n_bins)
    present = ~(np.isnan(base) | np.isnan(tuned))
    kept = None if groups is None else np.asarray(groups, dtype=object)[present]
    deltas = {}
    if domains is not None:
        deltas.update(
            within_deltas(
                base[present],
                tuned[present],
                y[present],
                np.asarray(domains, dtype=object)[present],
                n_bins,
                n_boot,
                seed,
                kept,
                min_per_class,
            )
        )
    for name in DELTA_METRICS:
        try:
            deltas[name] = metrics.paired_bootstrap(
                functions[name], base[present], tuned[present], y[present], n_boot, seed, kept
            )
        except MetricError as err:
            deltas[name] = {"value": None, "ci95": None, "reason": str(err)}
    for name in POINT_DELTA_METRICS:  # too slow to bootstrap: the point delta only
        try:
            a, b = (
                functions[name](base[present], y[present]),
                functions[name](tuned[present], y[present]),
            )
        except MetricError as err:
            a = b = None
            reason = str(err)
        else:
            reason = "point estimate only (not bootstrapped)"
        value = None if a is None or b is None else float(b - a)
        deltas[name] = {"value": value, "ci95": None, "reason": reason}
    return deltas


def within_functions(n_bins: int, used: list[str]) -> dict[str, Callable]:
    """Within-domain metrics over the fixed domain set `used`, as functions of (c, y, domains):
    the mean per-domain AUROC / ECE / Brier (a domain missing from a resample is left out)."""

    def mean_over(metric: Callable) -> Callable:
        def within(c, y, domains) -> float | None:
            values = [
                metric(c[domains == d], y[domains == d]) for d in used if (domains == d).any()
            ]
            values = [v for v in values if v is not None]
            return float(np.mean(values)) if values else None

        return within

    return {
        "auroc_within": lambda c, y, domains: (
            metrics.auroc_within(c, y, domains, min_per_class=1, include=used).value
        ),
        "ece_within": mean_over(lambda c, y: metrics.ece(c, y, n_bins=n_bins)),
        "brier_within": mean_over(metrics.brier),
    }


def within_deltas(
    base: np.ndarray,
    tuned: np.ndarray,
    y: np.ndarray,
    domains: np.ndarray,
    n_bins: int,
    n_boot: int,
    seed: int,
    groups: np.ndarray | None,
    min_per_class: int,
) -> dict:
    """Tuned-minus-base within-domain deltas with 95 % (cluster-)bootstrap intervals, over the
    domains that qualify (`min_per_class` of both classes) on the full set."""
    used = metrics.auroc_within(tuned, y, domains, min_per_class).domains
    if not used:
        reason = f"no domain has >= {min_per_class} test examples of both classes"
        return {name: {"value": None, "ci95": None, "reason": reason} for name in WITHIN_METRICS}
    out = {}
    for name, function in within_functions(n_bins, used).items():
        out[name] = metrics.paired_bootstrap(
            function, base, tuned, y, n_boot, seed, groups, covariates={"domains": domains}
        )
        out[name]["domains"] = used
    return out


def within_domain(
    domains: Sequence[str],
    y: np.ndarray,
    confidences: dict[str, np.ndarray],
    n_bins: int,
    min_per_class: int,
) -> dict:
    """Per method: `WITHIN_METRICS` over the domains with at least `min_per_class` test examples
    of both classes (listed), and every domain's ECE / Brier / AUROC."""
    domains = np.asarray(domains, dtype=object)
    table = per_domain(domains, y, confidences, n_bins)
    out = {}
    for method, c in confidences.items():
        present = ~np.isnan(c)
        used = metrics.WithinDomain(None, [])
        if present.any():
            used = metrics.auroc_within(c[present], y[present], domains[present], min_per_class)
        functions = within_functions(n_bins, used.domains)
        entry: dict = {
            name: (fn(c[present], y[present], domains[present]) if used.domains else None)
            for name, fn in functions.items()
        }
        if not used.domains:
            reason = f"no domain has >= {min_per_class} test examples of both classes"
            entry["n/a"] = dict.fromkeys(WITHIN_METRICS, reason)
        entry["domains"] = used.domains
        entry["per_domain"] = {d: row["methods"][method] for d, row in table.items()}
        out[method] = entry
    return out


def val_auroc(c: np.ndarray, y: np.ndarray) -> float | None:
    """AUROC over the examples that have a confidence (None when undefined)."""
    present = ~np.isnan(c)
    try:
        return metrics.auroc(c[present], y[present]) if present.any() else None
    except MetricError:
        return None


def best_baseline_on_val(
    val: dict[str, np.ndarray], y_val: np.ndarray, test: dict[str, np.ndarray]
) -> tuple[str | None, dict[str, float | None]]:
    """The baseline (a method on both val and test, not the tuned model's, not fitted on val:
    a `+recalibrator` method's val AUROC is in-sample) with the highest val AUROC, and every
    candidate's val AUROC."""
    candidates = sorted(m for m in val if m in test and not m.startswith("tuned/") and "+" not in m)
    scores = {m: val_auroc(np.asarray(val[m], dtype=np.float64), y_val) for m in candidates}
    defined = [(v, m) for m, v in scores.items() if v is not None]
    return (max(defined)[1] if defined else None), scores


def deltas_vs_best_baseline(
    val: dict[str, np.ndarray],
    y_val: np.ndarray,
    test: dict[str, np.ndarray],
    y_test: np.ndarray,
    settings: dict,
) -> dict:
    """Tuned ptrue minus the baseline best on val (by val AUROC) on test: pooled and
    within-domain deltas with 95 % cluster-bootstrap intervals. `settings` holds paired_deltas'
    keyword arguments (n_bins, n_boot, seed, groups, domains, min_per_class)."""
    baseline, scores = best_baseline_on_val(val, y_val, test)
    out = {"selected_by": "val auroc", "baseline": baseline, "val_auroc": scores}
    if baseline is None or "tuned/ptrue" not in test:
        reason = "no tuned model" if baseline else "no baseline has a defined val AUROC"
        return {**out, "deltas": no_deltas(reason)}
    out["deltas"] = paired_deltas(test[baseline], test["tuned/ptrue"], y_test, **settings)
    return out


def add_within(methods: dict, within: dict) -> None:
    """Put each method's within-domain figures beside its pooled ones in `methods`."""
    for method, entry in within.items():
        methods[method].update({name: entry[name] for name in WITHIN_METRICS})
        if entry.get("n/a"):
            methods[method].setdefault("n/a", {}).update(entry["n/a"])


def no_deltas(reason: str) -> dict:
    """The deltas block when there is nothing to compare (e.g. no adapter)."""
    names = DELTA_METRICS + POINT_DELTA_METRICS + WITHIN_METRICS
    return {name: {"value": None, "ci95": None, "reason": reason} for name in names}


def per_domain(
    domains: Sequence[str], y: np.ndarray, confidences: dict[str, np.ndarray], n_bins: int
) -> dict:
    """Per-domain n, accuracy and, per method, ECE / Brier / AUROC (None with reason when n/a)."""
    table = {}
    domains = np.asarray(domains)
    for domain in sorted(set(domains.tolist())):
        index = domains == domain
        entry = {"n": int(index.sum()), "accuracy": float(np.mean(y[index])), "methods": {}}
        for method, c in confidences.items():
            scores = score_method(c[index], y[index], n_bins)
            entry["methods"][method] = {
                key: scores.get(key) for key in ("ece", "brier", "auroc", "n")
            }
            if scores.get("n/a"):
                entry["methods"][method]["n/a"] = scores["n/a"]
        table[domain] = entry
    return table


def worst_domain(table: dict, method: str) -> dict | None:
    """The domain with the highest ECE for `method`, or None when no domain has one."""
    scored = [
        (entry["methods"][method]["ece"], domain)
        for domain, entry in table.items()
        if method in entry["methods"] and entry["methods"][method]["ece"] is not None
    ]
    if not scored:
        return None
    ece, domain = max(scored)
    return {"domain": domain, "ece": ece, "n": table[domain]["n"]}


def threshold_for_risk(c: np.ndarray, y: np.ndarray, target_risk: float) -> float | None:
    """Lowest confidence threshold whose answered set (c >= t) has risk <= target on val.

    None when no threshold reaches the target (then every example is escalated)."""
    present = ~np.isnan(c)
    c, y = c[present], y[present]
    if c.size == 0:
        return None
    order = np.argsort(-c, kind="stable")
    sorted_c, errors = c[order], np.cumsum(1.0 - y[order])
    risk = errors / np.arange(1, c.size + 1)
    # only thresholds at the end of a tie group are realisable
    group_end = np.append(sorted_c[1:] != sorted_c[:-1], True)
    ok = np.nonzero(group_end & (risk <= target_risk + 1e-12))[0]
    return float(sorted_c[ok[-1]]) if ok.size else None


def selective_at_threshold(c: np.ndarray, y: np.ndarray, threshold: float | None) -> dict:
    """Coverage, risk of the answered and escalation rate when answering where c >= threshold."""
    answered = np.zeros(c.size, dtype=bool) if threshold is None else (c >= threshold)
    answered &= ~np.isnan(c)
    coverage = float(np.mean(answered))
    risk = float(np.mean(1.0 - y[answered])) if answered.any() else None
    return {
        "threshold": threshold,
        "coverage": coverage,
        "risk": risk,
        "escalation_rate": 1.0 - coverage,
        "n_answered": int(answered.sum()),
    }


def risk_coverage(c: np.ndarray, y: np.ndarray) -> dict[str, list[float]] | None:
    """The risk-coverage curve of a method (None when it has no confidences)."""
    present = ~np.isnan(c)
    try:
        coverage, risk = metrics.risk_coverage_curve(c[present], y[present])
    except MetricError:
        return None
    return {"coverage": coverage.tolist(), "risk": risk.tolist()}


def mean_domain_ece(c: np.ndarray, y: np.ndarray, domains: np.ndarray, n_bins: int) -> float:
    """Unweighted mean over domains of each domain's ECE (`metrics.ece`)."""
    return float(
        np.mean([metrics.ece(c[domains == d], y[domains == d], n_bins) for d in np.unique(domains)])
    )


def calibrated_floor(
    c: np.ndarray, domains: np.ndarray, n_bins: int, rng: np.random.Generator, draws: int = 200
) -> dict:
    """The mean per-domain ECE that a perfectly calibrated confidence with these values would
    show on these rows (outcomes drawn as Bernoulli(c), `draws` times): binned ECE of a few
    dozen rows a domain is far above 0 by sampling noise alone, so a map can only lower the
    observed figure down to about this floor."""
    values = [
        mean_domain_ece(c, (rng.random(c.size) < c).astype(np.float64), domains, n_bins)
        for _ in range(draws)
    ]
    return {"mean": float(np.mean(values)), "sd": float(np.std(values)), "draws": draws}


def grouped_indices(domains: np.ndarray, groups: np.ndarray) -> list[list[np.ndarray]]:
    """Per domain, the row indices of each group (e.g. a question and its phrasings)."""
    out = []
    for domain in sorted(set(domains.tolist())):
        rows = np.nonzero(domains == domain)[0]
        by_group: dict[str, list[int]] = {}
        for i in rows:
            by_group.setdefault(str(groups[i]), []).append(int(i))
        out.append([np.asarray(v) for v in by_group.values()])
    return out


def domain_calibration_scores(
    c_global: np.ndarray,
    c_domain: np.ndarray,
    y: np.ndarray,
    domains: Sequence[str],
    n_bins: int,
    n_boot: int,
    seed: int,
    groups: Sequence[str] | None = None,
) -> dict:
    """Global vs per-domain calibrator on test: pooled ECE/Brier, per-domain ECE, and the mean
    per-domain ECE of each with 95 % intervals from a paired bootstrap over groups (entities or
    questions, when `groups` gives each row's group; else rows) within each domain, and its
    floor (`calibrated_floor`: what each map's confidences would show if they were calibrated)."""
    domains = np.asarray([str(d) for d in domains])
    resampled = "rows" if groups is None else "groups within each domain"
    groups = np.arange(domains.size) if groups is None else np.asarray([str(g) for g in groups])
    table = {}
    for domain in sorted(set(domains.tolist())):
        index = domains == domain
        table[domain] = {
            "n": int(index.sum()),
            "accuracy": float(np.mean(y[index])),
            "global_ece": metrics.ece(c_global[index], y[index], n_bins),
            "per_domain_ece": metrics.ece(c_domain[index], y[index], n_bins),
        }
    rng = np.random.default_rng(seed)
    strata = grouped_indices(domains, groups)
    boot = []
    for _ in range(n_boot):
        index = np.concatenate(
            [np.concatenate([s[j] for j in rng.integers(0, len(s), len(s))]) for s in strata]
        )
        boot.append(
            [
                mean_domain_ece(c[index], y[index], domains[index], n_bins)
                for c in (c_global, c_domain)
            ]
        )
    boot = np.asarray(boot).reshape(-1, 2)
    point = [mean_domain_ece(c, y, domains, n_bins) for c in (c_global, c_domain)]

    def interval(value: float, values: np.ndarray) -> list[float] | None:
        """Basic (reverse-percentile) bootstrap interval: binned ECE is biased upward on
        resamples (duplicated rows), so plain percentiles can miss the point estimate."""
        if not values.size:
            return None
        low, high = np.percentile(values, [2.5, 97.5])
        return [float(2 * value - high), float(2 * value - low)]

    return {
        "pooled": {
            name: {"ece": metrics.ece(c, y, n_bins), "brier": metrics.brier(c, y)}
            for name, c in (("global", c_global), ("per_domain", c_domain))
        },
        "mean_domain_ece": {
            "global": {"value": point[0], "ci95": interval(point[0], boot[:, 0])},
            "per_domain": {"value": point[1], "ci95": interval(point[1], boot[:, 1])},
            "delta": {
                "value": point[1] - point[0],
                "ci95": interval(point[1] - point[0], boot[:, 1] - boot[:, 0]),
            },
            "interval": "basic bootstrap",
            "n_boot": int(n_boot),
            "resampled": resampled,
            "floor": {
                "global": calibrated_floor(c_global, domains, n_bins, rng),
                "per_domain": calibrated_floor(c_domain, domains, n_bins, rng),
            },
        },
        "domains": table,
    }
