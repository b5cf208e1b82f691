"""benchmarks/bench_label_scaling.py on the tiny model: each (method, N, seed) trains on a seeded
N-row subset and is evaluated, sizes beyond the train split are skipped, finished runs are
reused, and the table and plot come out."""

from __future__ import annotations

import json

import pytest
from fixtures import load_benchmark, tiny_model_overrides
from fixtures.labeled import record_labeled_set_signals, write_synthetic_labeled_set

from calibtune.config import compose
from calibtune.models import load_tokenizer

EVAL_SMALL = [
    "eval.recalibrators=[temperature]",
    "eval.n_boot=20",
    "eval.token_temperature.steps=2",
]


@pytest.fixture(scope="module")
def bench():
    """The benchmark script as a module."""
    return load_benchmark("bench_label_scaling")


def test_scan_trains_each_size_and_seed_then_reuses_them(bench, tiny_model_dir, tmp_path, capsys):
    overrides = tiny_model_overrides(tiny_model_dir)
    cfg = compose("train", overrides)
    sizes = {"train": 24, "val": 16, "test": 16}
    labeled = write_synthetic_labeled_set(
        tmp_path / "data", load_tokenizer(cfg.model), cfg.prompt, sizes
    )
    record_labeled_set_signals(labeled, cfg)
    out, plot = tmp_path / "scan", tmp_path / "scan.png"
    argv = [str(labeled), "--out", str(out), "--sizes", "16", "24", "100", "--seeds", "0", "1"]
    summary = bench.main([*argv, "--plot", str(plot), "--overrides", *overrides, *EVAL_SMALL])
    assert set(summary) == {("probe", 16), ("probe", 24)}  # 100 > 24 train rows: skipped
    printed = capsys.readouterr().out
    assert "skipping N = 100" in printed and "| probe | 16 | 2 |" in printed
    assert plot.stat().st_size > 0
    for size in (16, 24):
        for seed in (0, 1):
            manifest = json.loads((out / f"probe-n{size}-s{seed}/train/manifest.json").read_text())
            assert manifest["fit"]["train_rows"] == size and manifest["seed"] == seed
    # seeds draw different 16-row subsets; at 24 (all rows) the seeds fit the same probe
    assert summary[("probe", 24)]["auroc"][1] == pytest.approx(0.0, abs=1e-9)
    made = (out / "probe-n16-s0/eval/metrics.json").stat().st_mtime_ns
    again = bench.main([*argv, "--overrides", *overrides, *EVAL_SMALL])
    assert again == summary and (out / "probe-n16-s0/eval/metrics.json").stat().st_mtime_ns == made
    # --finished-only: the finished runs alone, nothing trained (seed 2 and N = 20 never ran)
    only = [str(labeled), "--out", str(out), "--sizes", "16", "20", "--seeds", "0", "2"]
    reported = bench.main([*only, "--finished-only", "--overrides", *overrides])
    assert set(reported) == {("probe", 16)} and reported[("probe", 16)]["seeds"] == 1
    assert not (out / "probe-n20-s0").exists() and not (out / "probe-n16-s2").exists()
