"""How each method scales with labeled rows: train on N of a labeled set's train rows (a seeded
subset, `train.max_examples`), evaluate on its val and test, for each method, N and seed; print
a Markdown table (mean ± sd over seeds) and plot AUROC and ECE against N.

    .venv/bin/python benchmarks/bench_label_scaling.py <labeled data dir> --out <dir>
        [--methods probe alora_head] [--sizes 1000 2500 5000 10000] [--seeds 0 1 2]
        [--split test] [--plot label_scaling.png] [--overrides key=value ...] [--finished-only]

Each (method, N, seed) trains into <out>/<method>-n<N>-s<seed>/train and evaluates into its
eval/ with the eval's defaults less verbalized confidence (`eval.verbalized.enabled=false`);
a run whose eval/metrics.json exists is reused, so an interrupted scan picks up where it
stopped; `--finished-only` trains nothing and reports the finished runs alone (a method scanned
on fewer seeds or sizes than another, in one table and plot). The labeled set is any data stage output (e.g. `calibtune data run_dir=outputs/scale
data.n_examples=11500 data.val_size=500 data.test_size=1000`); sizes larger than its train
split are skipped with a note. `--overrides` are Hydra overrides for both stages (e.g.
`optim.lr=1e-4`). The figures are `tuned/ptrue`'s, scored from the predictions as `calibtune results` scores
them: AUROC, within-domain AUROC, ECE (15 bins), Brier.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

METRICS = ("auroc", "auroc_within", "ece", "brier")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="bench_label_scaling.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("data_dir", type=Path, help="a labeled set (data stage output)")
    parser.add_argument("--out", type=Path, required=True, help="where the runs go")
    parser.add_argument("--methods", nargs="+", default=["probe"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2500, 5000, 10000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--split", default="test", choices=("val", "test"))
    parser.add_argument("--plot", type=Path, default=None, help="write the plot (PNG) here")
    parser.add_argument(
        "--overrides", nargs="+", default=[], help="Hydra overrides for train and eval"
    )
    parser.add_argument(
        "--finished-only", action="store_true", help="train nothing: report finished runs"
    )
    return parser.parse_args(argv)


def train_rows(data_dir: Path) -> int:
    """The number of rows in the labeled set's train split."""
    with (data_dir / "train.jsonl").open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def run_one(args: argparse.Namespace, method: str, size: int, seed: int) -> Path | None:
    """Train and evaluate one (method, N, seed) unless its eval already finished; its eval dir
    (None: not finished, with --finished-only)."""
    from calibtune.config import compose
    from calibtune.eval.stage import run_eval_stage
    from calibtune.train.recipe import run_train_stage

    run_dir = args.out / f"{method}-n{size}-s{seed}"
    eval_dir = run_dir / "eval"
    if (eval_dir / "metrics.json").is_file():
        return eval_dir
    if args.finished_only:
        return None
    shared = [f"run_dir={run_dir}", f"seed={seed}", f"method={method}", *args.overrides]
    train = [
        f"train.data_dir={args.data_dir}",
        f"train.max_examples={size}",
        "train.progress=false",
    ]
    run_train_stage(compose("train", [*shared, *train]))
    evaluation = [
        f"eval.data_dir={args.data_dir}",
        f"eval.adapter={run_dir / 'train'}",
        "eval.verbalized.enabled=false",
        "eval.progress=false",
    ]
    run_eval_stage(compose("eval", [*shared, *evaluation]))
    return eval_dir


def split_figures(eval_dir: Path, split: str) -> dict[str, float | None]:
    """AUROC, within-domain AUROC, ECE and Brier of tuned/ptrue on `split`, scored from the
    eval's predictions as `calibtune results` scores them."""
    from calibtune.launch.results import min_per_class_of, rescored

    name = "predictions.jsonl" if split == "test" else "val_predictions.jsonl"
    scores = rescored(eval_dir / name, ["tuned/ptrue"], 15, min_per_class_of(eval_dir))
    figures = scores["methods"]["tuned/ptrue"]
    return {m: None if figures.get(m) is None else float(figures[m]) for m in METRICS}


def summarise(figures: dict[tuple[str, int], list[dict]]) -> dict[tuple[str, int], dict]:
    """Mean and sd (0 for one seed) of each metric over the seeds that have it, per (method, N);
    (None, None) where none has it (within-domain AUROC needs both outcomes in a domain)."""
    out = {}
    for key, runs in figures.items():
        out[key] = {"seeds": len(runs)}
        for name in METRICS:
            values = [r[name] for r in runs if r[name] is not None]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            out[key][name] = (statistics.fmean(values), sd) if values else (None, None)
    return out


def cell(mean: float | None, sd: float | None) -> str:
    """A table cell: mean ± sd, or n/a."""
    return "n/a" if mean is None else f"{mean:.3f} ± {sd:.3f}"


def table(summary: dict[tuple[str, int], dict], split: str) -> str:
    """The Markdown table: one row per method and N."""
    lines = [
        f"| method | labeled rows | seeds | {split} AUROC | within-domain AUROC | ECE | Brier |",
        "|---|---|---|---|---|---|---|",
    ]
    for (method, size), entry in sorted(summary.items()):
        cells = [cell(*entry[m]) for m in METRICS]
        lines.append(f"| {method} | {size:,} | {entry['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: dict[tuple[str, int], dict], split: str, path: Path) -> None:
    """AUROC and ECE against labeled rows (log scale), one line per method, sd as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for method in sorted({m for m, _ in summary}):
        sizes = sorted(n for m, n in summary if m == method)
        for axis, name in zip(axes, ("auroc", "ece"), strict=True):
            means = [summary[(method, n)][name][0] for n in sizes]
            sds = [summary[(method, n)][name][1] for n in sizes]
            axis.errorbar(sizes, means, yerr=sds, marker="o", capsize=3, label=method)
    for axis, name in zip(axes, ("AUROC", "ECE (15 bins)"), strict=True):
        axis.set_xscale("log")
        axis.set_xlabel("labeled training rows")
        axis.set_ylabel(f"{split} {name}")
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    """Run the scan, print the table, write the plot; returns the summary."""
    args = parse_args(argv)
    available = train_rows(args.data_dir)
    figures: dict[tuple[str, int], list[dict]] = {}
    for method in args.methods:
        for size in args.sizes:
            if size > available:
                print(f"skipping N = {size}: {args.data_dir} has {available} train rows")
                continue
            for seed in args.seeds:
                eval_dir = run_one(args, method, size, seed)
                if eval_dir is None:
                    continue
                figures.setdefault((method, size), []).append(split_figures(eval_dir, args.split))
    summary = summarise(figures)
    print(table(summary, args.split))
    if args.plot is not None:
        plot(summary, args.split, args.plot)
        print(f"plot: {args.plot}")
    return summary


if __name__ == "__main__":
    main()
