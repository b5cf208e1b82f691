"""Would per-domain maps lower the default probe's mean per-domain ECE if they were fitted on more
labeled rows? Val has about 17 rows a domain; the train rows, scored out of fold (5 entity-group
folds of train, each fold scored by a probe fitted on the other four, as sklearn's
CalibratedClassifierCV(ensemble=False) scores its calibration rows), add about 83 more.

    PYTHONPATH=src .venv/bin/python benchmarks/domain_maps_more_rows.py <run dir> [--splits 40]

One base-model pass over the run's train, val and test rows (the eval's code path, hidden state
at the follow-up query) is cached in <run dir>/probe_features_train_val_test.npz. The probe is
refitted on train (the default's fit; the largest difference from the run's tuned/ptrue is
printed). Val and test pooled are re-split at random by entity group into the run's val / test
sizes; on each split, per-domain maps with the eval's defaults (Platt shrunk toward the global
map, strength `auto` on entity-group folds, min_count 40) are fitted on the val part alone and on
the val part plus the out-of-fold train rows, and each map's mean per-domain ECE is measured on
the test part. Prints, per source of rows, the mean over splits of the global map's and the
per-domain maps' figure, their difference's mean and sd, and the share of splits where the
per-domain maps are lower; the per-domain maps on val + train against the global map on val
alone; and the eval's rule (eval.domain_calibration.add_train=auto: the train rows join when they
lower the held-out log loss on group folds of the val part), with the share of splits where they
joined.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from bench_production import question_split
from lodo_probe_features import fold_features

from calibtune.eval.recalibrate import apply_calibrator, fit_domain_calibrators, held_out_losses
from calibtune.eval.scoring import mean_domain_ece
from calibtune.io import read_jsonl
from calibtune.models.probe import fit_linear_probe, out_of_fold_probabilities

N_BINS = 15
MAPS = {"kind": "platt", "min_count": 40, "n_bins": N_BINS, "shrinkage": "auto"}  # eval defaults


def probe_confidences(features: dict, seed: int) -> dict[str, np.ndarray]:
    """The probe fitted on all of train scored on val and test, and train scored out of fold."""
    x, groups = features["train/hidden"], features["train/group"]
    y = (features["train/y"] >= 0.5).astype(int)
    probe, _ = fit_linear_probe(x, y, groups, seed)
    out = {split: probe.probability(features[f"{split}/hidden"]) for split in ("val", "test")}
    out["train"] = out_of_fold_probabilities(x, y, groups, seed)  # as the train stage writes
    return out


def map_figures(rows: dict, test: dict) -> dict[str, float]:
    """Mean per-domain ECE on `test` of the global and the per-domain maps fitted on `rows`."""
    params = fit_domain_calibrators(
        c=rows["c"], y=rows["y"], domains=rows["domain"], groups=rows["group"], **MAPS
    )
    maps = {
        "global": apply_calibrator(params["global"], test["c"]),
        "per_domain": apply_calibrator(params, test["c"], test["domain"]),
    }
    return {name: mean_domain_ece(c, test["y"], test["domain"], N_BINS) for name, c in maps.items()}


def summary(name: str, lower: list[float], higher: list[float]) -> str:
    """Mean of each, and the difference's mean, sd and share below zero."""
    d = np.subtract(lower, higher)
    return (
        f"{name}: {np.mean(lower):.4f} vs {np.mean(higher):.4f}, difference {d.mean():+.4f} "
        f"(sd {d.std(ddof=1):.4f}), lower in {np.mean(d < 0):.2f} of splits"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--splits", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    features = fold_features(args.run_dir, ("train", "val", "test"))
    c = probe_confidences(features, args.seed)
    served = [r["tuned/ptrue"] for r in read_jsonl(args.run_dir / "eval" / "predictions.jsonl")]
    gap = np.abs(c["test"] - served).max()
    print(f"refitted probe vs the run's test confidences: max |diff| {gap:.1e}")
    fields = ("y", "domain", "group")
    rows = {s: {"c": c[s], **{k: features[f"{s}/{k}"] for k in fields}} for s in c}
    pool = {k: np.concatenate([rows["val"][k], rows["test"][k]]) for k in rows["val"]}
    train = rows["train"]
    rng = np.random.default_rng(args.seed)
    entities, members = np.unique(pool["group"], return_inverse=True)
    figures: dict[str, list[float]] = {}
    for k in range(args.splits):
        in_val = question_split(entities, members, rows["val"]["y"].size, rng)  # by entity
        val = {key: v[in_val] for key, v in pool.items()}
        test = {key: v[~in_val] for key, v in pool.items()}
        more = {key: np.concatenate([val[key], train[key]]) for key in val}
        split = {f"val/{m}": v for m, v in map_figures(val, test).items()}
        split |= {f"val+train/{m}": v for m, v in map_figures(more, test).items()}
        # the eval's add_train=auto: train rows added when they lower val's held-out log loss
        losses = held_out_losses(val["c"], val["y"], val["domain"], val["group"], MAPS, train)
        chosen = "val+train" if losses["val+train"] < losses["val"] else "val"
        split |= {f"auto/{m}": split[f"{chosen}/{m}"] for m in ("global", "per_domain")}
        split["auto/added"] = float(chosen == "val+train")
        for key, value in split.items():
            figures.setdefault(key, []).append(value)
        print(k, {key: round(v, 4) for key, v in split.items()}, flush=True)
    print(f"\nmean per-domain ECE on the test part, {args.splits} entity re-splits of val + test:")
    print(
        summary(
            "maps on val: per-domain vs global", figures["val/per_domain"], figures["val/global"]
        )
    )
    print(
        summary(
            "maps on val + out-of-fold train: per-domain vs global",
            figures["val+train/per_domain"],
            figures["val+train/global"],
        )
    )
    print(
        summary(
            "per-domain on val + train vs global on val",
            figures["val+train/per_domain"],
            figures["val/global"],
        )
    )
    print(
        summary(
            "add_train=auto (the eval's default): per-domain vs global",
            figures["auto/per_domain"],
            figures["auto/global"],
        )
        + f"; train rows added in {np.mean(figures['auto/added']):.2f} of splits"
    )


if __name__ == "__main__":
    main()
