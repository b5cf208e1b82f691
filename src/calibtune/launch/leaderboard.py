"""`calibtune leaderboard <sweep dir>`: every trial of a sweep in one ranked table.

    calibtune leaderboard multirun/train/2026-11-22_15-30-00
    calibtune leaderboard <sweep dir> --metric val/auroc --direction maximize
    calibtune leaderboard --aggregate <multirun dir>   (mean ± sd over seeds: launch/aggregate.py)

Finds every train output (manifest.json of stage "train") under the sweep dir, reads each trial's
numbers (calibtune.launch.sweep.trial_metrics) and its Hydra overrides, and writes:
a terminal table ranked by the metric, `leaderboard.csv`, and `leaderboard.png`: accuracy
against ECE with the Pareto front (no other trial is both more accurate and better calibrated)
marked. Without answer accuracy (trials that ran train only) the x axis is val AUROC instead.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from calibtune.errors import CalibtuneError
from calibtune.io import atomic_path, write_text_atomic
from calibtune.launch.aggregate import run_aggregate
from calibtune.launch.sweep import TRAIN_MANIFEST, trial_metrics

COLUMNS = (
    "val/ece",
    "val/brier",
    "val/auroc",
    "base_val/ece",
    "test/ece",
    "base_test/ece",
    "accuracy/tuned",
    "accuracy_drop",
)


@dataclass
class Trial:
    """One trial of a sweep: where it is, its Hydra overrides, its numbers."""

    name: str
    path: Path
    overrides: list[str]
    metrics: dict = field(default_factory=dict)


def find_trials(sweep_dir: Path) -> list[Trial]:
    """Every train stage output under `sweep_dir` (a trial's run dir holds train/, maybe eval/)."""
    trials = []
    for manifest in sorted(sweep_dir.rglob(TRAIN_MANIFEST)):
        try:
            stage = json.loads(manifest.read_text(encoding="utf-8")).get("stage")
        except ValueError:
            continue
        if stage != "train":
            continue
        train_dir = manifest.parent
        trial_dir = train_dir.parent if train_dir.name == "train" else train_dir
        overrides_file = trial_dir / ".hydra" / "overrides.yaml"
        overrides = list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
        eval_dir = trial_dir / "eval"
        trials.append(
            Trial(
                name=str(trial_dir.relative_to(sweep_dir)) if trial_dir != sweep_dir else ".",
                path=trial_dir,
                overrides=[str(o) for o in overrides if not str(o).startswith("+sweep=")],
                metrics=trial_metrics(train_dir, eval_dir if eval_dir.is_dir() else None),
            )
        )
    return trials


def rank(trials: list[Trial], metric: str, direction: str) -> list[Trial]:
    """Best first by `metric`; trials without it last (in name order)."""
    sign = 1.0 if direction == "minimize" else -1.0

    def key(trial: Trial) -> tuple:
        value = trial.metrics.get(metric)
        return (value is None, sign * value if value is not None else 0.0, trial.name)

    return sorted(trials, key=key)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points (accuracy, ece) that no other point beats on both (higher acc, lower ece)."""
    front = []
    for i, (acc, ece) in enumerate(points):
        dominated = any(
            a >= acc and e <= ece and (a > acc or e < ece)
            for j, (a, e) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def columns_present(trials: list[Trial], metric: str) -> list[str]:
    """The metric first, then the standard columns that at least one trial has."""
    names = [metric] + [c for c in COLUMNS if c != metric]
    return [c for c in names if any(t.metrics.get(c) is not None for t in trials)]


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value))


def varying_overrides(trials: list[Trial]) -> list[list[str]]:
    """Each trial's overrides without those every trial shares (what the sweep changed)."""
    shared = set.intersection(*(set(t.overrides) for t in trials)) if len(trials) > 1 else set()
    return [[o for o in t.overrides if o not in shared] for t in trials]


def format_table(trials: list[Trial], columns: list[str]) -> str:
    """A plain fixed-width table: rank, trial, columns, and the overrides that differ."""
    header = ["rank", "trial", *columns, "overrides"]
    rows = [
        [str(i), t.name, *(_fmt(t.metrics.get(c)) for c in columns), " ".join(changed)]
        for i, (t, changed) in enumerate(zip(trials, varying_overrides(trials), strict=True), 1)
    ]
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def write_csv(path: Path, trials: list[Trial], columns: list[str]) -> None:
    """leaderboard.csv: one row per trial in rank order (empty cells where a number is missing)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["rank", "trial", *columns, "overrides", "path"])
    for i, t in enumerate(trials, start=1):
        values = [t.metrics.get(c) for c in columns]
        writer.writerow(
            [i, t.name, *("" if v is None else v for v in values), " ".join(t.overrides), t.path]
        )
    write_text_atomic(path, buffer.getvalue())


def plot_axes(trials: list[Trial]) -> tuple[str, str]:
    """(x, y) keys of the plot: answer accuracy vs test ECE when measured, else val AUROC vs val ECE."""

    def everyone_has(key: str) -> bool:
        return all(t.metrics.get(key) is not None for t in trials)

    x = "accuracy/tuned" if everyone_has("accuracy/tuned") else "val/auroc"
    y = "test/ece" if everyone_has("test/ece") else "val/ece"
    return x, y


def write_plot(path: Path, trials: list[Trial]) -> list[str]:
    """leaderboard.png: x (accuracy) against y (ECE) per trial, Pareto front joined and labelled.
    Returns the names of the trials on the front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key, y_key = plot_axes(trials)
    shown = [
        t
        for t in trials
        if t.metrics.get(x_key) is not None
        and t.metrics.get(y_key) is not None
        and math.isfinite(t.metrics[x_key])
    ]
    points = [(t.metrics[x_key], t.metrics[y_key]) for t in shown]
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter([p[0] for p in points], [p[1] for p in points], color="0.6", label="trial")
    front_points = sorted(points[i] for i in front)
    ax.plot(
        [p[0] for p in front_points],
        [p[1] for p in front_points],
        "o-",
        color="tab:red",
        label="Pareto front",
    )
    for i in front:
        ax.annotate(shown[i].name, points[i], textcoords="offset points", xytext=(4, 4))
    x_label = (
        "answer accuracy (tuned)"
        if x_key == "accuracy/tuned"
        else "val AUROC (no answer accuracy measured)"
    )
    ax.set_xlabel(x_label)
    ax.set_ylabel(f"{y_key.replace('/', ' ').upper()} (lower is better)")
    ax.set_title(f"{len(shown)} trials")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return [shown[i].name for i in front]


def sweep_objective(sweep_dir: Path) -> tuple[str, str]:
    """The `sweep.metric` and `sweep.direction` a sweep ran with (its multirun.yaml), else
    val/ece, minimize."""
    path = sweep_dir / "multirun.yaml"
    sweep = OmegaConf.load(path).get("sweep") if path.is_file() else None
    if not sweep or not sweep.get("metric"):
        return "val/ece", "minimize"
    return str(sweep.metric), str(sweep.get("direction") or "minimize")


def main(argv: Sequence[str] | None = None) -> None:
    """Rank a sweep's trials: print the table, write leaderboard.csv and leaderboard.png."""
    parser = argparse.ArgumentParser(
        prog="calibtune leaderboard", description=__doc__.split("\n")[0]
    )
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument(
        "--metric", help="rank by this number (default: the sweep's sweep.metric, else val/ece)"
    )
    parser.add_argument("--direction", choices=("minimize", "maximize"))
    parser.add_argument(
        "--out", type=Path, help="where to write the CSV and plot (default: the sweep dir)"
    )
    parser.add_argument(
        "--aggregate",
        action="store_true",
        help="mean ± sd of the headline eval metrics over the dir's runs (e.g. seeds)",
    )
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        raise CalibtuneError(f"{args.sweep_dir}: no such sweep directory")
    if args.aggregate:
        print(run_aggregate(args.sweep_dir, args.out))
        return
    trials = find_trials(args.sweep_dir)
    if not trials:
        raise CalibtuneError(
            f"{args.sweep_dir}: no finished trials (no train manifest.json below it); "
            "is this the sweep dir that `calibtune train -m` printed?"
        )
    sweep_metric, sweep_direction = sweep_objective(args.sweep_dir)
    args.metric = args.metric or sweep_metric
    args.direction = args.direction or (sweep_direction if args.metric == sweep_metric else None)
    args.direction = args.direction or "minimize"
    ranked = rank(trials, args.metric, args.direction)
    columns = columns_present(ranked, args.metric)
    out = args.out or args.sweep_dir
    write_csv(out / "leaderboard.csv", ranked, columns)
    front = write_plot(out / "leaderboard.png", ranked)
    print(format_table(ranked, columns))
    print(f"\nranked by {args.metric} ({args.direction}); Pareto front: {', '.join(front)}")
    print(f"wrote {out / 'leaderboard.csv'} and {out / 'leaderboard.png'}")
