"""Methods compared on val (never test): AUROC, ECE and Brier of each named confidence on the
val predictions of finished evals, per run and the mean over runs. What the default preset was
chosen on in distribution (issue 12; docs/training.md).

    PYTHONPATH=src .venv/bin/python benchmarks/compare_on_val.py <eval dir> [<eval dir> ...] \
        [--methods tuned/ptrue baseline/probe ...]

Reads <eval dir>/val_predictions.jsonl (written by every eval); nothing is re-run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from calibtune.metrics import auroc, brier, ece

DEFAULT_METHODS = ("base/ptrue", "base/pmin", "baseline/logreg", "baseline/probe", "tuned/ptrue")


def val_scores(eval_dir: Path, methods: list[str]) -> dict[str, tuple[float, float, float]]:
    """(AUROC, ECE, Brier) on val of each method present in the run's val predictions."""
    rows = [json.loads(line) for line in (eval_dir / "val_predictions.jsonl").open()]
    y = np.array([float(r["correct"]) for r in rows])
    out = {}
    for name in methods:
        if name not in rows[0] or rows[0][name] is None:
            continue
        c = np.array([float(r[name]) for r in rows])
        out[name] = (auroc(c, y), ece(c, y), brier(c, y))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_dirs", nargs="+", type=Path)
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    args = parser.parse_args()
    per_run = {d: val_scores(d, args.methods) for d in args.eval_dirs}
    print("| run | method | val AUROC | val ECE | val Brier |\n|---|---|---|---|---|")
    for run, scores in per_run.items():
        for name, (a, e, b) in scores.items():
            print(f"| {run} | {name} | {a:.3f} | {e:.3f} | {b:.3f} |")
    print("\n| mean over runs | val AUROC | val ECE | val Brier | runs |\n|---|---|---|---|---|")
    for name in args.methods:
        values = [s[name] for s in per_run.values() if name in s]
        if values:
            mean = np.mean(values, axis=0)
            print(f"| {name} | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.3f} | {len(values)} |")


if __name__ == "__main__":
    main()
