"""The drift tests of `calibtune monitor` (`Monitor`, also usable online through
`Monitor.update`), their reference, and per-window statistics. Alarms:
- calibration drift, overall and per reference domain: a two-sided e-CUSUM on the residual
  outcome - confidence of labeled items. For each bet size lambda on a small grid and each side,
  prod (1 + lambda (r_i - m)) from any start point is a nonnegative supermartingale while the
  mean residual stays within the reference's interval [m_lo, m_hi], so by Ville's inequality and
  a union bound over the `horizon` start points and the grid, a stationary log alarms with
  probability <= its share of `false_alarm`. Half of that share pays for the reference interval
  (a normal interval on the reference's mean residual), half for the sequential test.
- domain mix: a chi-square test of each window's domain counts against the reference's
  (Bonferroni over the windows of the horizon).
- unseen domains: a domain absent from the reference seen `unseen_min_count` times.
The tests split `false_alarm` (default 5 %) equally, so the chance that a whole stationary log
raises any statistical alarm is at most `false_alarm`. The unseen-domain alarm is a rule, not a
test: it never fires on a log whose domains all appear in the reference.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path

import numpy as np
from scipy import stats

from calibtune import metrics
from calibtune.errors import ConfigError, InputError
from calibtune.eval.policy import ACTIONS, decide
from calibtune.io import read_jsonl

BET_FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2)


# -- reference


def reference_from_rows(rows: Iterable[dict]) -> dict:
    """The reference of the drift tests: domain counts, and the mean residual (outcome minus
    confidence) with its standard deviation and count, overall and per domain."""
    rows = list(rows)
    labeled = [r for r in rows if r.get("correct") is not None]
    if len(labeled) < 2:
        raise ConfigError(f"the monitor reference has {len(labeled)} labeled items; it needs 2+")

    def residuals(items: list[dict]) -> dict:
        r = np.array([float(i["correct"]) - float(i["confidence"]) for i in items])
        return {"n": int(r.size), "mean": float(r.mean()), "sd": float(r.std(ddof=1) or 0.5)}

    by_domain: dict[str, list[dict]] = {}
    for row in labeled:
        by_domain.setdefault(str(row["domain"]), []).append(row)
    return {
        "counts": dict(Counter(str(r["domain"]) for r in rows)),
        "overall": residuals(labeled) if len(labeled) > 1 else None,
        "domains": {d: residuals(items) for d, items in by_domain.items() if len(items) > 1},
        "confidence": [float(r["confidence"]) for r in labeled],
        "correct": [int(r["correct"]) for r in labeled],
    }


def reference_from_eval(eval_dir: str | os.PathLike, method: str, split: str) -> dict:
    """The reference from an eval output dir: `method`'s confidences on its test (or val) split."""
    name = "predictions.jsonl" if split == "test" else f"{split}_predictions.jsonl"
    path = Path(eval_dir) / name
    rows = read_jsonl(path)
    if method not in rows[0]:
        raise InputError(path, 1, method, "no such method column; set monitor.reference_method")
    return reference_from_rows(
        {"domain": r.get("domain") or "all", "confidence": r[method], "correct": r["correct"]}
        for r in rows
        if r.get(method) is not None
    )


# -- the sequential calibration test


class CalibrationCusum:
    """Two-sided e-CUSUM on residuals r = outcome - confidence against [m_lo, m_hi]."""

    def __init__(self, reference: dict, alpha: float, horizon: int):
        interval_alpha, sequential_alpha = alpha / 2, alpha / 2
        half = stats.norm.ppf(1 - interval_alpha / 2) * reference["sd"] / math.sqrt(reference["n"])
        self.low, self.high = reference["mean"] - half, reference["mean"] + half
        up = [f / (1 + self.high) for f in BET_FRACTIONS]  # keeps 1 + lambda (r - m_hi) > 0
        down = [-f / (1 - self.low) for f in BET_FRACTIONS]
        self.bets = np.array(up + down)
        self.centers = np.array([self.high] * len(up) + [self.low] * len(down))
        self.threshold = math.log(max(horizon, 1) * self.bets.size / sequential_alpha)
        self.log_cusum = np.zeros(self.bets.size)
        self.n = 0

    def update(self, residual: float) -> bool:
        """Add one labeled residual; True when the statistic is at or above the threshold."""
        step = np.log1p(self.bets * (residual - self.centers))
        self.log_cusum = np.maximum(self.log_cusum, 0.0) + step
        self.n += 1
        return self.statistic >= self.threshold

    @property
    def statistic(self) -> float:
        """log of the largest e-value over start points and bets."""
        return float(max(self.log_cusum.max(), 0.0))


# -- windows


def window_stats(rows: Sequence[dict], n_bins: int, policy: dict | None) -> dict:
    """Volume, label coverage, accuracy, mean confidence, ECE, Brier, action mix of some rows;
    undefined values are null with a `reason`."""
    if not rows:
        return {"volume": 0, "reason": "no items in this window"}
    c = np.array([float(r["confidence"]) for r in rows])
    labeled = [r for r in rows if r["correct"] is not None]
    out: dict = {
        "volume": len(rows),
        "labeled": len(labeled),
        "label_coverage": len(labeled) / len(rows),
        "mean_confidence": float(c.mean()),
    }
    actions = [r.get("action") for r in rows]
    if any(a is None for a in actions) and policy is not None:
        actions = decide(policy, c, [r["domain"] for r in rows])
    if all(a is not None for a in actions):
        out["actions"] = {a: actions.count(a) / len(actions) for a in ACTIONS}
    else:
        out["actions"], out["actions_reason"] = None, "no action in the log and no policy"
    if not labeled:
        out.update(accuracy=None, ece=None, brier=None, reason="no labeled items in this window")
        return out
    cl = np.array([float(r["confidence"]) for r in labeled])
    y = np.array([float(r["correct"]) for r in labeled])
    out.update(
        accuracy=float(y.mean()),
        labeled_mean_confidence=float(cl.mean()),
        ece=metrics.ece(cl, y, n_bins),
        brier=metrics.brier(cl, y),
    )
    return out


def window_keys(rows: Sequence[dict], size: int | None, seconds: float | None) -> list[int]:
    """The window of each row (rows in time order): by count, or by time from the first row."""
    if seconds:
        start = rows[0]["timestamp"]
        return [int((r["timestamp"] - start).total_seconds() // seconds) for r in rows]
    return [i // size for i in range(len(rows))]


def parse_duration(text: str | None) -> float | None:
    """'30m', '2h', '1d', '45s' as seconds (None stays None)."""
    if text in (None, "", "null"):
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(text[:-1]) * units[text[-1]]
    except (KeyError, ValueError, TypeError):
        raise ConfigError(f"monitor.window.time={text!r}: use e.g. 30m, 2h, 1d") from None


# -- the monitor


class Monitor:
    """Online calibration monitor: feed scored rows with `update`, read `summary()`.

    >>> monitor = Monitor(reference_from_rows(first_labeled_rows), horizon=10_000)
    >>> monitor.update(new_rows)   # -> the alarms these rows raised
    """

    def __init__(
        self,
        reference: dict,
        *,
        false_alarm: float = 0.05,
        horizon: int = 10_000,
        window_size: int = 200,
        window_time: str | None = None,
        mix_window: int = 200,
        unseen_min_count: int = 20,
        min_domain_reference: int = 30,
        n_bins: int = 15,
        policy: dict | None = None,
    ) -> None:
        if not 0 < false_alarm < 1:
            raise ConfigError(f"monitor.false_alarm must lie in (0, 1), got {false_alarm}")
        self.reference, self.policy, self.n_bins = reference, policy, n_bins
        self.window_size, self.window_seconds = window_size, parse_duration(window_time)
        self.mix_window, self.unseen_min_count = mix_window, unseen_min_count
        domains = {
            d: ref
            for d, ref in reference["domains"].items()
            if ref["n"] >= min_domain_reference and ref["sd"] > 0
        }
        n_tests = 1 + len(domains) + 1  # overall calibration, per-domain calibration, mix
        self.test_alpha = false_alarm / n_tests
        self.cusums = {"overall": CalibrationCusum(reference["overall"], self.test_alpha, horizon)}
        for domain, ref in domains.items():
            self.cusums[domain] = CalibrationCusum(ref, self.test_alpha, horizon)
        self.mix_alpha = self.test_alpha / max(1, math.ceil(horizon / mix_window))
        self.rows: list[dict] = []
        self.alarms: list[dict] = []
        self.trace: dict[str, list[tuple[int, float]]] = {name: [] for name in self.cusums}
        self.mix_trace: list[tuple[int, float]] = []
        self.unseen: Counter = Counter()
        self._mix_buffer: list[str] = []

    def _alarm(self, kind: str, scope: str, row: dict, **detail) -> dict:
        """Record an alarm (once per kind and scope) and return it."""
        alarm = {
            "type": kind,
            "scope": scope,
            "index": len(self.rows) - 1,
            "id": row["id"],
            "timestamp": row["timestamp"].isoformat(),
            **detail,
        }
        self.alarms.append(alarm)
        return alarm

    def _fired(self, kind: str, scope: str) -> bool:
        return any(a["type"] == kind and a["scope"] == scope for a in self.alarms)

    def update(self, rows: Iterable[dict]) -> list[dict]:
        """Add scored rows (validated, in time order); returns the alarms they raised."""
        raised = []
        for row in rows:
            self.rows.append(row)
            raised += self._check_unseen(row) + self._check_mix(row)
            if row["correct"] is not None:
                raised += self._check_calibration(row)
        return raised

    def _check_calibration(self, row: dict) -> list[dict]:
        residual = float(row["correct"]) - float(row["confidence"])
        raised = []
        for scope in ("overall", row["domain"]):
            cusum = self.cusums.get(scope)
            if cusum is None:
                continue
            over = cusum.update(residual)
            self.trace[scope].append((len(self.rows) - 1, cusum.statistic))
            if over and not self._fired("calibration_drift", scope):
                raised.append(
                    self._alarm(
                        "calibration_drift",
                        scope,
                        row,
                        statistic=cusum.statistic,
                        threshold=cusum.threshold,
                        labeled_items=cusum.n,
                    )
                )
        return raised

    def _check_unseen(self, row: dict) -> list[dict]:
        domain = row["domain"]
        if domain in self.reference["counts"]:
            return []
        self.unseen[domain] += 1
        if self.unseen[domain] == self.unseen_min_count:
            return [self._alarm("unseen_domain", domain, row, count=self.unseen[domain])]
        return []

    def _check_mix(self, row: dict) -> list[dict]:
        if row["domain"] in self.reference["counts"]:
            self._mix_buffer.append(row["domain"])
        if len(self._mix_buffer) < self.mix_window:
            return []
        names = sorted(self.reference["counts"])
        window = Counter(self._mix_buffer)
        table = np.array([[self.reference["counts"][d] for d in names], [window[d] for d in names]])
        self._mix_buffer = []
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] < 2:
            return []
        p = float(stats.chi2_contingency(table)[1])
        self.mix_trace.append((len(self.rows) - 1, p))
        if p < self.mix_alpha and not self._fired("domain_mix", "overall"):
            shares = {d: window[d] / self.mix_window for d in names}
            return [self._alarm("domain_mix", "overall", row, p_value=p, shares=shares)]
        return []

    def windows(self) -> list[dict]:
        """Per-window stats, overall and per domain (domains of the reference and the log)."""
        if not self.rows:
            return []
        keys = window_keys(self.rows, self.window_size, self.window_seconds)
        domains = sorted({r["domain"] for r in self.rows} | set(self.reference["counts"]))
        out = []
        grouped: dict[int, list[dict]] = {}
        for row, key in zip(self.rows, keys, strict=True):
            grouped.setdefault(key, []).append(row)
        for key in range(keys[-1] + 1):
            members = grouped.get(key, [])
            entry = {"window": key, **self.window_span(key, members)}
            entry["overall"] = window_stats(members, self.n_bins, self.policy)
            entry["domains"] = {
                d: window_stats([r for r in members if r["domain"] == d], self.n_bins, self.policy)
                for d in domains
            }
            out.append(entry)
        return out

    def window_span(self, key: int, members: list[dict]) -> dict:
        """The time span of a window (by time: its bounds; by count: first and last item)."""
        if self.window_seconds:
            start = self.rows[0]["timestamp"] + timedelta(seconds=key * self.window_seconds)
            end = start + timedelta(seconds=self.window_seconds)
            return {"start": start.isoformat(), "end": end.isoformat()}
        return {
            "start": members[0]["timestamp"].isoformat(),
            "end": members[-1]["timestamp"].isoformat(),
        }

    def summary(self) -> dict:
        """monitor.json's content: alarms, the tests' settings, windows, the statistic traces."""
        return {
            "alarms": self.alarms,
            "n_items": len(self.rows),
            "n_labeled": sum(r["correct"] is not None for r in self.rows),
            "tests": {
                "alpha_per_test": self.test_alpha,
                "calibration": {
                    scope: {
                        "reference_interval": [c.low, c.high],
                        "threshold": c.threshold,
                        "final_statistic": c.statistic,
                        "labeled_items": c.n,
                    }
                    for scope, c in self.cusums.items()
                },
                "mix_alpha_per_window": self.mix_alpha,
                "unseen_counts": dict(self.unseen),
            },
            "windows": self.windows(),
            "traces": {
                "calibration": {k: v for k, v in self.trace.items()},
                "mix_p_values": self.mix_trace,
            },
        }
