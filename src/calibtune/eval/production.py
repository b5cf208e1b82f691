"""Production use of the eval's confidence: per-domain calibrators fitted on val (and, when val's
folds say so, on the train rows a logistic probe scored out of fold), and the answer / retrieve /
escalate policy whose Learn-then-Test thresholds are set on cross-fitted val confidences; both
scored on test for metrics.json `per_domain_calibration` and `policy` (docs/production.md)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from calibtune.errors import ConfigError, InputError
from calibtune.eval import baselines, policy, scoring
from calibtune.eval.recalibrate import (
    CalibrationUnavailable,
    apply_calibrator,
    cross_fitted_domain_confidences,
    fit_domain_calibrators,
    held_out_losses,
)
from calibtune.io import check_probability, read_jsonl_numbered
from calibtune.metrics import MetricError
from calibtune.models.probe import OUT_OF_FOLD


def main_method(confidences: dict) -> str:
    """The confidence production uses: tuned ptrue when there is an adapter, else base ptrue."""
    return "tuned/ptrue" if "tuned/ptrue" in confidences else "base/ptrue"


def domain_map_settings(cfg) -> dict:
    """`fit_domain_calibrators`' kind, min_count, n_bins, shrinkage and unseen from the eval
    config."""
    maps = cfg.eval.domain_calibration
    return {
        "kind": maps.kind,
        "min_count": maps.min_count,
        "n_bins": cfg.eval.n_bins,
        "shrinkage": maps.shrinkage,
        "unseen": maps.unseen,
    }


def read_out_of_fold(cfg, adapter_path: Path | None, inputs) -> dict | None:
    """Before any model loads: the train rows a logistic probe adapter scored out of fold
    (adapter/oof_confidences.jsonl: arrays c, y, domain, group) when
    eval.domain_calibration.add_train may use them; None when it is false or (auto) there are
    none. add_train=true without them, a bad row, or a row of val or test fails here."""
    setting = cfg.eval.domain_calibration.add_train
    path = adapter_path / OUT_OF_FOLD if adapter_path is not None else None
    if setting is False or (setting == "auto" and (path is None or not path.is_file())):
        return None
    if path is None or not path.is_file():
        raise ConfigError(
            "eval.domain_calibration.add_train=true needs the train rows scored out of fold "
            f"({OUT_OF_FOLD} beside a probe fitted by method=probe probe.fit=logistic); "
            f"{adapter_path} has none: use add_train=auto or false"
        )
    numbered = read_jsonl_numbered(path)
    held = {r["id"] for split in inputs.values() for r in split} if isinstance(inputs, dict) else {}
    c, y = [], []
    for line, row in numbered:
        c.append(check_probability(path, line, "confidence", row.get("confidence")))
        y.append(check_probability(path, line, "correct", row.get("correct")))
        if row.get("group") is None:
            raise InputError(path, line, "group", "missing")
        if row.get("id") in held:
            raise InputError(path, line, "id", f"{row['id']!r} is a val or test row, not train")
    rows = [row for _, row in numbered]
    return {
        "c": np.array(c),
        "y": np.array(y),
        "domain": np.array(baselines.domains_of(rows)),
        "group": np.array([str(r["group"]) for r in rows]),
    }


def choose_train_rows(cfg, val: dict, y_val, val_domains, val_groups, oof: dict | None):
    """Whether the main method's per-domain maps fit on val plus the out-of-fold train rows
    (`oof`): add_train=true always, auto when that lowers val's held-out log loss
    (`held_out_losses`). Returns (the rows to add or None, metrics.json
    per_domain_calibration.fit_rows)."""
    setting = cfg.eval.domain_calibration.add_train
    record = {"add_train": setting, "n_train": 0 if oof is None else int(oof["y"].size)}
    method = main_method(val)
    if oof is None:
        return None, {**record, "used": False, "reason": "no out-of-fold train rows"}
    if method not in cfg.eval.domain_calibration.methods:
        reason = f"{method} is not in eval.domain_calibration.methods"
        return None, {**record, "used": False, "reason": reason}
    if setting is True:
        return oof, {**record, "used": True}
    try:
        settings = domain_map_settings(cfg)
        losses = held_out_losses(val[method], y_val, val_domains, val_groups, settings, oof)
    except CalibrationUnavailable as err:
        return None, {**record, "used": False, "reason": str(err)}
    used = losses["val+train"] < losses["val"]
    return (oof if used else None), {**record, "used": used, "held_out_log_loss": losses}


def fit_domain_calibration(
    cfg, val: dict, y_val, val_domains: list[str], val_groups: list[str], extra: dict | None
) -> tuple[dict, dict]:
    """Per-domain calibrators `<method>+per_domain` fitted on val (the main method's on val and
    the `extra` train rows, when given); reasons for those not fitted."""
    fitted, unavailable = {}, {}
    for method in cfg.eval.domain_calibration.methods:
        if method not in val:
            continue
        name = f"{method}+per_domain"
        rows = {"c": val[method], "y": y_val, "domain": val_domains, "group": val_groups}
        if extra is not None and method == main_method(val):
            rows = {key: np.concatenate([np.asarray(rows[key]), extra[key]]) for key in rows}
        try:
            fitted[name] = fit_domain_calibrators(
                c=rows["c"],
                y=rows["y"],
                domains=rows["domain"],
                groups=rows["group"],
                **domain_map_settings(cfg),
            )
        except (CalibrationUnavailable, MetricError) as err:
            unavailable[name] = str(err)
    return fitted, unavailable


def domain_calibration_report(
    cfg, fitted: dict, test: dict, y_test, test_domains, groups: list[str], fit_rows: dict
) -> dict:
    """metrics.json `per_domain_calibration`: global vs per-domain maps of the main method on test."""
    method = main_method(test)
    params = fitted.get(f"{method}+per_domain")
    if params is None:
        return {"method": method, "reason": "per-domain calibrators not fitted"}
    c_global = apply_calibrator(params["global"], test[method])
    c_domain = apply_calibrator(params, test[method], test_domains)
    scores = scoring.domain_calibration_scores(
        c_global,
        c_domain,
        y_test,
        test_domains,
        cfg.eval.n_bins,
        cfg.eval.n_boot,
        cfg.seed,
        groups,
    )
    for domain, entry in scores["domains"].items():
        entry["calibrator"] = "per-domain" if domain in params["domains"] else "global (fallback)"
    return {
        "method": method,
        "kind": params["base_kind"],
        "min_count": params["min_count"],
        "shrinkage": params.get("shrinkage"),
        "fallback": params["fallback"],
        "fit_rows": fit_rows,
        **scores,
    }


def policy_batch_size(setting, n_test: int) -> int | None:
    """The number of future items the policy's guarantee is about (`auto`: the test split)."""
    if setting in (None, "null", "none"):
        return None
    return n_test if setting == "auto" else int(setting)


def fit_and_score_policy(
    cfg, fitted: dict, val: dict, y_val, val_domains, val_groups, test, y_test, domains, extra
):
    """The answer/retrieve/escalate policy on per-domain calibrated confidence: thresholds on
    val (Learn-then-Test, on cross-fitted val confidences: each val row calibrated by maps
    fitted on the other folds and the `extra` train rows the served maps fit on), action shares
    and realised risk on test (the maps fitted on all of val, as served). Returns (policy,
    block)."""
    settings, method = cfg.eval.policy, main_method(test)
    params = fitted.get(f"{method}+per_domain")
    if not settings.enabled or params is None:
        reason = "disabled (eval.policy.enabled=false)" if not settings.enabled else "no calibrator"
        return None, {"reason": reason}
    try:
        c_val = cross_fitted_domain_confidences(
            val[method], y_val, val_domains, val_groups, domain_map_settings(cfg), extra=extra
        )
    except CalibrationUnavailable as err:
        return None, {"reason": f"cross-fitted val confidences: {err}"}
    units = val_groups if settings.unit == "group" else None
    fitted_policy = policy.fit_policy(
        c_val,
        y_val,
        val_domains,
        answer_risk=settings.answer_risk,
        escalate_risk=settings.escalate_risk,
        delta=settings.delta,
        batch_size=policy_batch_size(settings.batch_size, len(y_test)),
        per_domain=settings.per_domain,
        min_count=settings.min_count,
        groups=units,
    )
    fitted_policy["calibrator"] = f"{method}+per_domain"
    c_test = apply_calibrator(params, test[method], domains)
    sizes = Counter(val_groups).values()
    block = {
        **fitted_policy,
        "val_groups": {"n": len(sizes), "largest": max(sizes), "rows": len(val_groups)},
        "test": policy.evaluate_policy(fitted_policy, c_test, y_test, domains),
        "certifiable": policy.certifiable_risks(
            c_val, y_val, settings.delta, fitted_policy["batch_size"], c_test, y_test, units
        ),
    }
    return fitted_policy, block
