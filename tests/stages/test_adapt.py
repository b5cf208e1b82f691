"""`calibtune adapt` on the tiny model: a labeled sample of the target sets the level of the
tuned confidence; the calibrator it writes is what `score`, `Scorer` and the monitor then use.
Too small, one-sided or malformed samples fail saying why, with nothing written (a malformed
row before the model loads)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures import run_cli, tiny_overrides_for
from fixtures.adapters import write_adapter
from fixtures.labeled import synthetic_questions

from calibtune.config import compose
from calibtune.errors import InputError
from calibtune.eval.recalibrate import apply_calibrator, fit_level_map
from calibtune.io import write_json_atomic, write_jsonl_atomic
from calibtune.serve.adapt import ADAPTED, run_adapt
from calibtune.serve.monitor import rollback
from calibtune.serve.score import Scorer

TODAY = {"kind": "platt", "a": 1.0, "b": 0.0}  # today's calibrator: the identity Platt map
ACCURACY = 0.2  # the target traffic: right one time in five, whatever the confidence says


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    """A run dir with train/ (a perturbed LoRA), eval/calibrators.json (today's map) and its
    export; and the overrides that point a stage at it."""
    run_dir = tmp_path_factory.mktemp("adapt-run")
    overrides = tiny_overrides_for(tiny_model_dir, run_dir)
    write_adapter(tiny_model_dir, run_dir / "train")
    calibrators = {"calibrators": {"tuned/ptrue+per_domain": TODAY}}
    write_json_atomic(run_dir / "eval" / "calibrators.json", calibrators)
    result = run_cli("export", *overrides, cwd=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, overrides


def graded_sample(path: Path, n: int, accuracy: float = ACCURACY, seed: int = 0) -> Path:
    """`n` rows of question / answer / correct (a `accuracy` share right), two per group."""
    rng = np.random.default_rng(seed)
    rows = [
        {
            "question": item["question"],
            "answer": item["answers"][0],
            "correct": int(rng.random() < accuracy),
            "domain": item["domain"],
            "group": f"g{i // 2}",
        }
        for i, item in enumerate(synthetic_questions(n, seed))
    ]
    write_jsonl_atomic(path, rows)
    return path


def adapt_cfg(overrides: list[str], sample: Path, out: Path, *extra: str):
    """The adapt config on the tiny run, writing its report under `out`."""
    return compose(
        "adapt",
        [
            *overrides,
            f"adapt.input={sample}",
            f"adapt.output_dir={out}",
            "adapt.n_boot=100",
            *extra,
        ],
    )


def snapshot(export: Path) -> dict[str, bytes]:
    """Every file of the export's calibrator state (calibtune.json and its versions)."""
    files = [export / "calibtune.json", *sorted((export / "calibrator_versions").glob("*"))]
    return {str(p): p.read_bytes() for p in files}


def test_adapting_an_export_sets_the_level_that_score_and_the_monitor_use(run, tmp_path):
    run_dir, overrides = run
    export = run_dir / "export"
    sample = graded_sample(tmp_path / "sample.jsonl", 80)
    rows = [json.loads(line) for line in sample.open()]
    questions, answers = [r["question"] for r in rows], [r["answer"] for r in rows]
    before = Scorer.from_pretrained(export, device="cpu", dtype="float32")
    raw = before.raw_confidences(questions, answers)
    np.testing.assert_allclose(before.score(questions, answers), raw, atol=1e-12)  # identity

    # with the default pull toward the identity (adapt.prior_strength) the map moves the level
    # part of the way on 80 labels
    pulled = adapt_cfg(overrides, sample, tmp_path / "pulled", f"serve.model_dir={export}")
    rate = np.mean([r["correct"] for r in rows])
    strength = pulled.adapt.prior_strength
    y = np.array([r["correct"] for r in rows])
    params = fit_level_map("platt", raw, y, prior_strength=strength)
    assert strength == 10 and pulled.adapt.write == "always"
    assert rate < apply_calibrator(params, raw).mean() < raw.mean() - 0.05
    # no pull: the map sets the sample's level (the command's mechanics, checked exactly)
    extra = (f"serve.model_dir={export}", "adapt.prior_strength=0")
    cfg = adapt_cfg(overrides, sample, tmp_path / "adapt", *extra)
    run_adapt(cfg)

    report = json.loads((tmp_path / "adapt" / "adapt.json").read_text())
    figures = report["figures"]
    assert report["n"] == 80 and report["family"] == "platt" and report["prior_strength"] == 0
    assert 5 <= report["n_groups"] <= 40  # pairs of rows, joined where they ask the same question
    assert figures["after"]["ece"]["value"] < figures["before"]["ece"]["value"]
    assert figures["after"]["brier"]["value"] < figures["before"]["brier"]["value"]
    low, high = figures["after_minus_before"]["brier"]["ci95"]
    assert low <= figures["after_minus_before"]["brier"]["value"] <= high < 0
    serve = json.loads((export / "calibtune.json").read_text())
    assert serve["calibrator_version"] == 1 and serve["calibrator"]["params"] == report["params"]
    version = json.loads((export / "calibrator_versions" / "v0001.json").read_text())
    assert version["adapt"]["n"] == 80 and version["parent"] == 0

    adapted = Scorer.from_pretrained(export, device="cpu", dtype="float32").score(
        questions, answers
    )
    np.testing.assert_allclose(adapted, apply_calibrator(report["params"], raw), atol=1e-9)
    assert abs(adapted.mean() - np.mean([r["correct"] for r in rows])) < 0.02  # the new level
    assert abs(raw.mean() - adapted.mean()) > 0.1  # today's level was elsewhere
    scored = [json.loads(line) for line in (tmp_path / "adapt" / "sample.jsonl").open()]
    assert [s["raw_confidence"] for s in scored] == pytest.approx(raw.tolist(), abs=1e-9)

    rollback(export, "previous")  # the monitor's rollback reads the version adapt wrote
    restored = json.loads((export / "calibtune.json").read_text())
    assert restored["calibrator_version"] == 0 and restored["calibrator"]["params"] == TODAY
    np.testing.assert_allclose(
        Scorer.from_pretrained(export, device="cpu", dtype="float32").score(questions, answers),
        raw,
        atol=1e-12,
    )


def test_adapting_a_run_writes_calibrators_json_for_score(run, tmp_path):
    run_dir, overrides = run
    sample = graded_sample(tmp_path / "sample.jsonl", 60, accuracy=0.8, seed=1)
    out = tmp_path / "adapt"
    result = run_cli(
        "adapt",
        *overrides,
        f"adapt.input={sample}",
        f"adapt.output_dir={out}",
        "adapt.prior_strength=0",  # the level set exactly (the pull: the test above)
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "adapted (cross-fitted)" in result.stdout and "after - before" in result.stdout
    params = json.loads((out / "calibrators.json").read_text())["calibrators"][ADAPTED]
    pairs = tmp_path / "pairs.jsonl"
    rows = [json.loads(line) for line in sample.open()]
    write_jsonl_atomic(pairs, [{"question": r["question"], "answer": r["answer"]} for r in rows])
    scores = tmp_path / "scores.jsonl"
    result = run_cli(
        "score",
        *overrides,
        f"serve.score.input={pairs}",
        f"serve.score.output={scores}",
        f"serve.calibrator={out / 'calibrators.json'}",
        f"serve.calibrator_name={ADAPTED}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scored = [json.loads(line) for line in scores.open()]
    raw = np.array([s["raw_confidence"] for s in scored])
    np.testing.assert_allclose(
        [s["confidence"] for s in scored], apply_calibrator(params, raw), atol=1e-12
    )
    assert abs(np.mean([s["confidence"] for s in scored]) - 0.8) < 0.1


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if the model is loaded."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Scorer, "from_config", refuse)


@pytest.mark.parametrize(
    ("rows", "says"),
    [
        (30, "30 labeled rows, fewer than adapt.min_labels=50: label 20 more rows"),
        ("one-class", "label at least 5 more rows whose answer is wrong"),
        ("malformed", r"sample\.jsonl:7: field 'correct': must be 0 or 1"),
    ],
)
def test_bad_samples_say_why_before_the_model_loads_and_write_nothing(
    run, tmp_path, no_model_load, rows, says
):
    run_dir, overrides = run
    export = run_dir / "export"
    sample = tmp_path / "sample.jsonl"
    if rows == 30:
        graded_sample(sample, 30)
    else:
        graded_sample(sample, 60, accuracy=1.0 if rows == "one-class" else ACCURACY)
    if rows == "malformed":
        lines = sample.read_text().splitlines()
        lines[6] = (
            lines[6]
            .replace('"correct": 0', '"correct": "no"')
            .replace('"correct": 1', '"correct": "yes"')
        )
        sample.write_text("\n".join(lines) + "\n")
    state = snapshot(export)
    cfg = adapt_cfg(overrides, sample, tmp_path / "adapt", f"serve.model_dir={export}")
    with pytest.raises(InputError, match=says) as err:
        run_adapt(cfg)
    assert "sample.jsonl" in str(err.value)
    assert snapshot(export) == state and not (tmp_path / "adapt").exists()


def test_qa_rows_are_answered_and_graded_then_a_one_sided_sample_fails(run, tmp_path):
    run_dir, overrides = run
    sample = tmp_path / "qa.jsonl"  # the tiny random model answers none of these right
    write_jsonl_atomic(sample, synthetic_questions(50, 2))
    cfg = adapt_cfg(overrides, sample, tmp_path / "adapt", "data.max_new_tokens=4")
    with pytest.raises(InputError, match=r"0 of the 50 rows .* right .* label at least 5 more"):
        run_adapt(cfg)
    assert not (tmp_path / "adapt").exists()


def test_a_map_that_does_not_beat_todays_is_not_written_unless_asked(run, tmp_path):
    """adapt.write=better: when the cross-fitted map does not beat today's calibrator on the
    sample's Brier, the export keeps today's calibrator and the report says so;
    adapt.write=always (the default) writes the same map anyway."""
    from calibtune.eval.recalibrate import fit_calibrator
    from calibtune.serve.monitor.versions import promote

    run_dir, overrides = run
    export = run_dir / "export"
    sample = graded_sample(tmp_path / "sample.jsonl", 60, accuracy=0.5, seed=3)
    rows = [json.loads(line) for line in sample.open()]
    scorer = Scorer.from_pretrained(export, device="cpu", dtype="float32")
    raw = scorer.raw_confidences([r["question"] for r in rows], [r["answer"] for r in rows])
    # today's calibrator: the Platt map fitted on the whole sample, which no map fitted on
    # part of it (cross-fitting) beats on the whole sample
    best = fit_calibrator("platt", raw, np.array([r["correct"] for r in rows]), 15)
    today = json.loads((export / "calibtune.json").read_text()).get("calibrator_version", 0)
    promote(export, {"params": best}, source="test")
    before = snapshot(export)
    try:
        extra = (f"serve.model_dir={export}", "adapt.write=better", "adapt.prior_strength=0")
        run_adapt(adapt_cfg(overrides, sample, tmp_path / "kept", *extra))
        report = json.loads((tmp_path / "kept" / "adapt.json").read_text())
        figures = report["figures"]
        assert figures["after"]["brier"]["value"] >= figures["before"]["brier"]["value"]
        assert report["written"] is None and snapshot(export) == before

        forced = adapt_cfg(
            overrides,
            sample,
            tmp_path / "forced",
            f"serve.model_dir={export}",
            "adapt.prior_strength=0",
        )
        run_adapt(forced)
        assert json.loads((tmp_path / "forced" / "adapt.json").read_text())["written"]
        assert snapshot(export) != before
    finally:
        rollback(export, today)  # the shared export back to the calibrator it had
