"""benchmarks/bench_adapt_curve.py on synthetic targets: draws keep entity groups apart, and on a
confidence whose level is off, a map fitted on target labels lowers held-out ECE."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures import load_benchmark

from calibtune.errors import InputError
from calibtune.eval.recalibrate import logit, sigmoid


@pytest.fixture(scope="module")
def bench():
    """The benchmark script as a module."""
    return load_benchmark("bench_adapt_curve")


def write_target(path: Path, n_groups: int, seed: int, offset: float = -1.5) -> Path:
    """Rows whose outcome probability is sigmoid(logit(c) + offset): ranked well, level too
    high (offset < 0); two or three rows a group share the group's confidence and outcome rate."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        c = float(rng.uniform(0.3, 0.95))
        for phrasing in range(int(rng.integers(2, 4))):
            correct = int(rng.random() < sigmoid(logit(c) + offset))
            rows.append(
                {"id": f"g{g}-{phrasing}", "group": f"g{g}", "confidence": c, "correct": correct}
            )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_draws_take_k_rows_and_hold_out_only_untouched_groups(bench):
    groups = np.repeat(np.arange(40), 3)
    members = [np.flatnonzero(groups == g) for g in range(40)]
    rng = np.random.default_rng(0)
    for k in (1, 25, 50, 119):
        fit, held = bench.draw_rows(members, k, rng)
        assert fit.size == k and not set(groups[fit]) & set(groups[held])
        assert fit.size + held.size >= groups.size - 2  # at most a cut group's rest is unused


def test_adaptation_lowers_held_out_ece_of_a_miscalibrated_target(bench, tmp_path, capsys):
    target = write_target(tmp_path / "target.jsonl", 400, seed=0)
    out = tmp_path / "curve.json"
    results = bench.main(
        [
            str(target),
            "--ks",
            "25",
            "200",
            "2000",
            "--draws",
            "8",
            "--families",
            "platt",
            "beta",
            "temperature",
            "isotonic",
            "--out",
            str(out),
        ]
    )
    figures = results[str(target)]
    none = figures[200]["none"]["ece"]["mean"]
    assert none > 0.15  # the level is off by construction
    for family in ("platt", "beta", "isotonic"):
        assert figures[200][family]["ece"]["mean"] < none / 2
        assert figures[200][family]["ece"]["ratio_to_none"] < 0.5
        assert figures[200][family]["brier"]["minus_none"]["range95"][1] < 0
    assert figures[200]["platt"]["ece"]["mean"] <= figures[25]["platt"]["ece"]["mean"]
    assert "reason" in figures[2000]  # nothing left to hold out
    printed = capsys.readouterr().out
    assert "| 200 | platt |" in printed and "ECE / none" in printed
    assert json.loads(out.read_text())["results"][str(target)]["200"]["draws"] == 8


def test_several_targets_get_a_mean_table_and_bad_rows_name_the_line(bench, tmp_path, capsys):
    first = write_target(tmp_path / "a.jsonl", 150, seed=1)
    eval_dir = tmp_path / "fold"
    eval_dir.mkdir()
    rows = [json.loads(line) for line in first.open()]
    (eval_dir / "predictions.jsonl").write_text(
        "".join(json.dumps({"tuned/ptrue": r.pop("confidence"), **r}) + "\n" for r in rows)
    )
    bench.main([str(first), str(eval_dir), "--ks", "50", "--draws", "4", "--families", "platt"])
    printed = capsys.readouterr().out
    assert "## Mean over 2 targets" in printed and "| 50 | platt | 2 |" in printed
    assert "(tuned/ptrue;" in printed
    lines = first.read_text().splitlines()
    lines[4] = json.dumps({**json.loads(lines[4]), "confidence": 1.7})
    first.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"a\.jsonl:5: field 'confidence'"):
        bench.main([str(first), "--ks", "50", "--draws", "2"])


def test_floor_row_and_val_rows_of_an_eval_dir(bench, tmp_path):
    """--with-val reads an eval dir's val_predictions.jsonl beside predictions.jsonl; the floor
    (a calibrated confidence scored on outcomes drawn from it) is above 0 on a small held-out
    sample and below the unadapted ECE of a target whose level is off."""
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    write_target(eval_dir / "predictions.jsonl", 120, seed=1)
    write_target(eval_dir / "val_predictions.jsonl", 120, seed=2)
    alone = bench.load_target(eval_dir, None, None)
    both = bench.load_target(eval_dir, None, None, with_val=True)
    assert both["y"].size > alone["y"].size and both["path"].endswith("(+ val)")
    results = bench.main([str(eval_dir), "--with-val", "--ks", "50", "--draws", "6"])
    figures = results[both["path"]][50]
    floor, none = figures["floor"]["ece"]["mean"], figures["none"]["ece"]["mean"]
    assert 0.01 < floor < none


def test_with_val_names_the_val_file_of_a_bad_row(bench, tmp_path):
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    write_target(eval_dir / "predictions.jsonl", 20, seed=1)
    (eval_dir / "val_predictions.jsonl").write_text('{"confidence": 2.0, "correct": 1}\n')
    with pytest.raises(InputError, match=r"val_predictions\.jsonl:1: field 'confidence'"):
        bench.load_target(eval_dir, None, None, with_val=True)


def test_the_adapt_row_keeps_a_calibrated_confidence_and_fixes_a_shifted_one(bench, tmp_path):
    """The `adapt` row (calibtune adapt's defaults: Platt pulled toward the identity with
    strength 10, always written) follows the map where the level is off and stays nearer
    the confidence than a plain Platt map where it is already calibrated; with write=better and
    no pull it is the check of the sample's cross-fitted Brier."""
    shifted = write_target(tmp_path / "shifted.jsonl", 300, seed=4)
    calibrated = write_target(tmp_path / "calibrated.jsonl", 300, seed=5, offset=0.0)
    args = [str(shifted), str(calibrated), "--ks", "100", "--draws", "6", "--families", "platt"]
    for extra in ([], ["--adapt-write", "better", "--prior-strength", "0"]):
        results = bench.main([*args, *extra])
        moved = results[str(shifted)][100]
        assert moved["adapt"]["ece"]["mean"] < moved["none"]["ece"]["mean"] / 2
        kept = results[str(calibrated)][100]
        assert kept["adapt"]["ece"]["mean"] <= kept["platt"]["ece"]["mean"] + 1e-12


def test_oracle_row_and_level_errors(bench, tmp_path, capsys):
    """The oracle (a Platt map fitted on the held-out rows themselves) fixes a shifted level on
    them; the level the k rows' accuracy gives gets nearer the held-out rows' as k grows, while
    the confidence's own level error stays what the shift makes it."""
    target = write_target(tmp_path / "shifted.jsonl", 400, seed=6)
    results = bench.main([str(target), "--ks", "25", "400", "--draws", "8", "--families", "platt"])
    small, large = results[str(target)][25], results[str(target)][400]
    assert large["oracle"]["ece"]["mean"] < large["none"]["ece"]["mean"] / 2
    assert large["level"]["k_labels"] < small["level"]["k_labels"]
    assert small["level"]["as_is"] > 0.15 and large["level"]["as_is"] > 0.15
    assert "| k | level error as it is |" in capsys.readouterr().out
