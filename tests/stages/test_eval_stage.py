"""The eval stage in-process on the tiny model: its own perturbed LoRA adapter and labeled set."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.adapters import write_stage_adapter as write_adapter
from fixtures.labeled import labeled_set_signals, write_synthetic_labeled_set

from calibtune.errors import ConfigError, InputError
from calibtune.eval.policy import RISK_GRID
from calibtune.eval.recalibrate import calibrator_from_params
from calibtune.eval.stage import resolve_adapter, run_eval_stage, split_by_question
from calibtune.examples import read_labeled_split
from calibtune.io import write_jsonl_atomic
from calibtune.models.confidence import QueryModel, query_suffix
from calibtune.models.encoding import encode_text
from calibtune.models.loading import load_model, load_tokenizer

QUESTIONS = [
    ("capitals", "What is the capital of France?", "Paris", ["Paris", "Lima", "Berlin"]),
    ("capitals", "What is the capital of Peru?", "Lima", ["Lima", "Tokyo", "Paris"]),
    ("capitals", "What is the capital of Japan?", "Tokyo", ["Tokyo", "Berlin", "Lima"]),
    ("arithmetic", "What is 2 plus 3?", "5", ["5", "6", "7"]),
    ("arithmetic", "What is 4 times 2?", "8", ["8", "6", "9"]),
]


def write_labeled_set(path: Path, cfg, tokenizer, n_val: int = 30, n_test: int = 40) -> Path:
    """A labeled set directory as the data stage writes it (the shared synthetic builder)."""
    sizes = {"train": 10, "val": n_val, "test": n_test}
    return write_synthetic_labeled_set(path, tokenizer, cfg.prompt, sizes, seed=0)


@pytest.fixture
def eval_inputs(compose_cfg, tmp_path):
    """(cfg overrides, labeled set dir, train dir with adapter/)."""
    cfg = compose_cfg("eval")
    tokenizer = load_tokenizer(cfg.model)
    data = write_labeled_set(tmp_path / "data", cfg, tokenizer)
    train = write_adapter(tmp_path / "train", cfg)
    overrides = [
        f"eval.data_dir={data}",
        f"eval.adapter={train}",
        "eval.n_boot=50",
        "eval.batch_size=8",
        "eval.verbalized.max_examples=6",
        "eval.verbalized.max_new_tokens=4",
        "eval.agreement_max_examples=8",
        "data.max_new_tokens=4",
        "eval.token_temperature.steps=4",
        "eval.within_min_per_class=3",
        "eval.domain_calibration.min_count=10",
    ]
    return overrides, data, train


def test_eval_stage_writes_report_and_is_reproducible(compose_cfg, eval_inputs, tmp_path):
    overrides, data, _ = eval_inputs
    out = run_eval_stage(compose_cfg("eval", [*overrides, f"eval.output_dir={tmp_path / 'a'}"]))
    metrics = json.loads((out / "metrics.json").read_text())

    assert metrics["schema_version"] == 1 and metrics["n_test"] == 40
    for method in (
        "base/ptrue",
        "tuned/ptrue",
        "base/pavg",
        "base/seqlogp",
        "base/pmin",
        "base/verbalized",
        "base/ptrue+platt",
        "tuned/ptrue+temperature",
        "base/pavg+isotonic",
        "tuned/ptrue+histogram",
    ):
        assert set(metrics["methods"][method]) >= {
            "ece",
            "smooth_ece",
            "brier",
            "nll",
            "auroc",
            "aurc",
        }
    base, tuned = metrics["methods"]["base/ptrue"], metrics["methods"]["tuned/ptrue"]
    assert base["ece"] != tuned["ece"]  # the perturbed adapter changed the confidences
    for name in ("ece", "brier", "auroc"):
        delta = metrics["deltas"][name]
        assert delta["value"] == pytest.approx(tuned[name] - base[name])
        assert delta["ci95"][0] <= delta["value"] <= delta["ci95"][1]
        assert delta["resample"] == "groups" and delta["n_groups"] == 40  # a qid per fixture row
    for method, scores in metrics["methods"].items():  # within-domain beside pooled, everywhere
        assert "auroc_within" in scores and "ece_within" in scores, method
    within = metrics["within_domain"]["tuned/ptrue"]
    assert within["domains"] and set(within["domains"]) <= {"capitals", "arithmetic"}
    per = [within["per_domain"][d]["auroc"] for d in within["domains"]]
    assert within["auroc_within"] == pytest.approx(np.mean(per))
    assert metrics["deltas"]["auroc_within"]["value"] == pytest.approx(
        within["auroc_within"] - metrics["within_domain"]["base/ptrue"]["auroc_within"]
    )
    assert metrics["deltas"]["auroc_within"]["resample"] == "groups"
    full = metrics["full_ece"]
    # the tiny random model is near-uniform over its vocabulary, so Full-ECE is near 0 here
    assert full["base"] >= 0 and full["tuned"] >= 0 and full["n_positions"] >= 40
    assert 0.5 <= full["base_best_temperature"] <= 2.0
    assert full["base_at_best_temperature"] <= full["base"]
    assert 0.0 <= metrics["answer_agreement"] <= 1.0
    assert set(metrics["per_domain"]) == {"capitals", "arithmetic"}
    assert metrics["worst_domain_ece"]["tuned/ptrue"]["domain"] in metrics["per_domain"]
    assert metrics["verbalized"]["n_asked"] == 6
    assert metrics["methods"]["base/verbalized"]["n"] + metrics["verbalized"]["n_unparseable"] == 6
    selective = metrics["selective"]["tuned/ptrue"]
    assert selective["coverage"] + selective["escalation_rate"] == pytest.approx(1.0)

    # calibrators.json holds plain params that serve/score can apply without pickles
    fitted = json.loads((out / "calibrators.json").read_text())["calibrators"]
    assert {"tuned/ptrue+temperature", "base/ptrue+platt", "tuned/ptrue+isotonic"} <= set(fitted)
    predictions = [
        json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()
    ]
    # trained baselines: fitted on the train split, scored on test like every method
    train = read_labeled_split(data, "train")
    for p in predictions:
        same = [r["correct"] for r in train if r["domain"] == p["domain"]]
        assert p["baseline/domain_prior"] == pytest.approx(np.mean(same))
    assert metrics["methods"]["baseline/logreg"]["n"] == 40
    assert metrics["methods"]["baseline/probe"]["n"] == 40  # the linear probe on hidden states
    assert {"base/pmin+platt", "base/seqlogp+isotonic"} <= set(metrics["methods"])
    versus = metrics["deltas_vs_best_baseline"]
    val_auroc = {m: v for m, v in versus["val_auroc"].items() if v is not None}
    candidates = {"baseline/logreg", "baseline/domain_prior", "baseline/probe", "base/pmin"}
    assert candidates <= set(versus["val_auroc"])
    assert versus["baseline"] == max(val_auroc, key=val_auroc.get)
    best = metrics["methods"][versus["baseline"]]
    assert versus["deltas"]["auroc"]["value"] == pytest.approx(tuned["auroc"] - best["auroc"])
    assert versus["deltas"]["auroc"]["n_groups"] == 40 and "auroc_within" in versus["deltas"]
    raw = np.array([p["tuned/ptrue"] for p in predictions])
    recal = calibrator_from_params(fitted["tuned/ptrue+platt"])(raw)
    assert recal == pytest.approx([p["tuned/ptrue+platt"] for p in predictions])
    check_production_outputs(out, metrics, fitted, predictions)

    # same seed -> identical metrics.json
    again = run_eval_stage(compose_cfg("eval", [*overrides, f"eval.output_dir={tmp_path / 'b'}"]))
    assert (again / "metrics.json").read_text() == (out / "metrics.json").read_text()

    check_report(out, metrics)
    assert f"{versus['baseline']} (best val AUROC)" in (out / "report.md").read_text()


def check_production_outputs(out: Path, metrics: dict, fitted: dict, predictions: list) -> None:
    """Per-domain calibrators (applied by domain), val predictions, and the fitted policy."""
    per_domain = fitted["tuned/ptrue+per_domain"]
    assert set(per_domain["domains"]) == {"capitals", "arithmetic"}  # 30 val rows, min_count 10
    domains = [p["domain"] for p in predictions]
    raw = np.array([p["tuned/ptrue"] for p in predictions])
    by_domain = calibrator_from_params(per_domain)(raw, domains)
    assert by_domain == pytest.approx([p["tuned/ptrue+per_domain"] for p in predictions])
    assert not np.allclose(by_domain, raw)
    assert per_domain["unseen"] == "identity"  # a domain val never saw keeps its confidence
    assert calibrator_from_params(per_domain)(raw, ["new"] * raw.size) == pytest.approx(raw)
    block = metrics["per_domain_calibration"]
    assert block["method"] == "tuned/ptrue" and set(block["domains"]) == set(domains)
    mean = block["mean_domain_ece"]["per_domain"]
    assert mean["ci95"][0] <= mean["value"] <= mean["ci95"][1]
    assert block["fit_rows"] == {  # a LoRA adapter: no train rows scored out of fold
        "add_train": "auto",
        "n_train": 0,
        "used": False,
        "reason": "no out-of-fold train rows",
    }
    assert (
        "| maps fitted on |  |  |  | val (add_train=auto; no out-of-fold"
        in (out / "report.md").read_text()
    )
    val_rows = (out / "val_predictions.jsonl").read_text().splitlines()
    assert len(val_rows) == metrics["n_val"] == 30
    assert all(json.loads(row)["group"] for row in val_rows)  # entity groups, for re-splits
    policy = json.loads((out / "policy.json").read_text())
    assert policy["batch_size"] == 40 and policy["calibrator"] == "tuned/ptrue+per_domain"
    assert policy["unit"] == "row" and metrics["policy"]["val_groups"]["rows"] == 30
    shares = metrics["policy"]["test"]["shares"]
    assert sum(s["k"] for s in shares.values()) == 40
    certifiable = metrics["policy"]["certifiable"]
    assert [row["answer_risk"] for row in certifiable] == list(RISK_GRID)
    assert all(row["test"]["n"] == 40 for row in certifiable)
    report_text = (out / "report.md").read_text()
    assert "lowest answer risk certifiable on this val" in report_text
    assert "| p-value units (val) | rows (30, exchangeable; val holds" in report_text


def check_report(out: Path, metrics: dict) -> None:
    """The HTML is self-contained with decodable PNGs and the tables; screenshot if chromium."""
    page = (out / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for data in images)
    assert "http://" not in page and "https://" not in page
    assert page.count("<table>") == 8 and "delta (tuned - base) [95% CI]" in page
    lo, hi = metrics["deltas"]["ece"]["ci95"]
    assert f"[{lo:+.3f}, {hi:+.3f}]" in page
    markdown = (out / "report.md").read_text()
    assert "| capitals |" in markdown and "![reliability.png](reliability.png)" in markdown
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return
    shot = out / "screenshot.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1200,1800",
            f"file://{out / 'report.html'}",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000


def test_base_only_and_undefined_metrics_are_reported_not_crashing(
    compose_cfg, eval_inputs, tmp_path
):
    _, data, _ = eval_inputs
    # a single-class test set (AUROC undefined) and a val split smaller than the bins
    for split, keep in (("test", lambda r: r["correct"] == 0), ("val", lambda r: True)):
        rows = [json.loads(line) for line in (data / f"{split}.jsonl").read_text().splitlines()]
        rows = [r for r in rows if keep(r)][: 12 if split == "test" else 9]
        write_jsonl_atomic(data / f"{split}.jsonl", rows)
    cfg = compose_cfg(
        "eval",
        [
            f"eval.data_dir={data}",
            "eval.adapter=null",
            "eval.n_boot=20",
            "eval.verbalized.enabled=false",
            "eval.token_temperature.steps=2",
            f"eval.output_dir={tmp_path / 'base'}",
        ],
    )
    out = run_eval_stage(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    base = metrics["methods"]["base/ptrue"]
    assert base["auroc"] is None and "single class" in base["n/a"]["auroc"]
    assert metrics["methods"]["base/ptrue+histogram"]["n/a"]["all"].startswith("val has 9")
    assert (
        metrics["deltas"]["ece"]["value"] is None
        and "no adapter" in metrics["deltas"]["ece"]["reason"]
    )
    assert "tuned/ptrue" not in metrics["methods"] and metrics["answer_agreement"] is None
    page = (out / "report.html").read_text()
    assert "n/a (undefined: test outcomes hold a single class)" in page
    assert "n/a (val has 9 examples, fewer than 15 bins)" in page


def test_bad_inputs_fail_clearly_before_writing(compose_cfg, eval_inputs, tmp_path):
    _, data, train = eval_inputs
    with pytest.raises(ConfigError, match="adapter_config.json"):
        resolve_adapter(str(tmp_path))
    assert resolve_adapter(str(train)) == train / "adapter"
    assert resolve_adapter(str(train / "adapter")) == train / "adapter"
    assert resolve_adapter(None) is None
    missing = compose_cfg("eval", [f"eval.data_dir={tmp_path / 'nothing'}", "eval.adapter=null"])
    with pytest.raises(InputError, match="not a labeled set"):
        run_eval_stage(missing)
    lines = (data / "test.jsonl").read_text().splitlines()
    broken = json.loads(lines[3])
    broken["correct"] = float("nan")
    (data / "test.jsonl").write_text("\n".join([*lines[:3], json.dumps(broken), *lines[4:]]) + "\n")
    out = tmp_path / "never"
    cfg = compose_cfg(
        "eval", [f"eval.data_dir={data}", f"eval.adapter={train}", f"eval.output_dir={out}"]
    )
    with pytest.raises(InputError, match=r"test\.jsonl:4: field 'correct'"):
        run_eval_stage(cfg)
    assert not out.exists()


def test_bad_out_of_fold_train_rows_fail_before_the_model_loads(
    compose_cfg, eval_inputs, tmp_path, monkeypatch
):
    from calibtune.eval import stage
    from calibtune.models.probe import OUT_OF_FOLD

    overrides, data, train = eval_inputs
    monkeypatch.setattr(stage, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    out = tmp_path / "never"
    always = [*overrides, f"eval.output_dir={out}", "eval.domain_calibration.add_train=true"]
    with pytest.raises(ConfigError, match="add_train=true needs the train rows scored out of"):
        run_eval_stage(compose_cfg("eval", always))
    val_id = read_labeled_split(data, "val")[0]["id"]
    rows = [
        {"id": "t0", "domain": "capitals", "group": "g0", "correct": 1.0, "confidence": 0.7},
        {"id": "t1", "domain": "capitals", "group": "g1", "correct": 0.0, "confidence": 1.5},
    ]
    oof_text = "\n\n".join(json.dumps(row) for row in rows)  # a blank line: bad row on line 3
    (train / "adapter" / OUT_OF_FOLD).write_text(oof_text, encoding="utf-8")
    with pytest.raises(InputError, match=rf"{OUT_OF_FOLD}:3: field 'confidence'"):
        run_eval_stage(compose_cfg("eval", always))
    rows[1] = {**rows[1], "confidence": 0.4, "correct": None}
    write_jsonl_atomic(train / "adapter" / OUT_OF_FOLD, rows)
    with pytest.raises(InputError, match=rf"{OUT_OF_FOLD}:2: field 'correct'"):
        run_eval_stage(compose_cfg("eval", always))
    rows[1] = {**rows[1], "correct": 0.0, "id": val_id}
    write_jsonl_atomic(train / "adapter" / OUT_OF_FOLD, rows)
    with pytest.raises(InputError, match=rf"{OUT_OF_FOLD}:2: field 'id'.*a val or test row"):
        run_eval_stage(compose_cfg("eval", [*always[:-1]]))  # auto reads them too
    assert not out.exists()


def test_split_by_question_is_deterministic_and_keeps_groups_together():
    rows = [
        {"id": f"{q}-{k}", "qid": f"q{q}", "question": f"fact {q}?", "group": f"e{q // 4}"}
        for q in range(200)
        for k in range(2)
    ]
    first = split_by_question(rows, seed=3, val_fraction=0.5)
    assert first == split_by_question(rows, seed=3, val_fraction=0.5)
    val_groups = {r["group"] for r in first["val"]}
    assert not val_groups & {r["group"] for r in first["test"]}  # an entity's facts stay together
    assert 15 < len(val_groups) < 35
    assert first != split_by_question(rows, seed=4, val_fraction=0.5)


def test_raw_qa_jsonl_is_answered_graded_and_split(compose_cfg, eval_inputs, tmp_path):
    _, _, train = eval_inputs
    qa = [
        {"id": f"r{i}", "question": q, "answers": [gold], "domain": domain}
        for i, (domain, q, gold, _) in enumerate(QUESTIONS * 6)
    ]
    for i, row in enumerate(qa):
        row["question"] += " " * (i // len(QUESTIONS))  # same text folds to the same question
    path = tmp_path / "questions.jsonl"
    write_jsonl_atomic(path, qa)
    cfg = compose_cfg(
        "eval",
        [
            f"eval.data_dir={path}",
            f"eval.adapter={train}",
            "eval.n_boot=10",
            "eval.verbalized.enabled=false",
            "eval.agreement_max_examples=4",
            "data.max_new_tokens=3",
            "eval.token_temperature.steps=2",
            f"eval.output_dir={tmp_path / 'qa'}",
        ],
    )
    out = run_eval_stage(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test"] + metrics["n_val"] == 30
    predictions = [
        json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()
    ]
    assert all(p["correct"] in (0, 1) for p in predictions)
    # rows of one question (same qid) never land in both val and test
    test_ids = {p["id"] for p in predictions}
    by_question = {}
    for row in qa:
        by_question.setdefault(row["question"].strip(), set()).add(row["id"] in test_ids)
    assert all(len(sides) == 1 for sides in by_question.values())
    # the graded answers are kept beside metrics.json as a labeled set
    labeled = {s: read_labeled_split(out / "labeled", s) for s in ("val", "test")}
    assert {r["id"] for r in labeled["test"]} == test_ids
    assert len(labeled["val"]) == metrics["n_val"]
    assert all(r["grader"] == "exact" and isinstance(r["response"], str) for r in labeled["test"])
    manifest = json.loads((out / "labeled" / "manifest.json").read_text())
    assert manifest["dataset"] == {"kind": "jsonl", "path": str(path)}


def test_raw_qa_answers_come_from_the_answer_pool_when_one_is_set(
    compose_cfg, eval_inputs, tmp_path
):
    """With data.pool_dir, a raw QA file is answered once: a second eval (another adapter, the
    same questions) takes the pool's answers, grades and signals instead of generating."""
    _, _, train = eval_inputs
    qa = [
        {"id": f"p{i}", "question": q, "answers": [gold], "domain": domain}
        for i, (domain, q, gold, _) in enumerate(QUESTIONS * 2)
    ]
    path = tmp_path / "questions.jsonl"
    write_jsonl_atomic(path, qa)

    def run(name: str) -> Path:
        overrides = [
            f"eval.data_dir={path}",
            f"eval.adapter={train}",
            f"data.pool_dir={tmp_path / 'pool'}",
            "eval.n_boot=10",
            "eval.verbalized.enabled=false",
            "eval.agreement_max_examples=4",
            "data.max_new_tokens=3",
            "eval.token_temperature.steps=2",
            f"eval.output_dir={tmp_path / name}",
        ]
        return run_eval_stage(compose_cfg("eval", overrides))

    first = run("first")
    [rows_file] = (tmp_path / "pool").glob("*/rows.jsonl")
    pooled = [json.loads(line) for line in rows_file.read_text().splitlines()]
    assert sorted(r["id"] for r in pooled) == sorted(r["id"] for r in qa)
    marked = {**pooled[0], "response": "an answer only the pool has"}
    write_jsonl_atomic(rows_file, [marked, *pooled[1:]])

    def responses(out: Path) -> dict[str, str]:
        splits = [read_labeled_split(out / "labeled", split) for split in ("val", "test")]
        return {r["id"]: r["response"] for rows in splits for r in rows}

    before, after = responses(first), responses(run("second"))
    assert after == {**before, marked["id"]: "an answer only the pool has"}


@pytest.mark.slow
def test_eval_on_the_embedded_default_model(tmp_path):
    """A few examples through the real SmolLM2: real yes/no tokens, real Full-ECE, report."""
    from calibtune.config import compose

    overrides = ["logger=none", "model.device=cpu", "model.dtype=float32", f"run_dir={tmp_path}"]
    cfg = compose("eval", overrides)
    data = write_labeled_set(tmp_path / "data", cfg, load_tokenizer(cfg.model), n_val=8, n_test=8)
    adapter = write_adapter(tmp_path / "train", cfg)
    out = run_eval_stage(
        compose(
            "eval",
            [
                *overrides,
                f"eval.data_dir={data}",
                f"eval.adapter={adapter}",
                "eval.n_boot=20",
                "eval.verbalized.max_examples=2",
                "eval.agreement_max_examples=2",
                "eval.token_temperature.steps=2",
                "eval.recalibrators=[temperature]",
            ],
        )
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < metrics["full_ece"]["base"] < 2 and metrics["full_ece"]["n_positions"] >= 8
    assert metrics["methods"]["base/ptrue"]["ece"] is not None
    assert metrics["methods"]["base/ptrue"]["brier"] != metrics["methods"]["tuned/ptrue"]["brier"]
    assert (out / "report.html").stat().st_size > 10_000


def test_answer_agreement_measures_the_adapter_alone(compose_cfg, tmp_path):
    """An identity adapter (LoRA B = 0, PEFT's init) agrees on every answer; a heavily perturbed
    one does not, and only the changed answers are listed as examples."""
    from peft import LoraConfig, get_peft_model

    from calibtune.eval.stage import tuning_cost

    cfg = compose_cfg("eval", ["eval.batch_size=4", "eval.agreement_max_examples=12"])
    cfg.data.max_new_tokens = 6
    tokenizer = load_tokenizer(cfg.model)
    data = write_synthetic_labeled_set(
        tmp_path / "data", tokenizer, cfg.prompt, {"train": 2, "val": 2, "test": 12}, seed=3
    )
    rows = read_labeled_split(data, "test")
    model = get_peft_model(
        load_model(cfg.model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    )
    identity = tuning_cost(cfg, QueryModel.of(model), tokenizer, rows)
    assert identity["n"] == 12
    assert identity["answer_agreement"] == 1.0 and identity["examples"] == []
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 5.0)
    perturbed = tuning_cost(cfg, QueryModel.of(model), tokenizer, rows)
    assert perturbed["answer_agreement"] < 1.0
    assert all(e["base"] != e["tuned"] for e in perturbed["examples"])


def test_activated_lora_keeps_answers_and_token_calibration(compose_cfg, eval_inputs, tmp_path):
    """An aLoRA adapter acts on the query only: tuned ptrue moves, while the answers (agreement)
    and the answer-token distributions (Full-ECE at every temperature) are the base model's."""
    overrides, data, _ = eval_inputs
    cfg = compose_cfg("eval", overrides)
    tokenizer = load_tokenizer(cfg.model)
    row = json.loads((data / "test.jsonl").read_text().splitlines()[0])
    suffix = query_suffix(row["prompt"], row["response"], row["query"])
    train = write_adapter(
        tmp_path / "alora", cfg, alora_invocation_tokens=encode_text(tokenizer, suffix)
    )
    out = tmp_path / "eval-alora"
    run_eval_stage(
        compose_cfg("eval", [*overrides, f"eval.adapter={train}", f"eval.output_dir={out}"])
    )
    metrics = json.loads((out / "metrics.json").read_text())
    full = metrics["full_ece"]
    assert full["tuned_curve"] == full["base_curve"]
    assert metrics["answer_agreement"] == 1.0
    predictions = [
        json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()
    ]
    assert max(abs(p["tuned/ptrue"] - p["base/ptrue"]) for p in predictions) > 1e-3

    restate = tmp_path / "restate"
    restate_cfg = compose_cfg("eval", ["prompt.query_style=restate"])
    write_labeled_set(restate, restate_cfg, tokenizer)
    with pytest.raises(ConfigError, match="activated LoRA"):
        run_eval_stage(
            compose_cfg(
                "eval",
                [
                    *overrides,
                    f"eval.adapter={train}",
                    f"eval.data_dir={restate}",
                    f"eval.output_dir={tmp_path}/never",
                ],
            )
        )
    assert not (tmp_path / "never").exists()


def test_test_domains_restricts_the_scored_test_rows(compose_cfg, eval_inputs, tmp_path):
    overrides, data, _ = eval_inputs
    out = tmp_path / "eval-capitals"
    cfg = compose_cfg(
        "eval",
        [
            *overrides,
            "eval.adapter=null",
            "eval.verbalized.enabled=false",
            "eval.test_domains=[capitals]",
            "eval.recalibrate_methods=[base/ptrue]",  # val's answer features: for the baselines
            "eval.policy.unit=group",
            f"eval.output_dir={out}",
        ],
    )
    run_eval_stage(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    policy = metrics["policy"]  # p-values over val's entity groups: population risk, no batch
    assert policy["unit"] == "group" and policy["batch_size"] is None
    assert 0 < policy["val_groups"]["n"] <= policy["val_groups"]["rows"] == metrics["n_val"]
    test_rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    assert metrics["n_test"] == sum(r["domain"] == "capitals" for r in test_rows) > 0
    assert metrics["methods"]["baseline/logreg"]["n"] == metrics["n_test"]
    versus = metrics["deltas_vs_best_baseline"]
    assert versus["baseline"] in versus["val_auroc"] and versus["deltas"]["auroc"]["value"] is None
    assert set(metrics["per_domain"]) <= {"capitals", "all"}
    with pytest.raises(InputError, match="test split is empty"):
        run_eval_stage(compose_cfg("eval", [*overrides, "eval.test_domains=[no_such_domain]"]))


def test_recorded_base_signals_spare_every_base_pass_and_give_the_same_metrics(
    compose_cfg, eval_inputs, tmp_path, monkeypatch
):
    """With the labeled set's recorded base signals, a LoRA eval runs the model for its tuned
    query pass only (verbalized confidence off), and its metrics equal those of an eval that
    computes the signals itself; signals of another prompt are refused before the model loads."""
    from calibtune.eval import stage as eval_stage
    from calibtune.models.signals import SIGNALS_FILE, save_signals, signals_key

    overrides, data, _ = eval_inputs
    overrides = [*overrides, "eval.verbalized.enabled=false"]
    computed_out = tmp_path / "computed"
    run_eval_stage(compose_cfg("eval", [*overrides, f"eval.output_dir={computed_out}"]))
    computed = json.loads((computed_out / "metrics.json").read_text())
    assert computed["work"]["base_signals"] == "computed here"

    cfg = compose_cfg("eval", overrides)
    signals = labeled_set_signals(data, cfg, batch_size=8)
    save_signals(data / SIGNALS_FILE, signals, signals_key(cfg))

    def no_base_pass(*args, **kwargs):
        raise AssertionError("a base pass over labeled rows with recorded signals")

    monkeypatch.setattr(eval_stage, "compute_signals", no_base_pass)
    recorded_out = tmp_path / "recorded"
    run_eval_stage(compose_cfg("eval", [*overrides, f"eval.output_dir={recorded_out}"]))
    recorded = json.loads((recorded_out / "metrics.json").read_text())
    work = recorded["work"]
    assert work["base_signals"] == "recorded by the data stage"
    assert work["base_signal_rows_computed"] == {"val": 0, "test": 0, "train": 0}
    assert work["tuned_query_rows"] == recorded["n_val"] + recorded["n_test"]
    for name, method in computed["methods"].items():
        for key in ("ece", "auroc", "brier"):
            if isinstance(method.get(key), float):
                assert recorded["methods"][name][key] == pytest.approx(method[key], abs=1e-5), name

    with pytest.raises(InputError, match="prompt"):
        run_eval_stage(
            compose_cfg(
                "eval",
                [*overrides, "prompt.query_yes=Yes", f"eval.output_dir={tmp_path}/never"],
            )
        )
    assert not (tmp_path / "never").exists()
