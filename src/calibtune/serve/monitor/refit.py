"""The monitor's refit: new per-domain calibrators fitted on recent labeled traffic, compared
with the active ones on the newest traffic held back from the fit."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from calibtune import metrics
from calibtune.eval.recalibrate import apply_calibrator, fit_level_map


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
    new = fit_level_map(  # as `calibtune adapt`, with its pull toward the identity
        settings.kind, raw, y, domains, settings.min_count, prior_strength=settings.prior_strength
    )
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
