"""One uncertainty query, one computation: train validation, the eval stage and `Scorer` give
bit-identical confidences for the same model, rows and batch size (LoRA and activated LoRA;
follow-up and restated queries); a probe's agree to float noise (its eval features come from
the base signals' cached pass)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from fixtures.adapters import perturb_lora_
from fixtures.labeled import write_synthetic_labeled_set

from calibtune.eval.stage import base_and_tuned, row_signals, tuned_confidences
from calibtune.examples import read_labeled_split
from calibtune.models.confidence import (
    QueryModel,
    attach_adapter,
    common_suffix_ids,
    confidences,
    encode_query,
    query_tokens_of,
)
from calibtune.models.loading import load_model, load_tokenizer
from calibtune.models.methods import PROBE, method_named
from calibtune.models.probe import PROBE_CONFIG, PROBE_WEIGHTS, ProbeHead
from calibtune.serve.score import Scorer
from calibtune.train.data import tokenize_examples
from calibtune.train.lora import validation_logits
from calibtune.train.methods import attach_lora, save_adapter

BATCH = 4  # 11 val rows: three batches, each with left padding


def perturbed_lora(cfg) -> torch.nn.Module:
    """The train stage's (plain) LoRA on the tiny model with non-zero B weights."""
    torch.manual_seed(0)
    return perturb_lora_(attach_lora(load_model(cfg.model), cfg.lora)).eval()


def eval_and_scorer(cfg, tokenizer, adapter_dir, rows) -> tuple[np.ndarray, np.ndarray]:
    """Tuned ptrue of the eval stage (its own path: base signals, then the tuned query pass or
    the probe head on the signals' hidden states) and of `Scorer`, each loading the adapter."""
    cfg.eval.batch_size = BATCH
    qm = attach_adapter(load_model(cfg.model), adapter_dir)
    signals, computed = row_signals(cfg, qm, tokenizer, rows, None, None)
    assert computed == len(rows)
    query_pass = qm.method.tuned_query_pass
    tuned = tuned_confidences(cfg, qm, tokenizer, rows, "val", True) if query_pass else None
    evaluated = base_and_tuned(
        cfg, qm, {"val": signals, "test": signals}, {"val": tuned, "test": tuned}
    )[0]["tuned/ptrue"]
    scorer = Scorer(attach_adapter(load_model(cfg.model), adapter_dir), tokenizer, cfg.prompt)
    scorer.batch_size = BATCH
    scored = scorer.raw_confidences([r["question"] for r in rows], [r["response"] for r in rows])
    return evaluated, scored


@pytest.mark.parametrize(
    ("method", "style"), [("lora", "followup"), ("alora", "followup"), ("lora", "restate")]
)
def test_train_validation_eval_and_scorer_agree_bitwise(compose_cfg, tmp_path, method, style):
    cfg = compose_cfg("train", [f"method={method}", f"prompt.query_style={style}"])
    tokenizer = load_tokenizer(cfg.model)
    data = write_synthetic_labeled_set(
        tmp_path / "data", tokenizer, cfg.prompt, {"train": 2, "val": 11, "test": 2}, seed=1
    )
    rows = read_labeled_split(data, "val")
    examples = tokenize_examples(tokenizer, rows, with_answers=False)
    activated = method_named(method).activated
    peft_model = perturbed_lora(cfg)
    trained = validation_logits(
        Accelerator(cpu=True),
        peft_model,
        peft_model,
        examples,
        query_tokens_of(tokenizer, cfg.prompt),
        tokenizer.pad_token_id,
        BATCH,
        method_named(method),
    )
    invocation = common_suffix_ids(examples) if activated else None
    save_adapter(peft_model, tmp_path / "train" / "adapter", invocation)
    evaluated, scored = eval_and_scorer(cfg, tokenizer, tmp_path / "train" / "adapter", rows)

    assert attach_adapter(
        load_model(cfg.model), tmp_path / "train" / "adapter"
    ).method is method_named(method)
    validated = confidences(trained)
    assert np.array_equal(validated, evaluated)
    assert np.array_equal(validated, scored)
    base = row_signals(cfg, QueryModel.of(load_model(cfg.model)), tokenizer, rows, None, None)
    base = base[0].confidences()["base/ptrue"]
    assert np.abs(validated - base).max() > 1e-3  # the adapter matters


@pytest.mark.parametrize(
    ("style", "signals"), [("followup", False), ("followup", True), ("restate", True)]
)
def test_probe_scores_the_same_in_eval_and_scorer(compose_cfg, tmp_path, style, signals):
    from safetensors.torch import save_file

    from calibtune.io import write_json_atomic

    cfg = compose_cfg("eval", [f"prompt.query_style={style}"])
    tokenizer = load_tokenizer(cfg.model)
    data = write_synthetic_labeled_set(
        tmp_path / "data", tokenizer, cfg.prompt, {"train": 2, "val": 11, "test": 2}, seed=2
    )
    rows = read_labeled_split(data, "val")
    torch.manual_seed(0)
    width = load_model(cfg.model).config.hidden_size + (3 if signals else 0)
    head = ProbeHead(width, hidden=8, answer_signals=signals)
    adapter = tmp_path / "probe" / "adapter"
    adapter.mkdir(parents=True)
    save_file(head.state_dict(), adapter / PROBE_WEIGHTS)
    layer = int(cfg.model.feature_layer)  # fitted on the layer this run records
    config = {"in_features": width, "hidden": 8, "layer": layer, "answer_signals": signals}
    write_json_atomic(adapter / PROBE_CONFIG, config)
    assert attach_adapter(load_model(cfg.model), adapter).method is PROBE
    evaluated, scored = eval_and_scorer(cfg, tokenizer, adapter, rows)
    # The eval reads the probe's features from the base signals (the query suffix on the KV
    # cache of prompt + response; the answer signals from that prefix pass, or a restated
    # query's answer pass); Scorer runs one pass over the whole query and, for the answer
    # signals, one over prompt + response: float noise apart.
    assert np.allclose(evaluated, scored, atol=1e-5, rtol=0)
    assert len(set(np.round(evaluated, 6))) > 1


def test_a_followup_query_pass_also_gives_the_answer_signals(compose_cfg, tmp_path):
    """The probe's serving pass over follow-up queries (prompt + response is their prefix)
    reads the answer signals off the same forward: equal to a separate answer pass, float noise
    apart, with one forward per batch; the hidden states are the plain query pass's."""
    from calibtune.models.encoding import answers_stats
    from calibtune.models.methods import query_features, query_features_and_answer_stats

    cfg = compose_cfg("eval", ["prompt.query_style=followup"])
    tokenizer, model = load_tokenizer(cfg.model), load_model(cfg.model).eval()
    data = write_synthetic_labeled_set(
        tmp_path / "data", tokenizer, cfg.prompt, {"train": 2, "val": 11, "test": 2}, seed=3
    )
    queries = [encode_query(tokenizer, r) for r in read_labeled_split(data, "val")]
    assert all(q.suffix_ids is not None for q in queries)
    pad, layer = tokenizer.pad_token_id, int(cfg.model.feature_layer)
    forwards = []
    hook = model.register_forward_hook(lambda *_: forwards.append(1))
    features, stats = query_features_and_answer_stats(model, queries, pad, 4, layer)
    hook.remove()
    assert len(forwards) == 3  # 11 queries in batches of 4
    want = answers_stats(model, [q.answer for q in queries], pad, 4)
    torch.testing.assert_close(stats, want, atol=1e-5, rtol=1e-4)
    assert not stats.isnan().any() and stats.std(0).min() > 0
    torch.testing.assert_close(features, query_features(model, queries, pad, 4, layer))
