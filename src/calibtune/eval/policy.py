"""A three-way decision policy on calibrated confidence: answer / retrieve / escalate.

    c >= answer_threshold                      -> answer (the model's answer is returned)
    escalate_threshold <= c < answer_threshold -> retrieve (consult a source / tool / clarify)
    c < escalate_threshold                     -> escalate (a human takes over)

Both thresholds come from Learn-then-Test (Angelopoulos et al. 2021) on val: candidate
thresholds are tested from the highest down (fixed-sequence testing, so no multiplicity
correction inside a sequence), each null "the error rate of the items at or above t exceeds the
target", and the lowest threshold before the first non-rejection is kept. The sequence starts
at the first threshold with at least `start_count(target, delta, n_val)` val items above it (the
top START_FRACTION of val, and at least twice the count at which an error-free set is
certified): a rule on confidences only, not on outcomes, so skipping the sparse top keeps the
test valid while one early error among a handful of items cannot end the sequence. The answer threshold
uses `answer_risk`, the escalation threshold `escalate_risk` (the error rate of the model's own
answer above which an item goes to a human rather than to retrieval); each sequence gets
delta / 2, so both hold together with probability >= 1 - delta.

p-values: with `batch_size` (the number of future items the guarantee is about, e.g. the test
split), the guarantee is on the *realised* error rate of those items: under exchangeability of
val and future items, given n val items above t with k errors and n' = n * batch / n_val future
ones, the val error count is hypergeometric, and p = P(X <= k) at the smallest error total that
violates the target (a permutation argument, exact for that n'). Without it (null), the
guarantee is on the population risk: p = P(Binomial(n, target) <= k).

Both p-values treat val rows as independent. When rows come in clusters that share their outcome
(paraphrases of a question, questions about one entity), `groups` makes the clusters the units:
each group's loss e_g - target * a_g (errors and answered items above t), scaled by the largest
val group into [0, 1], and a betting test of "mean loss > 0" over the groups (`betting_p_value`).
Its guarantee is on the population risk (batch_size is not used); it needs many groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from calibtune.errors import ConfigError
from calibtune.metrics import as_inputs

ACTIONS = ("answer", "retrieve", "escalate")
START_FRACTION = 0.1
RISK_GRID = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)  # certifiable_risks
BETTING_ORDERS = 16  # unit orders averaged by betting_p_value (fixed seed: outcome-free)


def risk_p_values(n, k, target: float, n_future=None) -> np.ndarray:
    """p-values of 'error rate above target' given k errors among n val items above thresholds
    (arrays; n_future: the future items above each threshold, None for population risk)."""
    n, k = np.asarray(n, dtype=np.int64), np.asarray(k, dtype=np.int64)
    if n_future is None:
        return stats.binom.cdf(k, n, target)
    n_future = np.maximum(np.asarray(n_future, dtype=np.int64), 1)
    errors_total = k + np.floor(target * n_future).astype(np.int64) + 1  # smallest violating total
    p = stats.hypergeom.cdf(k, n + n_future, np.minimum(errors_total, n + n_future), n)
    return np.where(errors_total > n + n_future, 0.0, p)


def betting_p_value(x: np.ndarray, target: float, delta: float) -> float:
    """p-value of 'E[x] >= target' for independent units x in [0, 1]: 1 / the mean final wealth
    of a betting test over BETTING_ORDERS fixed orders of the units (Waudby-Smith & Ramdas 2024,
    with the predictable bets of Bates et al. 2021, RCPS); wealth is a nonnegative supermartingale
    under the null and a mean of e-values is an e-value, so P(p <= delta) <= delta. Written here:
    no maintained library on our lock has it (confseq needs a C++ build); it is 15 lines."""
    n = x.size
    steps = np.arange(1, n + 1) + 1.0
    wealth = []
    for order in np.random.default_rng(0).permuted(
        np.tile(np.arange(n), (BETTING_ORDERS, 1)), axis=1
    ):
        xs = x[order]
        mean = (0.5 + np.cumsum(xs)) / steps
        var = (0.25 + np.cumsum((xs - mean) ** 2)) / steps
        previous_var = np.concatenate([[0.25], var[:-1]])
        bets = np.minimum(1.0, np.sqrt(2.0 * np.log(1.0 / delta) / (n * previous_var)))
        wealth.append(np.prod(1.0 - bets * (xs - target)))
    return float(min(1.0, 1.0 / np.mean(wealth)))


def group_p_values(answered_rows, errors, groups, target: float, delta: float) -> np.ndarray:
    """Group-level p-values for the candidate answered sets (`answered_rows`: one array of row
    indices per candidate, nested, largest last), computed until the first exceeds delta (the
    fixed sequence stops there): each group's loss e_g - target * a_g scaled by the largest group
    into [0, 1] (mean <= target iff the row-level risk <= target), tested by betting."""
    units = np.unique(groups, return_inverse=True)[1]
    sizes = np.bincount(units)
    p_values = []
    for rows in answered_rows:
        answered = np.bincount(units[rows], minlength=sizes.size)
        wrong = np.bincount(units[rows], weights=errors[rows], minlength=sizes.size)
        x = (wrong - target * answered) / sizes.max() + target
        p_values.append(betting_p_value(x, target, delta))
        if p_values[-1] > delta:
            break
    return np.asarray(p_values)


def start_count(target: float, delta: float, n_val: int) -> int:
    """Val items above the first tested threshold (depends on counts only, never on outcomes)."""
    return max(int(np.ceil(2 * np.log(delta) / np.log1p(-target))), round(START_FRACTION * n_val))


def ltt_threshold(
    c, y, target: float, delta: float, batch_size: int | None = None, groups=None
) -> dict:
    """Lowest threshold whose answered set keeps error <= target w.p. >= 1 - delta (fixed sequence;
    `groups`: p-values over the groups of rows, for the population risk).

    Returns the threshold (None: no threshold certified, so nothing passes), the val count and
    error rate above it, and the p-value that certified it."""
    if not 0.0 < target < 1.0 or not 0.0 < delta < 1.0:
        raise ConfigError(f"policy risks and delta must lie in (0, 1), got {target}, {delta}")
    c, y = as_inputs(c, y)
    order = np.argsort(-c, kind="stable")
    sorted_c, errors = c[order], np.cumsum(1.0 - y[order])
    group_end = np.append(sorted_c[1:] != sorted_c[:-1], True)  # realisable thresholds only
    result: dict = {"threshold": None, "n_val_above": 0, "val_risk_above": None, "p_value": None}
    ends = np.nonzero(group_end)[0]
    ends = ends[ends + 1 >= start_count(target, delta, c.size)]
    n, k = ends + 1, errors[ends].astype(np.int64)
    if groups is None:
        n_future = None if batch_size is None else np.rint(n * batch_size / c.size)
        p = risk_p_values(n, k, target, n_future)
    else:
        rows = [order[: end + 1] for end in ends]
        p = group_p_values(rows, 1.0 - y, np.asarray(groups), target, delta)
    failed = np.nonzero(p > delta)[0]
    last = (failed[0] if failed.size else p.size) - 1  # fixed sequence: stop at first failure
    if last >= 0:
        result = {
            "threshold": float(sorted_c[ends[last]]),
            "n_val_above": int(n[last]),
            "val_risk_above": float(k[last] / n[last]),
            "p_value": float(p[last]),
        }
    return result


def fit_thresholds(
    c, y, answer_risk: float, escalate_risk: float, delta: float, batch_size, groups=None
):
    """Answer and escalation thresholds (delta / 2 each); escalate <= answer always."""
    if escalate_risk <= answer_risk:
        raise ConfigError(
            f"policy.escalate_risk ({escalate_risk}) must exceed policy.answer_risk ({answer_risk})"
        )
    answer = ltt_threshold(c, y, answer_risk, delta / 2, batch_size, groups)
    escalate = ltt_threshold(c, y, escalate_risk, delta / 2, batch_size, groups)
    t_answer = answer["threshold"]
    t_escalate = escalate["threshold"]
    if t_answer is not None and (t_escalate is None or t_escalate > t_answer):
        t_escalate = t_answer
    return {
        "answer_threshold": t_answer,
        "escalate_threshold": t_escalate,
        "answer_fit": answer,
        "escalate_fit": escalate,
    }


def certifiable_risks(
    c, y, delta: float, batch_size: int | None, c_test, y_test, groups=None
) -> list[dict]:
    """Which answer risks this confidence can promise at all: for each target of RISK_GRID, the
    answer threshold Learn-then-Test certifies on val (at delta / 2, as in fit_thresholds), its
    val share, and on test the share answered and their realised error rate. A diagnostic for
    choosing `answer_risk`: each guarantee is for a target fixed before the val data are seen,
    so a target picked from this list is refitted on new val data for its promise to hold."""
    c_test, y_test = as_inputs(c_test, y_test)
    rows = []
    for target in RISK_GRID:
        fit = ltt_threshold(c, y, target, delta / 2, batch_size, groups)
        answered = c_test >= (np.inf if fit["threshold"] is None else fit["threshold"])
        rows.append(
            {
                "answer_risk": target,
                "threshold": fit["threshold"],
                "val_share": fit["n_val_above"] / len(c),
                "test": proportion(int(answered.sum()), int(c_test.size)),
                "test_answered_risk": proportion(
                    int((y_test[answered] < 0.5).sum()), int(answered.sum())
                ),
            }
        )
    return rows


def fit_policy(
    c,
    y,
    domains: Sequence[str] | None,
    *,
    answer_risk: float,
    escalate_risk: float,
    delta: float,
    batch_size: int | None,
    per_domain: bool = False,
    min_count: int = 100,
    groups: Sequence[str] | None = None,
) -> dict:
    """The policy's plain params: global thresholds, and per-domain ones when asked (domains with
    fewer than `min_count` val items use the global thresholds). With `groups`, the p-values take
    the groups as units (population risk: batch_size is then not used)."""
    c, y = as_inputs(c, y)
    if groups is not None:
        groups, batch_size = np.asarray([str(g) for g in groups]), None
    policy = {
        "kind": "ltt_three_way",
        "answer_risk": float(answer_risk),
        "escalate_risk": float(escalate_risk),
        "delta": float(delta),
        "unit": "row" if groups is None else "group",
        "batch_size": batch_size,
        "n_val": int(c.size),
        **fit_thresholds(c, y, answer_risk, escalate_risk, delta, batch_size, groups),
        "domains": {},
    }
    if per_domain and domains is not None:
        domains = np.asarray([str(d) for d in domains])
        for domain in sorted(set(domains.tolist())):
            index = domains == domain
            if index.sum() < min_count:
                continue
            share = None if batch_size is None else round(batch_size * index.mean())
            policy["domains"][domain] = fit_thresholds(
                c[index],
                y[index],
                answer_risk,
                escalate_risk,
                delta,
                share,
                None if groups is None else groups[index],
            )
    return policy


def thresholds_for(policy: dict, domain: str | None) -> tuple[float, float]:
    """(answer, escalate) thresholds for a domain; None thresholds become +inf (never passes)."""
    entry = policy.get("domains", {}).get(str(domain), policy) if domain is not None else policy
    answer, escalate = entry["answer_threshold"], entry["escalate_threshold"]
    return (
        np.inf if answer is None else float(answer),
        np.inf if escalate is None else float(escalate),
    )


def decide(policy: dict, c, domains: Sequence[str | None] | None = None) -> list[str]:
    """The action for each calibrated confidence (and its domain, for per-domain thresholds)."""
    c = np.asarray(c, dtype=np.float64).reshape(-1)
    domains = [None] * c.size if domains is None else list(domains)
    if len(domains) != c.size:
        raise ConfigError(f"{len(domains)} domains for {c.size} confidences")
    actions = []
    for value, domain in zip(c, domains, strict=True):
        answer, escalate = thresholds_for(policy, domain)
        if np.isnan(value) or value < escalate:
            actions.append("escalate")
        elif value >= answer:
            actions.append("answer")
        else:
            actions.append("retrieve")
    return actions


def proportion(k: int, n: int) -> dict:
    """k / n with its exact (Clopper-Pearson) 95 % interval; None values when n == 0."""
    if n == 0:
        return {"value": None, "ci95": None, "k": 0, "n": 0, "reason": "no items"}
    interval = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    return {"value": k / n, "ci95": [float(interval.low), float(interval.high)], "k": k, "n": n}


def evaluate_policy(policy: dict, c, y, domains=None) -> dict:
    """Action shares, and the realised error rate of answered items (and of non-escalated), on a
    labeled split, each with a 95 % interval."""
    c, y = as_inputs(c, y)
    actions = np.asarray(decide(policy, c, domains))
    errors = y < 0.5
    answered, kept = actions == "answer", actions != "escalate"
    result = {
        "n": int(c.size),
        "shares": {a: proportion(int((actions == a).sum()), int(c.size)) for a in ACTIONS},
        "answered_risk": proportion(int(errors[answered].sum()), int(answered.sum())),
        "non_escalated_risk": proportion(int(errors[kept].sum()), int(kept.sum())),
    }
    risk = result["answered_risk"]["value"]
    result["answered_within_target"] = None if risk is None else risk <= policy["answer_risk"]
    return result
