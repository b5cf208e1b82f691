"""The frozen model's query features for the recipes that fit a head on them (`train.probe`;
`train.lora`'s warm-started head, method=alora_head): the hidden state of model.feature_layer
at the query's last token (with `probe.answer_signals`, beside the logits of the answer's base
signals pavg, seqlogp, pmin), read off the data stage's recorded base signals, or computed by
base passes."""

from __future__ import annotations

import logging

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from omegaconf import DictConfig, OmegaConf

from calibtune.examples import group_kfold, row_group
from calibtune.models.encoding import answers_stats
from calibtune.models.loading import load_model
from calibtune.models.methods import query_features
from calibtune.models.probe import ProbeHead, fit_linear_probe, head_inputs
from calibtune.models.signals import BaseSignals, read_signals, signals_key
from calibtune.train.common import rank_share
from calibtune.train.data import tokenize_examples

log = logging.getLogger(__name__)

Features = tuple[torch.Tensor, torch.Tensor]  # features [N, F], labels [N]
MIN_AUTO_DOMAINS = 5  # probe.strength_folds=auto holds out whole domains from this many on


def recorded_signals(cfg: DictConfig, rows: list[dict]) -> BaseSignals | None:
    """The data stage's recorded base signals when they cover every row (refused when made
    with another model or prompt), else None."""
    recorded = read_signals(cfg.train.data_dir, signals_key(cfg))
    if recorded is None or recorded.missing([str(r["id"]) for r in rows]):
        return None
    return recorded


def answer_signals_of(cfg: DictConfig) -> bool:
    """Whether the head reads the answer signals (`probe.answer_signals`; method=probe only)."""
    return bool(OmegaConf.select(cfg, "probe.answer_signals", default=False))


def recorded_features(signals: BaseSignals, rows: list[dict], answer_signals: bool) -> Features:
    """Features [N, F] (`head_inputs` of the recorded base signals) and labels [N] of `rows`."""
    picked = signals.select([str(r["id"]) for r in rows])
    features = head_inputs(picked.hidden, picked.stats, answer_signals)
    return features, torch.tensor([float(r["correct"]) for r in rows])


def shared_features(
    accelerator: Accelerator,
    model,
    tokenizer,
    rows: list[dict],
    batch_size: int,
    layer: int,
    answer_signals: bool,
):
    """Features [N, F] (hidden layer `layer`, and the answer signals when `answer_signals`) and
    labels [N] of `rows`, each rank computing an equal share and every rank receiving all."""
    examples = tokenize_examples(tokenizer, rows, with_answers=answer_signals)
    mine = rank_share(len(examples), accelerator.process_index, accelerator.num_processes)
    mine_examples = [examples[i] for i in mine]
    pad_id = tokenizer.pad_token_id
    feats = query_features(model, mine_examples, pad_id, batch_size, layer)
    if answer_signals:
        stats = answers_stats(model, [e.answer for e in mine_examples], pad_id, batch_size)
        feats = head_inputs(feats, stats, True)
    pairs = list(zip(mine, feats.unbind(0), strict=True))
    if accelerator.num_processes > 1:
        pairs = gather_object(pairs)
    by_index = dict(pairs)
    features = torch.stack([by_index[i] for i in range(len(examples))])
    return features, torch.tensor([e.correct for e in examples])


def split_features(
    cfg: DictConfig, accelerator: Accelerator, tokenizer, splits: list[list[dict]]
) -> tuple[list[Features], int]:
    """Features and labels of each split in `splits`: recorded, or (none recorded) one base pass
    sharded over ranks. Returns them and the number of rows a base pass computed."""
    recorded = recorded_signals(cfg, [r for rows in splits for r in rows])
    answer_signals = answer_signals_of(cfg)
    if recorded is not None:
        log.info("head features: the data stage's recorded base signals (no model pass)")
        return [recorded_features(recorded, rows, answer_signals) for rows in splits], 0
    log.info(
        "head features: one base pass over %d rows (no recorded signals)", sum(map(len, splits))
    )
    with accelerator.main_process_first():
        model = load_model(cfg.model, device=accelerator.device).eval()
    size, layer = int(cfg.train.eval_batch_size), int(cfg.model.feature_layer)
    out = [
        shared_features(accelerator, model, tokenizer, rows, size, layer, answer_signals)
        for rows in splits
    ]
    return out, sum(map(len, splits))


def fit_probe(
    features: Features, groups: list[str], seed: int, layer: int, answer_signals: bool = False
) -> tuple[ProbeHead, float]:
    """The linear probe (`fit_linear_probe`) on train's features, soft labels taken as their
    majority grade: method=probe's fit and method=alora_head's starting head (`answer_signals`:
    whether the features end in the answer signals' logits)."""
    x, y = features
    labels = (y.numpy() >= 0.5).astype(int)
    return fit_linear_probe(x.double().numpy(), labels, groups, seed, layer, answer_signals)


def resolve_strength_folds(rows: list[dict], setting: str) -> str:
    """The folds the logistic probe's strength is chosen on (`probe.strength_folds`): `entity` or
    `domain` as set; `auto` (the default) holds out whole domains when train has at least
    MIN_AUTO_DOMAINS domains and every such fold leaves both grades to fit on, else keeps entity
    groups whole (one-domain data, such as a single Hugging Face set)."""
    if setting != "auto":
        return setting
    domains = strength_groups(rows, "domain")
    enough = len(set(domains)) >= MIN_AUTO_DOMAINS and folds_keep_both_grades(rows, domains)
    return "domain" if enough else "entity"


def strength_groups(rows: list[dict], folds: str) -> list[str]:
    """What the folds that choose the probe's strength keep whole (resolved
    `probe.strength_folds`): each row's entity group, or its domain (whole domains held out)."""
    return [str(r.get("domain")) if folds == "domain" else row_group(r) for r in rows]


def folds_keep_both_grades(rows: list[dict], groups: list[str]) -> bool:
    """Whether every fold of `groups` (as the probe's fit splits them) leaves right and wrong
    answers among the rows it fits on."""
    grades = np.array([float(r["correct"]) >= 0.5 for r in rows])
    return all(
        np.unique(grades[fit]).size == 2
        for fit, _ in group_kfold(groups).split(grades, grades, groups)
    )
