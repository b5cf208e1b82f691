"""`calibtune monitor`: calibration of scored traffic over time, drift alarms, safe refits.

    calibtune monitor monitor.input=<log.jsonl> [monitor.reference=<eval output dir>]
                      [monitor.fail_on_alarm=true] [run_dir=<dir>]
    calibtune monitor monitor.input=<log.jsonl> monitor.refit=true monitor.export=<export dir>
    calibtune monitor monitor.export=<export dir> monitor.rollback=previous

Log rows: {"id", "timestamp" (ISO 8601), "domain", "confidence", "correct" (0/1, optional:
feedback arrives late and partially), "raw_confidence" (needed for refits), "action"}.

Alarms (`Monitor`, also usable online through `Monitor.update`):
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

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from scipy import stats

from calibtune import metrics
from calibtune.errors import ConfigError, InputError
from calibtune.eval.policy import ACTIONS, decide
from calibtune.eval.recalibrate import apply_calibrator, fit_domain_calibrators
from calibtune.io import (
    check_probability,
    read_jsonl,
    read_jsonl_numbered,
    write_json_atomic,
    write_text_atomic,
)

log = logging.getLogger(__name__)

REQUIRED_FIELDS = ("id", "timestamp", "domain", "confidence")
BET_FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2)
SERVE_CONFIG = "calibtune.json"
VERSIONS_DIR = "calibrator_versions"


# -- input


def parse_timestamp(value: object) -> datetime | None:
    """An ISO 8601 timestamp as an aware datetime (naive ones are taken as UTC); None if bad."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def check_row(path: Path, line: int, row: dict) -> dict:
    """One validated log row (timestamp parsed, correct as 0/1/None); InputError names the field."""
    for field in REQUIRED_FIELDS:
        if row.get(field) is None:
            raise InputError(path, line, field, "missing")
    if not isinstance(row["domain"], str) or not row["domain"]:
        raise InputError(path, line, "domain", "must be a non-empty string")
    check_probability(path, line, "confidence", row["confidence"])
    if row.get("raw_confidence") is not None:
        check_probability(path, line, "raw_confidence", row["raw_confidence"])
    timestamp = parse_timestamp(row["timestamp"])
    if timestamp is None:
        raise InputError(path, line, "timestamp", f"not an ISO 8601 time: {row['timestamp']!r}")
    correct = row.get("correct")
    if correct is not None and correct not in (0, 1):
        raise InputError(path, line, "correct", f"must be 0, 1 or absent, got {correct!r}")
    if row.get("action") is not None and row["action"] not in ACTIONS:
        raise InputError(path, line, "action", f"must be one of {ACTIONS}, got {row['action']!r}")
    return {**row, "timestamp": timestamp, "correct": None if correct is None else int(correct)}


def read_log(path: str | os.PathLike) -> list[dict]:
    """The validated log rows in timestamp order; the first bad row fails with file:line:field."""
    path = Path(path)
    checked = [check_row(path, line, row) for line, row in read_jsonl_numbered(path)]
    return sorted(checked, key=lambda r: r["timestamp"])


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


# -- refit and rollback


def refit_calibrator(old: dict, rows: Sequence[dict], settings) -> dict:
    """Refit per-domain calibrators on recent labeled traffic; compare old vs new on the newest
    `holdout_fraction` of it (held back from the fit). Returns the comparison and new params.

    The new map keeps the old domain maps for domains too rare in the recent traffic."""
    labeled = [r for r in rows if r["correct"] is not None and r.get("raw_confidence") is not None]
    labeled = labeled[-int(settings.window) :]
    n_hold = int(round(len(labeled) * settings.holdout_fraction))
    if n_hold < 1 or len(labeled) - n_hold < settings.min_count:
        return {
            "promoted": False,
            "reason": f"only {len(labeled)} labeled rows with raw_confidence",
        }
    fit_rows, held = labeled[:-n_hold], labeled[-n_hold:]

    def arrays(items):
        raw = np.array([float(r["raw_confidence"]) for r in items])
        y = np.array([float(r["correct"]) for r in items])
        return raw, y, [r["domain"] for r in items]

    raw, y, domains = arrays(fit_rows)
    new = fit_domain_calibrators(settings.kind, raw, y, domains, settings.min_count)
    if old.get("kind") == "per_domain":
        new["domains"] = {**old["domains"], **new["domains"]}
        new["fallback"] = {d: r for d, r in new["fallback"].items() if d not in new["domains"]}
    raw, y, domains = arrays(held)
    scores = {}
    for name, params in (("old", old), ("new", new)):
        c = np.clip(apply_calibrator(params, raw, domains), 0.0, 1.0)
        scores[name] = {"ece": metrics.ece(c, y), "brier": metrics.brier(c, y)}
    metric = settings.metric
    better = scores["new"][metric] < scores["old"][metric]
    return {
        "promoted": bool(better),
        "metric": metric,
        "n_fit": len(fit_rows),
        "n_held_back": n_hold,
        "held_back": scores,
        "params": new,
    }


def version_path(export_dir: Path, version: int) -> Path:
    """The file of one calibrator version beside the export."""
    return export_dir / VERSIONS_DIR / f"v{version:04d}.json"


def read_serve_config(export_dir: Path) -> dict:
    """The export's calibtune.json."""
    path = export_dir / SERVE_CONFIG
    if not path.is_file():
        raise ConfigError(
            f"monitor.export={export_dir}: no {SERVE_CONFIG} (a `calibtune export` dir)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def promote(export_dir: Path, result: dict) -> int:
    """Write the refitted calibrator as the next version and make it the active one."""
    serve = read_serve_config(export_dir)
    active = int(serve.get("calibrator_version", 0))
    if not version_path(export_dir, 0).is_file():
        write_json_atomic(version_path(export_dir, 0), {"calibrator": serve["calibrator"]})
    versions = sorted(int(p.stem[1:]) for p in (export_dir / VERSIONS_DIR).glob("v*.json"))
    version = versions[-1] + 1
    name = (serve.get("calibrator") or {}).get("name", "per_domain")
    calibrator = {"name": f"{name} (refit v{version})", "params": result["params"]}
    record = {k: v for k, v in result.items() if k != "params"}
    write_json_atomic(
        version_path(export_dir, version),
        {"calibrator": calibrator, "refit": record, "parent": active},
    )
    write_json_atomic(
        export_dir / SERVE_CONFIG,
        {**serve, "calibrator": calibrator, "calibrator_version": version},
    )
    return version


def rollback(export_dir: str | os.PathLike, target: str | int) -> int:
    """Make an earlier calibrator version active (`previous`: the one before the active)."""
    export_dir = Path(export_dir)
    serve = read_serve_config(export_dir)
    active = int(serve.get("calibrator_version", 0))
    versions = sorted(int(p.stem[1:]) for p in (export_dir / VERSIONS_DIR).glob("v*.json"))
    if target == "previous":
        earlier = [v for v in versions if v < active]
        if not earlier:
            raise ConfigError(f"monitor.rollback=previous: version {active} is the first one")
        version = earlier[-1]
    else:
        version = int(target)
        if version not in versions:
            raise ConfigError(f"monitor.rollback={target}: versions are {versions}")
    calibrator = json.loads(version_path(export_dir, version).read_text())["calibrator"]
    write_json_atomic(
        export_dir / SERVE_CONFIG,
        {**serve, "calibrator": calibrator, "calibrator_version": version},
    )
    print(f"calibrator version {version} is active in {export_dir} (was {active})")
    return version


# -- the page


def timeline_figures(summary: dict) -> dict[str, bytes]:
    """ECE, confidence vs accuracy, domain shares and the drift statistics over time, with the
    alarms marked as vertical lines."""
    import matplotlib.pyplot as plt

    from calibtune.eval.report import _png

    windows = summary["windows"]
    x = [w["window"] for w in windows]
    alarm_windows = [
        (window_of(windows, a["timestamp"]), f"{a['type']} ({a['scope']})")
        for a in summary["alarms"]
    ]

    def mark(ax) -> None:
        for position, label in alarm_windows:
            ax.axvline(position, color="red", linestyle="--", linewidth=1)
            ax.text(position, ax.get_ylim()[1], label, rotation=90, va="top", fontsize=7)

    figures = {}
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(x, [w["overall"].get("ece") for w in windows], marker="o", label="overall", color="k")
    for domain in windows[0]["domains"] if windows else []:
        ax.plot(x, [w["domains"][domain].get("ece") for w in windows], alpha=0.5, label=domain)
    ax.set(xlabel="window", ylabel="ECE (labeled items)", title="ECE per window")
    ax.legend(fontsize=7, ncol=3)
    mark(ax)
    figures["ece.png"] = _png(fig)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(x, [w["overall"].get("labeled_mean_confidence") for w in windows], label="confidence")
    ax.plot(x, [w["overall"].get("accuracy") for w in windows], label="accuracy")
    ax.set(xlabel="window", ylabel="mean", title="Mean confidence vs accuracy (labeled, overall)")
    ax.legend(fontsize=8)
    mark(ax)
    figures["confidence_accuracy.png"] = _png(fig)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    bottom = np.zeros(len(windows))
    for domain in windows[0]["domains"] if windows else []:
        share = np.array(
            [w["domains"][domain]["volume"] / max(w["overall"]["volume"], 1) for w in windows]
        )
        ax.bar(x, share, bottom=bottom, label=domain)
        bottom += share
    ax.set(xlabel="window", ylabel="share of volume", title="Domain mix")
    ax.legend(fontsize=7, ncol=3)
    mark(ax)
    figures["domain_mix.png"] = _png(fig)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for scope, trace in summary["traces"]["calibration"].items():
        if trace:
            ax.plot(
                *zip(*trace, strict=True), label=scope, linewidth=2 if scope == "overall" else 1
            )
    threshold = summary["tests"]["calibration"]["overall"]["threshold"]
    ax.axhline(threshold, color="red", linestyle=":", label="alarm threshold (overall)")
    for alarm in summary["alarms"]:
        ax.axvline(alarm["index"], color="red", linestyle="--", linewidth=1)
    ax.set(xlabel="item", ylabel="log e-CUSUM", title="Calibration drift statistic")
    ax.legend(fontsize=7, ncol=3)
    figures["drift_statistic.png"] = _png(fig)
    return figures


def window_of(windows: list[dict], timestamp: str) -> int:
    """The window whose span holds `timestamp` (the last one starting at or before it)."""
    starts = [w["window"] for w in windows if w["start"] <= timestamp]
    return starts[-1] if starts else 0


def render_page(summary: dict, images: dict[str, bytes]) -> str:
    """monitor.html: self-contained (figures as data URIs), alarms listed first."""
    import base64
    import html

    from calibtune.eval.report import html_table

    alarms = [["type", "scope", "item", "timestamp", "id"]] + [
        [a["type"], a["scope"], str(a["index"]), a["timestamp"], str(a["id"])]
        for a in summary["alarms"]
    ]
    body = [
        "<h1>calibtune monitor</h1>",
        f"<p>{summary['n_items']} items, {summary['n_labeled']} labeled; "
        f"{len(summary['alarms'])} alarm(s).</p>",
        html_table(alarms) if summary["alarms"] else "<p>No alarms.</p>",
    ]
    for name, png in images.items():
        data = base64.b64encode(png).decode("ascii")
        body.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}img{max-width:100%}"
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>calibtune monitor</title>'
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


# -- the command


def load_reference(settings, rows: list[dict]) -> tuple[dict, list[dict]]:
    """The reference and the rows to monitor: an eval dir's split, or the log's first
    `reference_size` labeled items (then only the rows after them are monitored)."""
    if settings.reference:
        return reference_from_eval(
            settings.reference, settings.reference_method, settings.reference_split
        ), rows
    labeled_positions = [i for i, r in enumerate(rows) if r["correct"] is not None]
    if len(labeled_positions) <= settings.reference_size:
        raise ConfigError(
            f"monitor.input has {len(labeled_positions)} labeled rows, not more than "
            f"monitor.reference_size={settings.reference_size}: give monitor.reference=<eval dir>"
        )
    end = labeled_positions[settings.reference_size - 1] + 1
    return reference_from_rows(rows[:end]), rows[end:]


def load_policy(settings) -> dict | None:
    """The policy for the action mix of rows without an `action` (`auto`: the reference's)."""
    setting = settings.policy
    if setting == "auto":
        path = Path(settings.reference or "") / "policy.json"
        return json.loads(path.read_text()) if settings.reference and path.is_file() else None
    if setting is None:
        return None
    return json.loads(Path(setting).read_text())


def build_monitor(settings, reference: dict, rows: list[dict]) -> Monitor:
    """A Monitor with the config's settings; horizon null = this log's item count."""
    return Monitor(
        reference,
        false_alarm=settings.false_alarm,
        horizon=settings.horizon or len(rows),
        window_size=settings.window.size,
        window_time=settings.window.time,
        mix_window=settings.mix_window,
        unseen_min_count=settings.unseen_min_count,
        min_domain_reference=settings.min_domain_reference,
        n_bins=settings.n_bins,
        policy=load_policy(settings),
    )


def run_monitor(cfg) -> Path:
    """`calibtune monitor`: monitor.json + monitor.html; refit / rollback when asked."""
    settings = cfg.monitor
    if settings.rollback is not None:
        rollback(settings.export, settings.rollback)
        return Path(settings.export)
    if not settings.input:
        raise ConfigError("set monitor.input=<scored traffic log.jsonl>")
    rows = read_log(settings.input)  # validates every row before any work
    if settings.refit and not any(r.get("raw_confidence") is not None for r in rows):
        raise InputError(settings.input, None, "raw_confidence", "needed by monitor.refit=true")
    reference, monitored = load_reference(settings, rows)
    monitor = build_monitor(settings, reference, monitored)
    monitor.update(monitored)
    summary = monitor.summary()
    if settings.refit:
        summary["refit"] = run_refit(settings, monitored)
    output_dir = Path(settings.output_dir)
    page = render_page(summary, timeline_figures(summary))
    write_json_atomic(output_dir / "monitor.json", summary)
    write_text_atomic(output_dir / "monitor.html", page)
    print(f"monitor: {len(summary['alarms'])} alarm(s) -> {output_dir / 'monitor.json'}")
    for alarm in summary["alarms"]:
        print(f"  ALARM {alarm['type']} ({alarm['scope']}) at item {alarm['index']}")
    if settings.fail_on_alarm and summary["alarms"]:
        raise SystemExit(1)
    return output_dir


def run_refit(settings, rows: list[dict]) -> dict:
    """Refit against the export's active calibrator; promote a better one as a new version."""
    export_dir = Path(settings.export)
    serve = read_serve_config(export_dir)
    if not serve.get("calibrator"):
        raise ConfigError(f"{export_dir / SERVE_CONFIG} has no calibrator to compare against")
    result = refit_calibrator(serve["calibrator"]["params"], rows, settings.refitting)
    if result["promoted"]:
        result["version"] = promote(export_dir, result)
    result.pop("params", None)
    return result
