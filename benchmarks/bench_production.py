"""Production figures from one eval output dir: policy re-splits and the drift benchmark.

    .venv/bin/python benchmarks/bench_production.py <eval output dir> [--resplits 200]
        [--stationary 100] [--shift-streams 20] [--shrinkage auto|N] [--out results.json]
        [--answer-risk 0.2] [--escalate-risk 0.5] [--no-drift] [--resplit-by question|row|entity]
        [--unit row|group] [--groups-from <labeled data dir>]

Reads the eval stage's val_predictions.jsonl and predictions.jsonl (raw tuned/ptrue, domain,
correct per example) and, with the eval's own settings and code (per-domain Platt shrunk toward
the global map, strength chosen on val folds; policy 0.2 / 0.5 / delta 0.1, its thresholds on
cross-fitted val confidences):

1. Policy re-splits: val and test pooled, split at random by question (a question's phrasings
   stay together) into about the eval's val / test sizes;
   per-domain calibrators and policy fitted on the val part (as the eval stage fits them, with
   the re-split's units standing in for its entity groups), the answered error rate measured on
   the test part. Reports the share of splits whose realised answered-error rate exceeds the
   target (the guarantee says at most delta), and the mean action shares. `--resplit-by row`
   makes every row its own unit instead (Learn-then-Test's p-values assume rows exchangeable;
   a question's phrasings share their outcome, so the two show what that assumption costs);
   `--resplit-by entity` re-splits by entity group, as the eval stage splits (the predictions'
   `group`, or the labeled rows of `--groups-from` for runs written before it was recorded).
   `--unit group` fits the policy with the re-split's units as its p-values' units
   (eval.policy.unit=group). The same re-splits also score the per-domain maps: the mean
   per-domain ECE on each test part of the global map and of the per-domain maps (both fitted
   on the val part), their mean difference, its sd over splits and the share of splits where
   the per-domain maps are lower (one split's bootstrap interval says nothing about another
   split of the same rows; this does).
2. Drift streams, each item drawn with replacement from test (confidences from per-domain maps
   fitted on val), 60 % of items labeled; the monitor's reference is each stream's first 500
   items (as `calibtune monitor` without monitor.reference):
   (a) stationary: 1,500 more items from the same pool; any alarm is a false alarm.
   (b) unseen domain: domain D (each domain in turn) is left out of val (the calibrators never
       saw it: it gets the global map) and of the first 1,000 items; from item 1,000 on, 30 % of
       items come from D. Delays count items after the change. A refit on the first 600
       post-change items (`refit_calibrator`) is compared with the old map on the next 400.
   (c) mix shift: from item 1,000 on, half the items come from the lowest-accuracy domain.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np

METHOD = "tuned/ptrue"  # --method base/ptrue for a base-model-only eval
N_BINS, N_BOOT = 15, 1000
KIND, MIN_COUNT, SHRINKAGE = "platt", 40, "auto"  # the eval's eval.domain_calibration defaults
MAPS = {"kind": KIND, "min_count": MIN_COUNT, "n_bins": N_BINS, "shrinkage": SHRINKAGE}
POLICY = {"answer_risk": 0.2, "escalate_risk": 0.5, "delta": 0.1}
POLICY_UNIT = {"unit": "row"}  # --unit
REFERENCE, BEFORE, AFTER, LABEL_SHARE = 500, 500, 1000, 0.6
START = datetime(2026, 1, 1, tzinfo=UTC)
REFIT = SimpleNamespace(
    kind=KIND, min_count=MIN_COUNT, window=2000, holdout_fraction=0.3, metric="brier"
)


def import_calibtune() -> None:
    """The calibtune imports (torch among them), once the arguments are parsed: --help stays
    cheap."""
    global metrics, certifiable_risks, evaluate_policy, fit_policy, apply_calibrator
    global cross_fitted_domain_confidences, fit_domain_calibrators, domain_calibration_scores
    global mean_domain_ece, read_labeled_split, row_group, read_jsonl, Monitor
    global reference_from_rows, refit_calibrator
    from calibtune import metrics
    from calibtune.eval.policy import certifiable_risks, evaluate_policy, fit_policy
    from calibtune.eval.recalibrate import (
        apply_calibrator,
        cross_fitted_domain_confidences,
        fit_domain_calibrators,
    )
    from calibtune.eval.scoring import domain_calibration_scores, mean_domain_ece
    from calibtune.examples import read_labeled_split, row_group
    from calibtune.io import read_jsonl
    from calibtune.serve.monitor import Monitor, reference_from_rows, refit_calibrator


def load(eval_dir: Path, name: str, method: str, entity: dict | None) -> dict[str, np.ndarray]:
    """raw confidence, outcome, domain, question and entity group arrays of a predictions file
    (`entity`: id -> entity group, for files without a `group` field)."""
    rows = read_jsonl(eval_dir / name)
    questions = [str(r.get("qid") or r["id"]) for r in rows]
    groups = [r.get("group") or (entity or {}).get(r["id"]) for r in rows]
    return {
        "raw": np.array([r[method] for r in rows]),
        "y": np.array([float(r["correct"]) for r in rows]),
        "domain": np.array([r["domain"] for r in rows]),
        "qid": np.array(questions),
        "entity": np.array([g or q for g, q in zip(groups, questions, strict=True)]),
    }


def entity_groups_of(data_dir: Path | None) -> dict | None:
    """id -> entity group of a labeled set's val and test rows (None without a data dir)."""
    if data_dir is None:
        return None
    return {
        row["id"]: row_group(row)
        for split in ("val", "test")
        for row in read_labeled_split(data_dir, split)
    }


def fit_maps(val: dict, keep=None) -> dict:
    """Per-domain maps on val (rows `keep`), with the eval stage's settings."""
    keep = np.ones(len(val["y"]), dtype=bool) if keep is None else keep
    return fit_domain_calibrators(
        c=val["raw"][keep],
        y=val["y"][keep],
        domains=val["domain"][keep],
        groups=val["qid"][keep],
        **MAPS,
    )


def subset(data: dict, index) -> dict:
    """The same arrays at `index`."""
    return {k: v[index] for k, v in data.items()}


def question_split(questions: np.ndarray, members: np.ndarray, n_val: int, rng) -> np.ndarray:
    """A random val mask that keeps each question's rows together (about n_val rows)."""
    order = rng.permutation(questions.size)
    sizes = np.bincount(members, minlength=questions.size)[order]
    chosen = order[np.cumsum(sizes) <= n_val]
    return np.isin(members, chosen)


def with_units(data: dict, name: str, by: str) -> dict:
    """The same arrays with the re-split's units in "qid": every row its own (`row`), entity
    groups (`entity`), or questions (`question`, unchanged)."""
    if by == "row":
        return {**data, "qid": np.array([f"{name}{i}" for i in range(data["y"].size)])}
    return {**data, "qid": data["entity"]} if by == "entity" else data


def policy_groups(data: dict):
    """The policy's p-value units: the data's units with --unit group, else None (rows)."""
    return data["qid"] if POLICY_UNIT["unit"] == "group" else None


def policy_resplits(val: dict, test: dict, n_splits: int, seed: int) -> dict:
    """Violation share of the policy's answered-risk target over random val/test re-splits."""
    pool = {k: np.concatenate([val[k], test[k]]) for k in val}
    n_val = len(val["y"])
    rng = np.random.default_rng(seed)
    risks, shares, violations = [], {"answer": [], "retrieve": [], "escalate": []}, 0
    domain_ece: dict[str, list[float]] = {"global": [], "per_domain": []}
    questions, members = np.unique(pool["qid"], return_inverse=True)
    for _ in range(n_splits):
        in_val = question_split(questions, members, n_val, rng)
        v, t = subset(pool, in_val), subset(pool, ~in_val)
        params = fit_maps(v)
        c_val = cross_fitted_domain_confidences(v["raw"], v["y"], v["domain"], v["qid"], MAPS)
        policy = fit_policy(
            c_val, v["y"], v["domain"], batch_size=len(t["y"]), groups=policy_groups(v), **POLICY
        )
        c_test = apply_calibrator(params, t["raw"], t["domain"])
        c_global = apply_calibrator(params["global"], t["raw"])
        for name, c in (("global", c_global), ("per_domain", c_test)):
            domain_ece[name].append(mean_domain_ece(c, t["y"], t["domain"], N_BINS))
        result = evaluate_policy(policy, c_test, t["y"])
        risk = result["answered_risk"]["value"]
        risks.append(np.nan if risk is None else risk)
        violations += bool(risk is not None and risk > POLICY["answer_risk"])
        for action, share in result["shares"].items():
            shares[action].append(share["value"])
    risks = np.asarray(risks)
    differences = np.subtract(domain_ece["per_domain"], domain_ece["global"])
    return {
        "domain_maps": {
            "mean_domain_ece": {k: float(np.mean(v)) for k, v in domain_ece.items()},
            "delta_mean": float(np.mean(differences)),
            "delta_sd": float(np.std(differences, ddof=1)) if n_splits > 1 else float("nan"),
            "share_per_domain_lower": float(np.mean(differences < 0)),
        },
        "splits": n_splits,
        "violation_share": violations / n_splits,
        "delta": POLICY["delta"],
        "target": POLICY["answer_risk"],
        "answered_risk_mean": float(np.nanmean(risks)) if np.isfinite(risks).any() else None,
        "answered_risk_p95": float(np.nanpercentile(risks, 95))
        if np.isfinite(risks).any()
        else None,
        "splits_answering_nothing": int(np.isnan(risks).sum()),
        "shares_mean": {a: float(np.mean(s)) for a, s in shares.items()},
    }


def draw(pool: dict, n: int, rng, start: int) -> list[dict]:
    """n traffic rows drawn with replacement from a pool, one per minute from `start`."""
    index = rng.integers(0, len(pool["y"]), size=n)
    labeled = rng.uniform(size=n) < LABEL_SHARE
    return [
        {
            "id": start + i,
            "timestamp": START + timedelta(minutes=start + i),
            "domain": str(pool["domain"][j]),
            "confidence": float(pool["c"][j]),
            "raw_confidence": float(pool["raw"][j]),
            "correct": int(pool["y"][j]) if labeled[i] else None,
        }
        for i, j in enumerate(index)
    ]


def mixed(pools: list[tuple[dict, float]], n: int, rng, start: int) -> list[dict]:
    """n rows, each from one of the pools with the given probabilities."""
    rows = []
    choice = rng.choice(len(pools), size=n, p=[p for _, p in pools])
    for i, which in enumerate(choice):
        rows += draw(pools[which][0], 1, rng, start + i)
    return rows


def monitor_stream(rows: list[dict]) -> list[dict]:
    """Alarms of the monitor on a stream whose first REFERENCE items are the reference."""
    monitor = Monitor(reference_from_rows(rows[:REFERENCE]), horizon=len(rows) - REFERENCE)
    return monitor.update(rows[REFERENCE:])


def calibrated_pool(val: dict, test: dict, leave_out: str | None = None) -> tuple[dict, dict]:
    """Test items with confidences from per-domain maps fitted on val (without `leave_out`)."""
    params = fit_maps(val, val["domain"] != leave_out)
    return {**test, "c": apply_calibrator(params, test["raw"], test["domain"])}, params


def first_after(alarms: list[dict], kind: str, change: int) -> int | None:
    """Items after the change until the first alarm of `kind` (None: none after the change)."""
    delays = [a["index"] + REFERENCE - change for a in alarms if a["type"] == kind]
    delays = [d for d in delays if d >= 0]
    return min(delays) if delays else None


def ece_of(rows: list[dict], params: dict | None = None) -> float:
    """ECE of labeled rows: their served confidence, or `params` applied to the raw one."""
    labeled = [r for r in rows if r["correct"] is not None]
    y = np.array([r["correct"] for r in labeled], dtype=float)
    if params is None:
        c = np.array([r["confidence"] for r in labeled])
    else:
        raw = np.array([r["raw_confidence"] for r in labeled])
        c = np.clip(apply_calibrator(params, raw, [r["domain"] for r in labeled]), 0, 1)
    return metrics.ece(c, y)


def drift_benchmark(val: dict, test: dict, n_stationary: int, n_shift: int, seed: int) -> dict:
    """False alarms on stationary streams; detection and delay of unseen-domain and mix shifts."""
    rng = np.random.default_rng(seed)
    pool, _ = calibrated_pool(val, test)
    stationary = [
        monitor_stream(draw(pool, REFERENCE + BEFORE + AFTER, rng, 0)) for _ in range(n_stationary)
    ]
    false_alarms = [bool(a) for a in stationary]
    domains = sorted(set(test["domain"].tolist()))
    change = REFERENCE + BEFORE
    unseen = []
    for i in range(n_shift):
        d = domains[i % len(domains)]
        shifted, params = calibrated_pool(val, test, leave_out=d)
        seen, new = subset(shifted, shifted["domain"] != d), subset(shifted, shifted["domain"] == d)
        rows = draw(seen, change, rng, 0) + mixed([(seen, 0.7), (new, 0.3)], AFTER, rng, change)
        alarms = monitor_stream(rows)
        post = rows[change:]
        refit = refit_calibrator(params, post[:600], REFIT)
        unseen.append(
            {
                "domain": d,
                "domain_accuracy": float(new["y"].mean()),
                "domain_mean_confidence": float(new["c"].mean()),
                "false_alarm_before_change": any(a["index"] + REFERENCE < change for a in alarms),
                "unseen_alarm_delay": first_after(alarms, "unseen_domain", change),
                "drift_alarm_delay": first_after(alarms, "calibration_drift", change),
                "refit_promoted": refit["promoted"],
                "ece_after_change_old": ece_of(post[600:]),
                "ece_after_change_refit": ece_of(
                    post[600:], refit["params"] if refit["promoted"] else params
                ),
                "ece_domain_old": ece_of([r for r in post[600:] if r["domain"] == d]),
                "ece_domain_refit": ece_of(
                    [r for r in post[600:] if r["domain"] == d],
                    refit["params"] if refit["promoted"] else params,
                ),
            }
        )
    accuracy = {d: float(test["y"][test["domain"] == d].mean()) for d in domains}
    low = min(accuracy, key=accuracy.get)
    mix = []
    for _ in range(n_shift):
        rows = draw(pool, change, rng, 0) + mixed(
            [(pool, 0.5), (subset(pool, pool["domain"] == low), 0.5)], AFTER, rng, change
        )
        alarms = monitor_stream(rows)
        mix.append(
            {
                "mix_alarm_delay": first_after(alarms, "domain_mix", change),
                "drift_alarm_delay": first_after(alarms, "calibration_drift", change),
                "false_alarm_before_change": any(a["index"] + REFERENCE < change for a in alarms),
            }
        )
    return {
        "stationary": {
            "streams": n_stationary,
            "items": BEFORE + AFTER,
            "false_alarm_rate": float(np.mean(false_alarms)),
        },
        "unseen_domain": unseen,
        "mix_shift": {"domain": low, "accuracy": accuracy[low], "streams": mix},
        "domain_accuracy_test": accuracy,
    }


def split_figures(val: dict, test: dict, method: str) -> dict:
    """Per-domain calibration and policy on test, computed as the eval stage computes them
    (for prediction files written without an eval stage run: same functions, same settings)."""
    params = fit_maps(val)
    c_global = apply_calibrator(params["global"], test["raw"])
    c_domain = apply_calibrator(params, test["raw"], test["domain"])
    block = domain_calibration_scores(
        c_global, c_domain, test["y"], test["domain"], N_BINS, N_BOOT, 0, test["qid"]
    )
    for domain, entry in block["domains"].items():
        entry["calibrator"] = "per-domain" if domain in params["domains"] else "global (fallback)"
    block.update(method=method, kind=KIND)
    c_val = cross_fitted_domain_confidences(val["raw"], val["y"], val["domain"], val["qid"], MAPS)
    groups = policy_groups(val)
    policy = fit_policy(
        c_val, val["y"], val["domain"], batch_size=len(test["y"]), groups=groups, **POLICY
    )
    policy["test"] = evaluate_policy(policy, c_domain, test["y"])
    policy["certifiable"] = certifiable_risks(
        c_val, val["y"], POLICY["delta"], policy["batch_size"], c_domain, test["y"], groups
    )
    return {"per_domain_calibration": block, "policy": policy}


def eval_figures(eval_dir: Path, computed: dict | None = None) -> list[str]:
    """Per-domain calibration and policy figures on test: the eval stage's metrics.json, or
    `computed` by `split_figures` when there is none."""
    metrics_path = eval_dir / "metrics.json"
    metrics_file = json.loads(metrics_path.read_text()) if metrics_path.is_file() else computed
    block, policy = metrics_file["per_domain_calibration"], metrics_file["policy"]
    mean = block["mean_domain_ece"]

    def value(entry: dict) -> str:
        if entry["value"] is None:
            return f"n/a ({entry.get('reason')})"
        low, high = entry["ci95"]
        return f"{entry['value']:.4f} [{low:.4f}, {high:.4f}]"

    lines = [
        f"test mean per-domain ECE ({block['method']}, {block['kind']}): global map "
        f"{value(mean['global'])}, per-domain maps {value(mean['per_domain'])}, "
        f"delta {value(mean['delta'])}; pooled ECE {block['pooled']['global']['ece']:.4f} -> "
        f"{block['pooled']['per_domain']['ece']:.4f}",
    ]
    for domain, entry in block["domains"].items():
        lines.append(
            f"  {domain}: n={entry['n']} acc={entry['accuracy']:.3f} ECE global "
            f"{entry['global_ece']:.4f} per-domain {entry['per_domain_ece']:.4f} ({entry['calibrator']})"
        )
    if "test" in policy:
        test = policy["test"]
        shares = ", ".join(f"{a} {value(s)}" for a, s in test["shares"].items())
        lines.append(
            f"policy on test: thresholds answer {policy['answer_threshold']}, escalate "
            f"{policy['escalate_threshold']}; answered risk {value(test['answered_risk'])} "
            f"(target {policy['answer_risk']}); shares {shares}"
        )
    return lines


def summarize(results: dict) -> str:
    """The headline lines printed at the end."""
    lines = eval_figures(Path(results["eval_dir"]), results.get("split_figures"))
    floor = results["split_figures"]["per_domain_calibration"]["mean_domain_ece"]["floor"]
    lines.append(
        "mean per-domain ECE if calibrated (floor; the bench's maps): "
        + ", ".join(f"{k} {v['mean']:.4f} ± {v['sd']:.4f}" for k, v in floor.items())
    )
    for row in results["split_figures"]["policy"]["certifiable"]:
        risk = row["test_answered_risk"]["value"]
        lines.append(
            f"  answer risk {row['answer_risk']:.2f}: threshold {row['threshold']}, val share "
            f"{row['val_share']:.3f}, test share {row['test']['value']:.3f}, realised risk "
            f"{'n/a' if risk is None else f'{risk:.3f}'}"
        )
    r = results["policy_resplits"]
    lines.append(
        f"policy re-splits: {r['splits']} splits, violation share {r['violation_share']:.3f} "
        f"(delta {r['delta']}, target {r['target']}), mean answered risk {r['answered_risk_mean']}, "
        f"splits answering nothing {r['splits_answering_nothing']}, "
        f"shares {r['shares_mean']}"
    )
    m = r["domain_maps"]
    lines.append(
        f"per-domain maps over the same re-splits: mean per-domain ECE global "
        f"{m['mean_domain_ece']['global']:.4f}, per-domain {m['mean_domain_ece']['per_domain']:.4f} "
        f"(ratio {m['mean_domain_ece']['per_domain'] / m['mean_domain_ece']['global']:.3f}); "
        f"difference {m['delta_mean']:+.4f} (sd {m['delta_sd']:.4f}), per-domain lower in "
        f"{m['share_per_domain_lower']:.2f} of splits"
    )
    if "drift" not in results:
        return "\n".join(lines)
    d = results["drift"]
    lines.append(
        f"stationary false-alarm rate: {d['stationary']['false_alarm_rate']:.3f} over {d['stationary']['streams']} streams"
    )
    unseen = d["unseen_domain"]
    drift = [u["drift_alarm_delay"] for u in unseen]
    detected = [x for x in drift if x is not None]
    lines.append(
        f"unseen domain: calibration alarm in {len(detected)}/{len(unseen)} streams, "
        f"median delay {np.median(detected) if detected else 'n/a'} items; unseen-domain alarm "
        f"median delay {np.median([u['unseen_alarm_delay'] for u in unseen if u['unseen_alarm_delay'] is not None])}"
    )
    lines.append(
        f"refit: post-change ECE {np.mean([u['ece_after_change_old'] for u in unseen]):.3f} -> "
        f"{np.mean([u['ece_after_change_refit'] for u in unseen]):.3f} (mean over streams); "
        f"promoted in {sum(u['refit_promoted'] for u in unseen)}/{len(unseen)}"
    )
    mix = d["mix_shift"]["streams"]
    mix_delays = [m["mix_alarm_delay"] for m in mix if m["mix_alarm_delay"] is not None]
    lines.append(
        f"mix shift to {d['mix_shift']['domain']}: mix alarm in {len(mix_delays)}/{len(mix)}, "
        f"median delay {np.median(mix_delays) if mix_delays else 'n/a'} items"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run both parts and print / save the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("eval_dir", type=Path)
    parser.add_argument("--resplits", type=int, default=200)
    parser.add_argument("--stationary", type=int, default=100)
    parser.add_argument("--shift-streams", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--method", default=METHOD)
    parser.add_argument("--answer-risk", type=float, default=POLICY["answer_risk"])
    parser.add_argument("--escalate-risk", type=float, default=POLICY["escalate_risk"])
    parser.add_argument(
        "--shrinkage", default=SHRINKAGE, help="auto (the eval default; slow: nested folds), or N"
    )
    parser.add_argument("--no-drift", action="store_true", help="per-domain maps and policy only")
    parser.add_argument("--resplit-by", choices=("question", "row", "entity"), default="question")
    parser.add_argument("--unit", choices=("row", "group"), default="row")
    parser.add_argument("--groups-from", type=Path, default=None, help="labeled data dir")
    args = parser.parse_args(argv)
    import_calibtune()
    MAPS["shrinkage"] = args.shrinkage if args.shrinkage == "auto" else float(args.shrinkage)
    POLICY.update(answer_risk=args.answer_risk, escalate_risk=args.escalate_risk)
    POLICY_UNIT["unit"] = args.unit
    entity = entity_groups_of(args.groups_from)
    val = load(args.eval_dir, "val_predictions.jsonl", args.method, entity)
    test = load(args.eval_dir, "predictions.jsonl", args.method, entity)
    units = (with_units(val, "val", args.resplit_by), with_units(test, "test", args.resplit_by))
    results = {
        "eval_dir": str(args.eval_dir),
        "method": args.method,
        "n_val": len(val["y"]),
        "n_test": len(test["y"]),
        "unit": args.unit,
        "resplit_by": args.resplit_by,
        "split_figures": split_figures(*units, args.method),
        "policy_resplits": policy_resplits(*units, args.resplits, args.seed),
    }
    if not args.no_drift:
        results["drift"] = drift_benchmark(
            val, test, args.stationary, args.shift_streams, args.seed
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(summarize(results))


if __name__ == "__main__":
    sys.exit(main())
