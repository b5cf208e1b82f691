"""Do stacked confidences transfer to unseen domains? On the folds of a `calibtune lodo` run,
fit a logistic regression on each fold's val predictions (seen domains only) over the logits of
some confidences (tuned ptrue with the base answer-token signals, ...), score it on the fold's
test (its held-out domains), and print fold means side by side with the single signals.

    PYTHONPATH=src .venv/bin/python benchmarks/lodo_combine.py outputs/lodo [min_per_class]

Reads <run>/fold*/eval/val_predictions.jsonl and predictions.jsonl (written by every eval);
nothing is re-run. Within-domain AUROC averages the held-out domains holding at least
`min_per_class` (default 10, as eval.within_min_per_class) right and wrong answers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from calibtune.metrics import auroc, auroc_within, brier, ece

SINGLE = ("base/ptrue", "base/pmin", "baseline/logreg", "baseline/probe", "tuned/ptrue")
STACKS = {
    "stack: tuned ptrue + pmin": ("tuned/ptrue", "base/pmin"),
    "stack: tuned ptrue + pavg, pmin, seqlogp": (
        "tuned/ptrue",
        "base/pavg",
        "base/pmin",
        "base/seqlogp",
    ),
    "stack: pavg, pmin, seqlogp": ("base/pavg", "base/pmin", "base/seqlogp"),
    "stack: tuned + base ptrue + pavg, pmin, seqlogp": (
        "tuned/ptrue",
        "base/ptrue",
        "base/pavg",
        "base/pmin",
        "base/seqlogp",
    ),
    "stack: probe + pmin": ("baseline/probe", "base/pmin"),
    "stack: probe + pavg, pmin, seqlogp": (
        "baseline/probe",
        "base/pavg",
        "base/pmin",
        "base/seqlogp",
    ),
    "stack: tuned ptrue + probe + pavg, pmin, seqlogp": (
        "tuned/ptrue",
        "baseline/probe",
        "base/pavg",
        "base/pmin",
        "base/seqlogp",
    ),
}


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def logits(rows: list[dict], names: tuple[str, ...]) -> np.ndarray:
    """[N, len(names)] logits of the named confidences."""
    p = np.clip(np.array([[r[n] for n in names] for r in rows], dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def fold_confidences(eval_dir: Path) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
    """Test confidences of the single signals and of each stack fitted on val."""
    val, test = (
        read_rows(eval_dir / "val_predictions.jsonl"),
        read_rows(eval_dir / "predictions.jsonl"),
    )
    y_val = (np.array([r["correct"] for r in val], dtype=float) >= 0.5).astype(int)
    out = {
        name: np.array([r[name] for r in test], dtype=float) for name in SINGLE if name in test[0]
    }
    for name, inputs in STACKS.items():
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        model.fit(logits(val, inputs), y_val)
        out[name] = model.predict_proba(logits(test, inputs))[:, 1]
    y_test = np.array([r["correct"] for r in test], dtype=float)
    return out, y_test, [r["domain"] for r in test]


def main() -> None:
    run = Path(sys.argv[1])
    min_per_class = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    table: dict[str, list[tuple[float, ...]]] = {}
    folds = sorted(run.glob("fold*/eval"))
    for eval_dir in folds:
        confidences, y, domains = fold_confidences(eval_dir)
        for name, c in confidences.items():
            within = auroc_within(c, y, domains, min_per_class).value
            row = (ece(c, y), brier(c, y), auroc(c, y), np.nan if within is None else within)
            table.setdefault(name, []).append(row)
    print(
        f"{run}: {len(folds)} folds; fold mean ± sd (within: domains with >= {min_per_class} of each class)"
    )
    print(f"| {'confidence':48s} | ECE | Brier | AUROC pooled | AUROC within |")
    print("|---|---|---|---|---|")
    for name, rows in table.items():
        a = np.array(rows, dtype=float)
        cells = [f"{np.nanmean(a[:, k]):.3f} ± {np.nanstd(a[:, k], ddof=1):.3f}" for k in range(4)]
        print(f"| {name:48s} | " + " | ".join(cells) + " |")
        print(
            f"|   per fold ECE {np.round(a[:, 0], 3).tolist()}  within {np.round(a[:, 3], 3).tolist()}"
        )


if __name__ == "__main__":
    main()
