"""`calibtune leaderboard --aggregate <multirun dir>`: mean ± sd of every headline eval metric over
the runs of a multirun (e.g. `calibtune run -m seed=0,1,2`), written to aggregate.csv and
aggregate.md in that dir (or --out)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path

from calibtune.errors import CalibtuneError
from calibtune.io import write_json_atomic, write_text_atomic

METHODS = (
    "base/ptrue",
    "tuned/ptrue",
    "base/pavg",  # the raw base signals: the unseen-domain goal compares with the best of them
    "base/pmin",
    "base/seqlogp",
    "baseline/domain_prior",
    "baseline/logreg",
    "baseline/probe",
)
METRICS = ("auroc", "auroc_within", "ece", "ece_within", "brier", "brier_within")


def find_eval_metrics(run_dir: Path) -> list[Path]:
    """Every eval stage metrics.json below `run_dir` (one per run), in path order."""
    found = []
    for path in sorted(run_dir.rglob("metrics.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            continue
        if isinstance(data, dict) and "methods" in data and "deltas" in data:
            found.append(path)
    return found


def headline_numbers(metrics: dict, methods_shown: Sequence[str] = METHODS) -> dict[str, float]:
    """One run's headline numbers, flat: accuracy, each method's pooled and within-domain
    metrics (the best baseline on val as `best_baseline`), and the deltas' values."""
    numbers: dict[str, float | None] = {"accuracy": metrics.get("accuracy")}
    versus = metrics.get("deltas_vs_best_baseline") or {}
    methods = {m: metrics["methods"].get(m) for m in methods_shown}
    methods["best_baseline"] = metrics["methods"].get(versus.get("baseline") or "")
    for method, scores in methods.items():
        for name in METRICS:
            numbers[f"{method}/{name}"] = (scores or {}).get(name)
    for prefix, deltas in (("delta", metrics["deltas"]), ("vs_best", versus.get("deltas") or {})):
        for name in METRICS:
            numbers[f"{prefix}/{name}"] = (deltas.get(name) or {}).get("value")
    return {k: float(v) for k, v in numbers.items() if v is not None}


def aggregate(runs: list[dict[str, float]]) -> dict[str, dict]:
    """mean, sample sd (None for one run) and n of every number, over the runs that have it."""
    names = sorted({name for run in runs for name in run})
    table = {}
    for name in names:
        values = [run[name] for run in runs if name in run]
        sd = statistics.stdev(values) if len(values) > 1 else None
        table[name] = {"mean": statistics.fmean(values), "sd": sd, "n": len(values)}
    return table


def markdown(table: dict[str, dict], runs: list[str], best: list[str | None]) -> str:
    """The aggregate as a markdown table, with the runs and each run's best baseline."""
    lines = [
        f"Runs ({len(runs)}): {', '.join(runs)}",
        f"Best baseline on val, per run: {', '.join(str(b) for b in best)}",
        "",
        "| metric | mean ± sd | n |",
        "|---|---|---|",
    ]
    for name, entry in table.items():
        sd = "n/a (one run)" if entry["sd"] is None else f"{entry['sd']:.3f}"
        lines.append(f"| {name} | {entry['mean']:.3f} ± {sd} | {entry['n']} |")
    return "\n".join(lines) + "\n"


def run_aggregate(run_dir: Path, out: Path | None = None) -> str:
    """Aggregate every run's eval metrics below `run_dir`; write aggregate.json/.md; the table."""
    paths = find_eval_metrics(run_dir)
    if not paths:
        raise CalibtuneError(
            f"{run_dir}: no eval metrics.json below it; is this the dir `calibtune run -m` printed?"
        )
    loaded = [json.loads(p.read_text(encoding="utf-8")) for p in paths]
    table = aggregate([headline_numbers(m) for m in loaded])
    names = [str(p.parent.relative_to(run_dir)) for p in paths]
    best = [(m.get("deltas_vs_best_baseline") or {}).get("baseline") for m in loaded]
    out = out or run_dir
    text = markdown(table, names, best)
    write_json_atomic(out / "aggregate.json", {"runs": names, "best_baseline": best, **table})
    write_text_atomic(out / "aggregate.md", text)
    return text
