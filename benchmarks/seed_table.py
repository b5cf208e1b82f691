"""Test figures of several runs (e.g. seeds) from their eval predictions, mean ± sd over runs.

    PYTHONPATH=src .venv/bin/python benchmarks/seed_table.py <run dir> [<run dir> ...]
        [--min-per-class 10] [--methods tuned/ptrue,base/ptrue,base/pmin,baseline/logreg]

Reads each <run>/eval/predictions.jsonl (every method's test confidence per row) and scores it
with the eval stage's own functions (calibtune.eval.scoring: score_method for ECE / AUROC /
Brier, within_domain for the within-domain figures over the domains with at least
`--min-per-class` right and wrong answers), so runs evaluated with another
eval.within_min_per_class are put on one footing without a model pass. Checks that the pooled
figures equal each run's metrics.json (printed: the largest difference) and prints a markdown
table, one row per method and metric: each run's value and the mean ± sample sd.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

from calibtune.eval.scoring import score_method, within_domain
from calibtune.io import read_jsonl

POOLED = ("ece", "auroc", "brier")
WITHIN = ("auroc_within", "ece_within", "brier_within")
METHODS = "tuned/ptrue,base/ptrue,base/pmin,baseline/logreg"


def run_figures(run: Path, methods: list[str], min_per_class: int) -> tuple[dict, float]:
    """{method: {metric: value}} of one run's test predictions, and the largest difference of
    its pooled figures from the run's metrics.json."""
    recorded = json.loads((run / "eval" / "metrics.json").read_text())
    rows = read_jsonl(run / "eval" / "predictions.jsonl")
    y = np.array([float(r["correct"]) for r in rows])
    domains = [r["domain"] for r in rows]
    confidences = {m: np.array([r.get(m, np.nan) for r in rows], dtype=float) for m in methods}
    within = within_domain(domains, y, confidences, recorded["n_bins"], min_per_class)
    figures, difference = {}, 0.0
    for method, c in confidences.items():
        pooled = score_method(c, y, recorded["n_bins"])
        figures[method] = {name: pooled[name] for name in POOLED}
        figures[method].update({name: within[method][name] for name in WITHIN})
        figures[method]["n_domains_within"] = len(within[method]["domains"])
        for name in POOLED:
            difference = max(difference, abs(pooled[name] - recorded["methods"][method][name]))
    figures["accuracy"] = {"value": float(y.mean())}
    return figures, difference


def cell(values: list[float | None]) -> str:
    """Each run's value, then mean ± sd over the runs that have one."""
    present = [v for v in values if v is not None]
    runs = " / ".join("n/a" if v is None else f"{v:.3f}" for v in values)
    if len(present) < 2:
        return f"{runs} |"
    return f"{runs} | {statistics.mean(present):.3f} ± {statistics.stdev(present):.3f}"


def main(argv: list[str] | None = None) -> None:
    """Score every run and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--min-per-class", type=int, default=10)
    parser.add_argument("--methods", default=METHODS)
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    results = []
    for run in args.runs:
        figures, difference = run_figures(run, methods, args.min_per_class)
        print(f"{run}: pooled figures differ from its metrics.json by at most {difference:.1e}")
        results.append(figures)
    print(f"\nwithin: domains with >= {args.min_per_class} right and wrong test answers")
    print("| method | metric | " + " / ".join(r.name for r in args.runs) + " | mean ± sd |")
    print("|---|---|---|---|")
    print(f"| | accuracy | {cell([r['accuracy']['value'] for r in results])} |")
    for method in methods:
        for name in (*POOLED, *WITHIN, "n_domains_within"):
            print(f"| {method} | {name} | {cell([r[method][name] for r in results])} |")


if __name__ == "__main__":
    main()
