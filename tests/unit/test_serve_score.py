"""calibtune.Scorer and `calibtune score` on the tiny model with a perturbed LoRA adapter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.adapters import write_adapter
from fixtures.labeled import ANSWERS, QUESTIONS

import calibtune
from calibtune.errors import ConfigError, InputError
from calibtune.models.confidence import find_query_tokens, query_confidence, render_query_prompt
from calibtune.models.encoding import encode_text, last_token_logits, pad_sequences
from calibtune.models.loading import load_model, load_tokenizer
from calibtune.serve.score import Scorer, adapter_dir, load_tuned_model, run_score


@pytest.fixture
def train_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A train-stage-like output dir holding adapter/."""
    return write_adapter(tiny_model_dir, tmp_path / "train")


@pytest.fixture
def score_cfg(compose_cfg, train_dir: Path, tmp_path: Path):
    def _cfg(*overrides: str):
        return compose_cfg(
            "eval",
            [f"serve.adapter={train_dir}", "serve.calibrator=null", *overrides],
        )

    return _cfg


def reference_confidence(model, tokenizer, prompt_cfg, question: str, answer: str) -> float:
    """One pair, unbatched and unpadded, through the shared helpers (what eval computes)."""
    text = render_query_prompt(tokenizer, prompt_cfg, question, None, answer)
    batch = pad_sequences([encode_text(tokenizer, text)], tokenizer.pad_token_id, "left")
    with torch.no_grad():
        logits = last_token_logits(model, batch)
    return float(query_confidence(logits, find_query_tokens(tokenizer))[0])


def test_scorer_matches_unbatched_helpers_for_any_batching(score_cfg, train_dir):
    cfg = score_cfg()
    model = load_tuned_model(cfg.model, train_dir)
    tokenizer = load_tokenizer(cfg.model)
    expected = np.array(
        [
            reference_confidence(model.module, tokenizer, cfg.prompt, q, a)
            for q, a in zip(QUESTIONS, ANSWERS, strict=True)
        ]
    )
    results = []
    for batch_size in (1, 3, 32):
        scorer = Scorer(model, tokenizer, cfg.prompt, batch_size=batch_size)
        results.append(scorer.score(QUESTIONS, ANSWERS))
    # reversed order puts every pair into a different batch with different padding
    scorer = Scorer(model, tokenizer, cfg.prompt, batch_size=3)
    results.append(scorer.score(QUESTIONS[::-1], ANSWERS[::-1])[::-1])
    for got in results:
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert np.all((expected > 0) & (expected < 1))
    assert len(set(np.round(expected, 6))) > 1


def test_adapter_changes_confidences(score_cfg, train_dir):
    cfg = score_cfg()
    tokenizer = load_tokenizer(cfg.model)
    base = Scorer(load_model(cfg.model), tokenizer, cfg.prompt).score(QUESTIONS, ANSWERS)
    tuned = Scorer.from_config(cfg).score(QUESTIONS, ANSWERS)
    assert np.abs(tuned - base).max() > 1e-3


def test_calibrator_is_applied_after_raw_confidence(score_cfg, train_dir):
    cfg = score_cfg()
    model, tokenizer = load_tuned_model(cfg.model, train_dir), load_tokenizer(cfg.model)
    raw = Scorer(model, tokenizer, cfg.prompt).score(QUESTIONS, ANSWERS)
    squeezed = Scorer(model, tokenizer, cfg.prompt, calibrator=lambda c: 0.5 + (c - 0.5) / 2)
    np.testing.assert_allclose(squeezed.score(QUESTIONS, ANSWERS), 0.5 + (raw - 0.5) / 2)


def test_scorer_is_exposed_lazily():
    assert calibtune.Scorer is Scorer
    with pytest.raises(AttributeError):
        _ = calibtune.NoSuchThing


def test_adapter_dir_accepts_train_dir_or_adapter_and_rejects_others(train_dir, tmp_path):
    assert adapter_dir(train_dir) == train_dir / "adapter"
    assert adapter_dir(train_dir / "adapter") == train_dir / "adapter"
    with pytest.raises(ConfigError, match="holds no adapter"):
        adapter_dir(tmp_path)


def write_pairs(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_run_score_writes_scores_in_input_order(score_cfg, train_dir, tmp_path, capsys):
    rows = [
        {"id": f"q{i}", "question": q, "answer": a, "source": "t"}
        for i, (q, a) in enumerate(zip(QUESTIONS, ANSWERS, strict=True))
    ]
    pairs = write_pairs(tmp_path / "pairs.jsonl", rows)
    cfg = score_cfg(f"serve.score.input={pairs}", "serve.score.batch_size=2")
    output = run_score(cfg)
    assert output == Path(cfg.run_dir) / "score" / "scores.jsonl"
    scored = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["id"] for r in scored] == [r["id"] for r in rows]
    assert all(r["source"] == "t" and r["confidence"] == r["raw_confidence"] for r in scored)
    expected = Scorer.from_config(cfg).score(QUESTIONS, ANSWERS)
    np.testing.assert_allclose([r["confidence"] for r in scored], expected, atol=1e-6)
    summary = json.loads((output.parent / "score_summary.json").read_text())
    assert summary["pairs"] == len(rows) and summary["pairs_per_s"] > 0
    assert "pairs/s" in capsys.readouterr().out


def test_score_applies_each_domains_calibrator_and_the_policy(score_cfg, tmp_path):
    from calibtune.eval.policy import decide
    from calibtune.eval.recalibrate import apply_calibrator

    platt = {"kind": "platt", "a": 1.0, "b": 0.0}
    per_domain = {
        "kind": "per_domain",
        "global": platt,
        "domains": {"geo": {"kind": "platt", "a": 1.0, "b": 2.0}},
    }
    calibrators = tmp_path / "calibrators.json"
    calibrators.write_text(json.dumps({"calibrators": {"tuned/ptrue+per_domain": per_domain}}))
    policy = {"answer_threshold": 0.7, "escalate_threshold": 0.4, "domains": {}}
    policy_path = tmp_path / "policy.json"
    policy_path.write_text(json.dumps(policy))
    domains = ["geo", "never-seen", "geo", None, "math", "geo", "geo"]
    rows = [
        {"question": q, "answer": a, **({"domain": d} if d else {})}
        for q, a, d in zip(QUESTIONS, ANSWERS, domains, strict=True)
    ]
    cfg = score_cfg(
        f"serve.score.input={write_pairs(tmp_path / 'pairs.jsonl', rows)}",
        f"serve.calibrator={calibrators}",
        "serve.calibrator_name=tuned/ptrue+per_domain",
        f"serve.policy={policy_path}",
    )
    scored = [json.loads(line) for line in run_score(cfg).read_text().splitlines()]
    raw = np.array([r["raw_confidence"] for r in scored])
    expected = apply_calibrator(per_domain, raw, domains)
    np.testing.assert_allclose([r["confidence"] for r in scored], expected, atol=1e-9)
    assert expected[0] > raw[0] and expected[1] == pytest.approx(raw[1])  # unknown: global map
    assert [r["action"] for r in scored] == decide(policy, expected, domains)
    scorer = Scorer.from_config(cfg)
    assert scorer.decide([0.9, 0.5, 0.1]) == ["answer", "retrieve", "escalate"]


@pytest.mark.parametrize(
    ("bad_row", "field"),
    [
        ({"answer": "Paris"}, "question"),
        ({"question": "Q?", "answer": 3}, "answer"),
        ({"question": "Q?", "answer": "x", "choices": "A"}, "choices"),
        ({"question": "Q?", "answer": "x", "domain": 7}, "domain"),
    ],
)
def test_bad_input_names_line_and_field_and_writes_nothing(score_cfg, tmp_path, bad_row, field):
    pairs = write_pairs(tmp_path / "pairs.jsonl", [{"question": "Q?", "answer": "a"}, bad_row])
    cfg = score_cfg(f"serve.score.input={pairs}")
    with pytest.raises(InputError, match=rf"pairs.jsonl:2: field '{field}'"):
        run_score(cfg)
    assert not (Path(cfg.run_dir) / "score").exists()


def test_missing_calibrator_file_is_a_config_error(score_cfg, tmp_path):
    cfg = score_cfg(f"serve.calibrator={tmp_path / 'nope.json'}")
    with pytest.raises(ConfigError, match="nope.json"):
        Scorer.from_config(cfg)
