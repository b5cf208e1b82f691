"""Serve after eval on the tiny model: `calibtune score` reproduces the eval stage's tuned
confidences (raw and recalibrated) for the same pairs, `calibtune export` ships the calibrator
and the eval deltas, and questions without answers are answered first."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures import run_cli, tiny_overrides_for
from fixtures.adapters import write_adapter
from fixtures.labeled import write_synthetic_labeled_set

from calibtune.config import compose
from calibtune.eval.policy import decide
from calibtune.examples import read_labeled_split
from calibtune.models import load_tokenizer
from calibtune.serve.score import Scorer

CALIBRATOR = "tuned/ptrue+temperature"


@pytest.fixture(scope="module")
def evaluated(tiny_model_dir, tmp_path_factory):
    """A run dir with data/, train/ (a perturbed adapter) and eval/ from the real eval stage."""
    from calibtune.eval.stage import run_eval_stage

    run_dir = tmp_path_factory.mktemp("serve-run")
    overrides = tiny_overrides_for(tiny_model_dir, run_dir)
    cfg = compose(
        "eval",
        [
            *overrides,
            "eval.n_boot=50",
            "eval.verbalized.enabled=false",
            "eval.agreement_max_examples=4",
            "eval.batch_size=5",
        ],
    )
    tokenizer = load_tokenizer(cfg.model)
    sizes = {"train": 4, "val": 12, "test": 12}
    write_synthetic_labeled_set(cfg.data.output_dir, tokenizer, cfg.prompt, sizes, seed=3)
    write_adapter(tiny_model_dir, Path(cfg.train.output_dir))
    run_eval_stage(cfg)
    return run_dir, overrides


def test_score_matches_eval_tuned_confidences_exactly(evaluated, tmp_path):
    run_dir, overrides = evaluated
    test_rows = read_labeled_split(run_dir / "data", "test")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({"id": r["id"], "question": r["question"], "answer": r["response"]}) + "\n"
            for r in test_rows
        )
    )
    result = run_cli(
        "score",
        *overrides,
        f"serve.score.input={pairs}",
        "serve.score.batch_size=5",
        f"serve.calibrator_name={CALIBRATOR}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pairs/s" in result.stdout
    scored = [json.loads(line) for line in (run_dir / "score" / "scores.jsonl").open()]
    predictions = [json.loads(line) for line in (run_dir / "eval" / "predictions.jsonl").open()]
    assert [s["id"] for s in scored] == [p["id"] for p in predictions]
    # same helpers, same batching: bit-identical raw confidences
    assert [s["raw_confidence"] for s in scored] == [p["tuned/ptrue"] for p in predictions]
    np.testing.assert_allclose(
        [s["confidence"] for s in scored],
        [p[CALIBRATOR] for p in predictions],
        rtol=0,
        atol=1e-12,
    )
    assert [s["confidence"] for s in scored] != [s["raw_confidence"] for s in scored]


def test_export_carries_calibrator_and_eval_deltas(evaluated, tmp_path):
    run_dir, overrides = evaluated
    result = run_cli("export", *overrides, f"serve.calibrator_name={CALIBRATOR}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = run_dir / "export"
    serve = json.loads((out / "calibtune.json").read_text())
    fitted = json.loads((run_dir / "eval" / "calibrators.json").read_text())["calibrators"]
    assert serve["calibrator"] == {"name": CALIBRATOR, "params": fitted[CALIBRATOR]}
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    card = (out / "README.md").read_text()
    assert f"{metrics['deltas']['ece']['value']:+.3f}" in card
    test_rows = read_labeled_split(run_dir / "data", "test")
    merged = Scorer.from_pretrained(out, device="cpu", dtype="float32", batch_size=5)
    got = merged.score([r["question"] for r in test_rows], [r["response"] for r in test_rows])
    predictions = [json.loads(line) for line in (run_dir / "eval" / "predictions.jsonl").open()]
    np.testing.assert_allclose(got, [p[CALIBRATOR] for p in predictions], rtol=0, atol=1e-5)
    policy = json.loads((run_dir / "eval" / "policy.json").read_text())
    assert serve["policy"] == policy and merged.policy == policy  # the export ships the policy
    assert merged.decide(got) == decide(policy, got)


def test_questions_without_answers_are_answered_then_scored(evaluated, tmp_path):
    run_dir, overrides = evaluated
    questions = ["What is the capital of Peru?", "What is 2 plus 3?"]
    pairs = tmp_path / "questions.jsonl"
    pairs.write_text(
        json.dumps({"question": questions[0]})
        + "\n"
        + json.dumps({"question": questions[1], "answer": "5"})
        + "\n"
    )
    out = tmp_path / "scores.jsonl"
    result = run_cli(
        "score",
        *overrides,
        f"serve.score.input={pairs}",
        f"serve.score.output={out}",
        "serve.score.max_new_tokens=6",
        "serve.calibrator=null",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = (json.loads(line) for line in out.open())
    assert first["answer_generated"] is True and isinstance(first["answer"], str)
    assert "answer_generated" not in second and second["answer"] == "5"
    cfg = compose("eval", [*overrides, "serve.calibrator=null"])
    scorer = Scorer.from_config(cfg)
    assert scorer.answer(questions[:1], max_new_tokens=6) == [first["answer"]]
    expected = scorer.score(questions, [first["answer"], "5"])
    np.testing.assert_allclose([first["confidence"], second["confidence"]], expected, atol=1e-6)
    summary = json.loads((tmp_path / "score_summary.json").read_text())
    assert summary["generated_answers"] == 1 and summary["calibrated"] is False
