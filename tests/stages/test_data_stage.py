"""The data stage end to end on the tiny model: output contract, determinism, resume, shards,
bad input leaving nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import SMALL_DATA, build_tiny_model_dir
from fixtures.labeled import labeled_set_signals

from calibtune.data import stage
from calibtune.data.stage import run_data_stage
from calibtune.errors import InputError
from calibtune.examples import LABELED_FIELDS, MANIFEST, SPLITS, read_labeled_split
from calibtune.models.signals import (
    SIGNALS_FILE,
    load_signals,
    read_signals,
    signals_key,
)

SMALL = SMALL_DATA


def split_bytes(out_dir: Path) -> dict[str, bytes]:
    return {split: (out_dir / f"{split}.jsonl").read_bytes() for split in SPLITS}


def test_builds_labeled_set_with_manifest(compose_cfg, capsys):
    cfg = compose_cfg("data", SMALL)
    out_dir = run_data_stage(cfg)
    assert out_dir == Path(cfg.data.output_dir)
    rows = {split: read_labeled_split(out_dir, split) for split in SPLITS}
    assert {s: len(r) for s, r in rows.items()} == {"train": 24, "val": 8, "test": 8}
    for split, split_rows in rows.items():
        for row in split_rows:
            assert set(LABELED_FIELDS) <= set(row) and row["split"] == split
            assert row["correct"] in (0, 1)
            assert row["prompt"].endswith("<|im_start|>assistant\n")
            assert row["query"].startswith(row["prompt"] + row["response"])  # a follow-up
            assert "Is your answer correct?" in row["query"]
    qids = {s: {r["qid"] for r in split_rows} for s, split_rows in rows.items()}
    assert not qids["train"] & (qids["val"] | qids["test"])  # split by question
    groups = {s: {r["group"] for r in split_rows} for s, split_rows in rows.items()}
    assert not groups["train"] & groups["val"] and not groups["val"] & groups["test"]
    assert not groups["train"] & groups["test"]  # and by entity: the rows carry their group
    manifest = json.loads((out_dir / MANIFEST).read_text())
    assert manifest["counts"] == {"train": 24, "val": 8, "test": 8}
    assert set(manifest["files"]) == {"train.jsonl", "val.jsonl", "test.jsonl", SIGNALS_FILE}
    assert manifest["base_signals"]["key"] == signals_key(cfg)
    assert manifest["work"]["generation_rows"] == 40
    assert manifest["work"]["whole_query_rows"] + manifest["work"]["suffix_rows"] >= 40
    assert manifest["accuracy"]["overall"]["n"] == 40
    assert len(manifest["accuracy"]["domains"]) >= 5  # balanced over the built-in domains
    assert not (out_dir / ".partial").exists()
    assert "overall" in capsys.readouterr().out


def assert_signals_equal(a: Path, b: Path, tolerance: float = 0.0) -> None:
    """Two labeled sets' recorded signals agree row by row (by id) within `tolerance`."""
    first, second = load_signals(a / SIGNALS_FILE)[0], load_signals(b / SIGNALS_FILE)[0]
    second = second.select(first.ids)
    for name in ("two_way", "stats", "hidden", "full_ece", "positions"):
        x, y = getattr(first, name).double(), getattr(second, name).double()
        assert torch.allclose(x, y, atol=tolerance, rtol=0, equal_nan=True), name


def test_recorded_signals_equal_a_base_pass_over_the_written_rows(compose_cfg, tmp_path):
    """What the data stage records from generation (answer logits, the suffix on its KV cache)
    is what one base pass over prompt + response + suffix gives, to float noise."""
    model_dir = build_tiny_model_dir(tmp_path / "talkative", tied=False)  # non-empty answers
    overrides = [f"model.name_or_path={model_dir}", "data.max_new_tokens=6", "data.batch_size=16"]
    cfg = compose_cfg("data", [*SMALL, *overrides])
    out_dir = run_data_stage(cfg)
    recorded = read_signals(out_dir, signals_key(cfg))
    reference = labeled_set_signals(out_dir, cfg, batch_size=4)
    assert sorted(recorded.ids) == sorted(reference.ids)
    recorded = recorded.select(reference.ids)
    for name, values in reference.confidences().items():
        got = recorded.confidences()[name]
        assert np.allclose(got, values, atol=1e-5, rtol=0, equal_nan=True), name
    assert torch.allclose(recorded.hidden, reference.hidden, atol=1e-4, rtol=1e-5)
    assert torch.allclose(recorded.full_ece, reference.full_ece, atol=1e-4, rtol=0)
    assert torch.equal(recorded.positions, reference.positions)
    assert recorded.positions.sum() > 0 and not torch.equal(
        recorded.full_ece, 0 * recorded.full_ece
    )


def test_signals_from_another_model_or_prompt_are_refused(compose_cfg):
    cfg = compose_cfg("data", SMALL)
    out_dir = run_data_stage(cfg)
    other = compose_cfg("data", [*SMALL, "prompt.followup_template=Right or wrong?"])
    with pytest.raises(InputError, match="prompt") as err:
        read_signals(out_dir, signals_key(other))
    assert signals_key(cfg)["prompt"] in str(err.value) and signals_key(other)["prompt"] in str(
        err.value
    )
    key = {**signals_key(cfg), "model": "0" * 64}
    with pytest.raises(InputError, match="model"):
        read_signals(out_dir, key)


def test_same_config_twice_is_byte_identical(compose_cfg, tmp_path):
    first = run_data_stage(compose_cfg("data", [*SMALL, f"data.output_dir={tmp_path}/a"]))
    second = run_data_stage(compose_cfg("data", [*SMALL, f"data.output_dir={tmp_path}/b"]))
    assert split_bytes(first) == split_bytes(second)
    other = run_data_stage(compose_cfg("data", [*SMALL, f"data.output_dir={tmp_path}/c", "seed=1"]))
    assert split_bytes(first) != split_bytes(other)


def test_killed_build_resumes_to_the_same_output(compose_cfg, tmp_path, monkeypatch):
    reference = run_data_stage(compose_cfg("data", [*SMALL, f"data.output_dir={tmp_path}/ref"]))

    def kill_after_two(done: int) -> None:
        if done == 2:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(stage, "after_chunk", kill_after_two)
    cfg = compose_cfg("data", [*SMALL, f"data.output_dir={tmp_path}/resumed"])
    with pytest.raises(KeyboardInterrupt):
        run_data_stage(cfg)
    out_dir = Path(cfg.data.output_dir)
    assert not (out_dir / "train.jsonl").exists()
    assert len(list(out_dir.glob(".partial/*/shard-*/chunk-*.jsonl"))) == 2

    finished = []
    monkeypatch.setattr(stage, "after_chunk", finished.append)
    run_data_stage(cfg)
    assert len(finished) == 3  # 5 chunks of 8, two reused
    assert split_bytes(out_dir) == split_bytes(reference)
    assert_signals_equal(out_dir, reference)


def test_shards_merge_into_the_unsharded_output(compose_cfg, tmp_path):
    reference = run_data_stage(compose_cfg("data", [*SMALL, f"data.output_dir={tmp_path}/ref"]))
    sharded = [*SMALL, f"data.output_dir={tmp_path}/sharded", "data.num_shards=2"]
    out_dir = run_data_stage(compose_cfg("data", [*sharded, "data.shard=1"]))
    assert not (out_dir / "train.jsonl").exists()  # shard 0 not done yet
    run_data_stage(compose_cfg("data", [*sharded, "data.shard=0"]))
    assert split_bytes(out_dir) == split_bytes(reference)
    assert_signals_equal(out_dir, reference, tolerance=1e-4)  # other batches: float noise


def test_holdout_domain_goes_only_to_test(compose_cfg):
    cfg = compose_cfg("data", [*SMALL, "data.holdout_domains=[arithmetic]"])
    out_dir = run_data_stage(cfg)
    domains = {s: {r["domain"] for r in read_labeled_split(out_dir, s)} for s in SPLITS}
    assert "arithmetic" in domains["test"]
    assert "arithmetic" not in domains["train"] | domains["val"]


def write_qa(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def qa(i: int, **extra) -> dict:
    return {"id": f"q{i}", "question": f"What is {i} plus {i}?", "answers": [str(2 * i)], **extra}


@pytest.mark.parametrize(
    ("lines", "where"),
    [
        ([qa(1), "{not json", qa(3)], (2, None, "invalid JSON")),
        ([qa(1), {"id": "x", "answers": ["a"]}], (2, "question", "missing")),
        ([qa(1), qa(2), {"question": "Why?", "answers": []}], (3, "answers", "non-empty")),
        ([], (None, None, "empty")),
        (
            [qa(1, split="train"), qa(2, split="test"), {**qa(1, split="test"), "id": "dup"}],
            (3, "question", "leakage"),
        ),
    ],
    ids=["bad-json", "missing-question", "empty-answers", "empty-file", "train-test-leak"],
)
def test_bad_input_fails_naming_file_line_field_and_writes_nothing(
    compose_cfg, tmp_path, lines, where
):
    path = write_qa(tmp_path / "qa.jsonl", lines)
    cfg = compose_cfg("data", [*SMALL, "dataset=jsonl", f"dataset.path={path}"])
    line, field, message = where
    with pytest.raises(InputError, match=message) as err:
        run_data_stage(cfg)
    assert err.value.path == str(path) and err.value.line == line and err.value.field == field
    assert not Path(cfg.data.output_dir).exists()


def test_cli_exits_nonzero_on_bad_input(tmp_path, tiny_overrides):
    import subprocess
    import sys

    path = write_qa(tmp_path / "qa.jsonl", [qa(1), "{oops"])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "calibtune.cli",
            "data",
            *tiny_overrides,
            "dataset=jsonl",
            f"dataset.path={path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert f"{path}:2" in result.stderr and "invalid JSON" in result.stderr
    assert not (tmp_path / "run" / "data").exists()


def test_user_jsonl_smaller_than_n_examples_uses_all_rows(compose_cfg, tmp_path):
    path = write_qa(tmp_path / "qa.jsonl", [qa(i, domain="sums") for i in range(20)])
    cfg = compose_cfg("data", [*SMALL, "dataset=jsonl", f"dataset.path={path}"])
    out_dir = run_data_stage(cfg)
    counts = json.loads((out_dir / MANIFEST).read_text())["counts"]
    assert sum(counts.values()) == 20 and counts["val"] == 4 and counts["test"] == 4
    rows = read_labeled_split(out_dir, "train")
    assert all(r["grader"] == "exact" and r["domain"] == "sums" for r in rows)


def test_regrade_reports_agreement_and_writes_regraded_set(compose_cfg, tmp_path, capsys):
    from calibtune.cli import main

    out_dir = run_data_stage(compose_cfg("data", SMALL))
    capsys.readouterr()
    main(["data", "grade", str(out_dir), "--grader", "substring", "--out", str(tmp_path / "re")])
    printed = capsys.readouterr().out
    assert "agree" in printed and "overall" in printed
    regraded = read_labeled_split(tmp_path / "re", "test")
    assert {r["grader"] for r in regraded} == {"substring"}
    manifest = json.loads((tmp_path / "re" / MANIFEST).read_text())
    assert manifest["grader_agreement"]["overall"]["n"] == 40
    # substring is looser than exact/numeric: it never takes a right answer away
    old = {r["id"]: r["correct"] for r in read_labeled_split(out_dir, "test")}
    assert all(r["correct"] >= old[r["id"]] or r["domain"] == "arithmetic" for r in regraded)


@pytest.mark.slow
def test_real_default_model_answers_and_grades_in_sentences():
    from calibtune.config import compose
    from calibtune.data.sources import validate_qa_row
    from calibtune.data.stage import label_qa_rows
    from calibtune.models import load_model, load_tokenizer

    cfg = compose("data", ["model.device=cpu", "model.dtype=float32", "data.batch_size=4"])
    tokenizer, model = load_tokenizer(cfg.model), load_model(cfg.model)
    rows = [
        validate_qa_row({"question": q, "answers": a, "domain": d, "grader": g}, "probe", i)
        for i, (q, a, d, g) in enumerate(
            [
                ("What is the capital of France?", ["Paris"], "capitals", "exact"),
                ("What continent is Brazil in?", ["South America"], "continents", "exact"),
                ("What is the capital of France?", ["Lyon"], "wrong_gold", "exact"),
                ("What is the atomic number of Oganesson?", ["118"], "atomic_numbers", "numeric"),
            ]
        )
    ]
    labeled = label_qa_rows(model, tokenizer, rows, cfg)
    assert [r["correct"] for r in labeled][:3] == [1, 1, 0], [r["response"] for r in labeled]
    assert "Paris" in labeled[0]["response"]
    assert all("_source" not in r and r["split"] == "" for r in labeled)


def test_soft_labels_from_samples_and_judge_grader(compose_cfg, tmp_path):
    tiny = ["data.n_examples=12", "data.val_size=2", "data.test_size=2", "data.batch_size=6"]
    tiny += ["data.max_new_tokens=3", "data.progress=false"]
    cfg = compose_cfg("data", [*tiny, "data.num_samples=3", "data.temperature=1.0"])
    rows = read_labeled_split(run_data_stage(cfg), "train")
    assert all(len(r["samples"]) == 3 and r["response"] == r["samples"][0] for r in rows)
    assert all(round(r["correct"] * 3, 4) in (0, 1, 2, 3) for r in rows)
    judged = compose_cfg("data", [*tiny, "data.grader=judge", f"data.output_dir={tmp_path}/j"])
    rows = read_labeled_split(run_data_stage(judged), "train")
    assert {r["grader"] for r in rows} == {"judge"} and {r["correct"] for r in rows} <= {0, 1}


def test_runs_of_other_splits_answer_each_question_once_through_the_pool(
    compose_cfg, tmp_path, monkeypatch
):
    """Two data stages that differ only in their held-out domains and label count (`calibtune
    lodo` folds, a label-count sweep) share an answer pool: the second answers only the questions the first did not, and a shared
    question keeps the first run's answer, grade and signals under the second run's split."""
    pool = f"data.pool_dir={tmp_path}/pool"
    first_cfg = compose_cfg(
        "data", [*SMALL, pool, f"data.output_dir={tmp_path}/a", "data.holdout_domains=[arithmetic]"]
    )
    first = run_data_stage(first_cfg)
    answered: list[int] = []
    real = stage.label_and_signal

    def counting(model, tokenizer, qa_rows, cfg, record=True):
        answered.append(len(qa_rows))
        return real(model, tokenizer, qa_rows, cfg, record)

    monkeypatch.setattr(stage, "label_and_signal", counting)
    more = ["data.n_examples=56", "data.holdout_domains=[languages]"]  # more labels, other split
    second_cfg = compose_cfg("data", [*SMALL, pool, f"data.output_dir={tmp_path}/b", *more])
    second = run_data_stage(second_cfg)
    rows = {
        name: {r["id"]: r for split in SPLITS for r in read_labeled_split(out, split)}
        for name, out in (("a", first), ("b", second))
    }
    shared = set(rows["a"]) & set(rows["b"])
    assert shared and len(shared) < len(rows["b"])
    assert sum(answered) == len(rows["b"]) - len(shared)  # only the new questions
    for row_id in shared:
        for field in ("response", "correct", "query", "prompt"):
            assert rows["a"][row_id][field] == rows["b"][row_id][field]
    a = load_signals(first / SIGNALS_FILE)[0].select(sorted(shared))
    b = load_signals(second / SIGNALS_FILE)[0].select(sorted(shared))
    assert torch.equal(a.two_way, b.two_way) and torch.equal(a.hidden, b.hidden)
    manifest = json.loads((second / MANIFEST).read_text())
    assert manifest["work"]["pooled_rows"] == len(shared)
    assert manifest["work"]["generation_rows"] == len(rows["b"]) - len(shared)


def test_seeds_share_a_pool_of_greedy_answers_but_not_of_sampled_ones(compose_cfg, tmp_path):
    """A greedy answer does not depend on the seed (seeds draw other questions, whose ids key the
    rows), so every seed answers into one pool folder; sampled answers do, so each seed has its own."""

    def folder(*overrides: str) -> Path:
        cfg = compose_cfg("data", [*SMALL, f"data.pool_dir={tmp_path}/pool", *overrides])
        return stage.answer_pool(cfg).folder

    assert folder("seed=0") == folder("seed=1")
    sampled = ("data.num_samples=3", "data.temperature=0.7")
    assert folder("seed=0", *sampled) != folder("seed=1", *sampled)
    assert folder("seed=0", *sampled) != folder("seed=0")
