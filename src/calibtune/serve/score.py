"""Calibrated confidences for (question, answer) pairs from a tuned checkpoint.

`Scorer` is the Python API (`calibtune.Scorer`); `run_score(cfg)` is `calibtune score`:

    calibtune score run_dir=<pipeline run dir> serve.score.input=pairs.jsonl
    calibtune score serve.model_dir=<exported dir> serve.score.input=pairs.jsonl

The confidence is the eval stage's tuned `ptrue`: `calibtune.models.confidence` renders the
query and runs the same passes as eval and train validation (same batching by length), so with
the same batch size the numbers are bit-identical to eval's; every row carries explicit position
ids, so another batch size changes them only by rounding. Then the post-hoc calibrator, if any
(per-domain maps when the rows carry a `domain`; for a domain val never saw, the global map or,
with the eval's `domain_calibration.unseen: identity`, the raw confidence), and the
eval stage's answer / retrieve / escalate policy when there is one (`Scorer.decide`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from calibtune.config import check_config
from calibtune.errors import ConfigError, InputError
from calibtune.eval.recalibrate import Calibrator, calibrator_from_params
from calibtune.io import read_jsonl_numbered, write_json_atomic, write_jsonl_atomic
from calibtune.models.confidence import (
    QueryModel,
    QueryTokens,
    attach_adapter,
    confidences,
    encode_query,
    query_tokens_of,
    query_two_way_logits,
    render_query_prompt,
)
from calibtune.models.loading import find_adapter_dir, load_model, load_tokenizer
from calibtune.models.prompts import render_answer_prompt
from calibtune.runtime import is_rank_zero

log = logging.getLogger(__name__)

SERVE_CONFIG = "calibtune.json"  # written by `calibtune export` beside the merged weights
ADAPTER_SUBDIR = "adapter"  # an export's unmerged (activated LoRA) adapter


def adapter_dir(path: str | os.PathLike) -> Path:
    """The adapter dir of a train output dir (its `adapter/`), or `path` itself."""
    return find_adapter_dir(path, "serve.adapter")


def load_tuned_model(model_cfg, adapter: str | os.PathLike | None) -> QueryModel:
    """The base model of `model_cfg` with the adapter applied (not merged), in eval mode."""
    return attach_adapter(load_model(model_cfg), None if adapter is None else adapter_dir(adapter))


def load_calibrator(path: str | os.PathLike, name: str) -> tuple[dict, Calibrator]:
    """Read one fitted calibrator `name` from an eval stage's calibrators.json.

    Returns its plain params (to store in an export) and the function that applies them."""
    path = Path(path)
    try:
        fitted = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(path, None, None, f"cannot read calibrators ({err})") from None
    entries = fitted.get("calibrators", fitted) if isinstance(fitted, dict) else {}
    if name not in entries:
        raise InputError(
            path,
            None,
            name,
            f"no such calibrator; choose serve.calibrator_name from {sorted(entries)}",
        )
    params = entries[name]
    return params, calibrator_from_params(params)


class Scorer:
    """Calibrated P(correct) for (question, answer) pairs from a tuned model.

    >>> scorer = Scorer.from_pretrained("outputs/run/x/export")
    >>> scorer.score(["What is the capital of France?"], ["Paris"])
    array([0.87...])
    """

    def __init__(
        self,
        model: QueryModel | PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        prompt_cfg,
        calibrator: Calibrator | None = None,
        batch_size: int = 32,
        policy: dict | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.query_model = model if isinstance(model, QueryModel) else QueryModel.of(model.eval())
        self.model = self.query_model.module
        self.tokenizer = tokenizer
        self.prompt_cfg = prompt_cfg
        self.calibrator = calibrator
        self.batch_size = batch_size
        self.policy = policy
        self.query_tokens: QueryTokens = query_tokens_of(tokenizer, prompt_cfg)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 32,
    ) -> Scorer:
        """Load a directory written by `calibtune export` (weights, tokenizer, prompt, calibrator)."""
        path = Path(path)
        serve_file = path / SERVE_CONFIG
        if not serve_file.is_file():
            raise InputError(serve_file, None, None, "missing: is this a `calibtune export` dir?")
        serve = json.loads(serve_file.read_text(encoding="utf-8"))
        model_cfg = OmegaConf.create(
            {
                "name_or_path": str(path),
                "revision": None,
                "dtype": dtype,
                "device": device,
                "attn_implementation": serve.get("attn_implementation", "sdpa"),
                "trust_remote_code": False,
            }
        )
        calibrator = serve.get("calibrator")
        subdir = serve.get("adapter_subdir")
        model = attach_adapter(load_model(model_cfg), path / subdir if subdir else None)
        return cls(
            model,
            load_tokenizer(model_cfg),
            OmegaConf.create(serve["prompt"]),
            calibrator_from_params(calibrator["params"]) if calibrator else None,
            batch_size=batch_size,
            policy=serve.get("policy"),
        )

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Scorer:
        """Build from a composed config: `serve.model_dir`, or `model` + `serve.adapter`."""
        serve = cfg.serve
        if serve.model_dir:
            return cls.from_pretrained(
                serve.model_dir, cfg.model.device, cfg.model.dtype, serve.score.batch_size
            )
        calibrator = resolve_calibrator(cfg)
        return cls(
            load_tuned_model(cfg.model, serve.adapter),
            load_tokenizer(cfg.model),
            cfg.prompt,
            calibrator[1] if calibrator else None,
            batch_size=serve.score.batch_size,
            policy=resolve_policy(cfg),
        )

    def query_prompts(
        self,
        questions: Sequence[str],
        answers: Sequence[str],
        choices: Sequence[Sequence[str] | None] | None = None,
    ) -> list[str]:
        """The rendered uncertainty queries for the pairs."""
        if len(questions) != len(answers):
            raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
        choices = choices or [None] * len(questions)
        return [
            render_query_prompt(self.tokenizer, self.prompt_cfg, question, choice, answer)
            for question, answer, choice in zip(questions, answers, choices, strict=True)
        ]

    def raw_confidences(
        self,
        questions: Sequence[str],
        answers: Sequence[str],
        choices: Sequence[Sequence[str] | None] | None = None,
    ) -> np.ndarray:
        """The tuned model's uncalibrated confidence that each answer is correct."""
        queries = self.query_prompts(questions, answers, choices)
        choices = choices or [None] * len(questions)
        encoded = [
            encode_query(
                self.tokenizer,
                {
                    "prompt": render_answer_prompt(self.tokenizer, self.prompt_cfg, q, c),
                    "response": answer,
                    "query": query,
                },
                with_answer=True,
            )
            for q, answer, c, query in zip(questions, answers, choices, queries, strict=True)
        ]
        if not encoded:
            return np.empty(0, dtype=np.float64)
        two_way = query_two_way_logits(
            self.query_model,
            encoded,
            self.query_tokens,
            self.tokenizer.pad_token_id,
            self.batch_size,
        )
        return confidences(two_way)

    def calibrate(self, raw: np.ndarray, domains: Sequence[str | None] | None = None) -> np.ndarray:
        """Apply the post-hoc calibrator (identity when there is none); with `domains`, each
        domain's map (for domains the calibrator has not seen, what its `unseen` says)."""
        if self.calibrator is None:
            return raw
        calibrated = self.calibrator(raw) if domains is None else self.calibrator(raw, domains)
        return np.clip(np.asarray(calibrated, dtype=np.float64), 0.0, 1.0)

    def score(
        self,
        questions: Sequence[str],
        answers: Sequence[str],
        choices: Sequence[Sequence[str] | None] | None = None,
        domains: Sequence[str | None] | None = None,
    ) -> np.ndarray:
        """Calibrated confidence that each answer is correct, in [0, 1] (per-domain maps when
        `domains` is given)."""
        return self.calibrate(self.raw_confidences(questions, answers, choices), domains)

    def decide(
        self, confidences: Sequence[float], domains: Sequence[str | None] | None = None
    ) -> list[str]:
        """The policy's action for each calibrated confidence: answer, retrieve or escalate."""
        if self.policy is None:
            raise ConfigError(
                "this scorer has no decision policy: export a run whose eval wrote policy.json "
                "(eval.policy.enabled=true), or set serve.policy=<policy.json>"
            )
        from calibtune.eval.policy import decide

        return decide(self.policy, confidences, domains)

    def answer(
        self,
        questions: Sequence[str],
        choices: Sequence[Sequence[str] | None] | None = None,
        max_new_tokens: int = 32,
    ) -> list[str]:
        """Greedy answers of the tuned model (the data stage's generation code)."""
        from calibtune.data.generation import generate_answers

        choices = choices or [None] * len(questions)
        prompts = [
            render_answer_prompt(self.tokenizer, self.prompt_cfg, question, choice)
            for question, choice in zip(questions, choices, strict=True)
        ]
        answers = generate_answers(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            batch_size=self.batch_size,
        )
        return [samples[0] for samples in answers]


def resolve_calibrator(cfg: DictConfig) -> tuple[dict, Calibrator] | None:
    """The calibrator that `serve.calibrator` names (`auto`: the eval dir's, when it exists)."""
    setting = cfg.serve.calibrator
    if setting is None:
        return None
    if setting == "auto":
        path = Path(cfg.eval.output_dir) / "calibrators.json"
        if not path.is_file():
            log.warning("no calibrators.json in %s: confidences are not recalibrated", path.parent)
            return None
    else:
        path = Path(setting)
        if not path.is_file():
            raise ConfigError(f"serve.calibrator={setting!r}: no such file")
    log.info("calibrator %s from %s", cfg.serve.calibrator_name, path)
    return load_calibrator(path, cfg.serve.calibrator_name)


def resolve_policy(cfg: DictConfig) -> dict | None:
    """The decision policy `serve.policy` names (`auto`: the eval dir's policy.json, if any)."""
    setting = cfg.serve.get("policy", "auto")
    if setting is None:
        return None
    path = Path(cfg.eval.output_dir) / "policy.json" if setting == "auto" else Path(setting)
    if not path.is_file():
        if setting == "auto":
            log.info("no policy.json in %s: no actions are decided", path.parent)
            return None
        raise ConfigError(f"serve.policy={setting!r}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise InputError(path, None, None, f"invalid JSON ({err})") from None


def read_pairs(path: str | os.PathLike) -> list[dict]:
    """Read the score input: objects with a non-empty `question`, optional `answer`/`choices`."""
    path = Path(path)
    numbered = read_jsonl_numbered(path)
    for line, row in numbered:
        if not isinstance(row.get("question"), str) or not row["question"].strip():
            raise InputError(path, line, "question", "missing or not a non-empty string")
        if "answer" in row and not isinstance(row["answer"], str):
            raise InputError(path, line, "answer", "must be a string (or left out to generate)")
        choices = row.get("choices")
        if choices is not None and (
            not isinstance(choices, list) or not all(isinstance(c, str) for c in choices)
        ):
            raise InputError(path, line, "choices", "must be a list of strings or null")
        if row.get("domain") is not None and not isinstance(row["domain"], str):
            raise InputError(path, line, "domain", "must be a string (or left out)")
    return [row for _, row in numbered]


def score_rows(scorer: Scorer, rows: list[dict], max_new_tokens: int) -> list[dict]:
    """Answer the rows without an answer, then score all; returns the output rows."""
    missing = [i for i, row in enumerate(rows) if "answer" not in row]
    if missing:
        log.info("generating answers for %d questions without one", len(missing))
        generated = scorer.answer(
            [rows[i]["question"] for i in missing],
            [rows[i].get("choices") for i in missing],
            max_new_tokens=max_new_tokens,
        )
        rows = [dict(row) for row in rows]
        for i, answer in zip(missing, generated, strict=True):
            rows[i]["answer"], rows[i]["answer_generated"] = answer, True
    raw = scorer.raw_confidences(
        [row["question"] for row in rows],
        [row["answer"] for row in rows],
        [row.get("choices") for row in rows],
    )
    domains = [row.get("domain") for row in rows]
    calibrated = scorer.calibrate(raw, domains)
    scored = [
        {**row, "confidence": float(c), "raw_confidence": float(r)}
        for row, c, r in zip(rows, calibrated, raw, strict=True)
    ]
    if scorer.policy is not None:
        for row, action in zip(scored, scorer.decide(calibrated, domains), strict=True):
            row["action"] = action
    return scored


def run_score(cfg: DictConfig) -> Path:
    """`calibtune score`: write scores.jsonl (+ score_summary.json) and report pairs/s."""
    check_config(cfg)
    rows = read_pairs(cfg.serve.score.input)
    scorer = Scorer.from_config(cfg)
    start = time.perf_counter()
    scored = score_rows(scorer, rows, cfg.serve.score.max_new_tokens)
    seconds = time.perf_counter() - start
    output = Path(cfg.serve.score.output)
    summary = {
        "pairs": len(scored),
        "generated_answers": sum(bool(row.get("answer_generated")) for row in scored),
        "seconds": round(seconds, 3),
        "pairs_per_s": round(len(scored) / seconds, 2) if seconds > 0 else None,
        "calibrated": scorer.calibrator is not None,
        "input": str(cfg.serve.score.input),
    }
    if is_rank_zero():
        write_jsonl_atomic(output, scored)
        write_json_atomic(output.with_name("score_summary.json"), summary)
    print(
        f"scored {summary['pairs']} pairs in {seconds:.1f} s ({summary['pairs_per_s']} pairs/s)"
        f"{'' if summary['calibrated'] else ', uncalibrated'} -> {output}"
    )
    return output
