"""Base signals: what the base model says about each labeled row, computed once.

The data stage records them while it answers (`signals_from_generation`: the answer-token
logits come from generation itself, and the uncertainty query's suffix runs on generation's KV
cache), so no later stage runs the base model over a labeled row again. Per row:

- `two_way`: base [no, yes] logits of the uncertainty query (base ptrue);
- `pavg` / `seqlogp` / `pmin`: the answer-token signals (NaN for an empty response);
- `hidden`: the hidden state after layer `model.feature_layer` at the query's last token (the
  probe's features);
- `full_ece`: per temperature of `temperatures`, the row's Full-ECE bin sums (confidence sums
  and hit counts over `n_bins` bins) and its number of answer positions, so any subset of rows
  sums to the Full-ECE of that subset.

Saved as `base_signals.safetensors` beside the labeled split, rows keyed by id, with the model's
fingerprint and the prompt config's hash in its metadata (and in manifest.json); `read_signals`
refuses a file made with another model or prompt. `compute_signals` is the same computation for
rows that have no recorded signals (a raw QA file, a labeled set from elsewhere): one base pass
per row over prompt + response + query suffix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import save_file

from calibtune.errors import InputError
from calibtune.io import atomic_path, sha256_text
from calibtune.metrics import FullECE, full_ece_sums
from calibtune.models.confidence import (
    QueryModel,
    QueryTokens,
    common_suffix_ids,
    confidences,
    encode_query,
    followup_batches,
    query_logits,
    query_two_way_logits,
)
from calibtune.models.encoding import (
    answer_stats,
    answer_token_logits,
    collate_answers,
    encode_answer,
    followup_prefix_pass,
    followup_suffix_outputs,
    last_token_state,
    length_sorted_batches,
)
from calibtune.models.loading import model_fingerprint
from calibtune.models.methods import query_features

SIGNALS_FILE = "base_signals.safetensors"
ANSWER_STATS = ("pavg", "seqlogp", "pmin")


@dataclass
class BaseSignals:
    """Base signals of rows (see the module docstring), row i belonging to `ids[i]`."""

    ids: list[str]
    two_way: torch.Tensor  # [N, 2] float32
    stats: torch.Tensor  # [N, 3] float64: pavg, seqlogp, pmin
    hidden: torch.Tensor  # [N, H] float32
    full_ece: torch.Tensor  # [N, T, 2, n_bins] float64: confidence sums, hit counts
    positions: torch.Tensor  # [N] int64: answer positions of each row
    temperatures: list[float] = field(default_factory=list)
    n_bins: int = 15

    def select(self, ids: Sequence[str]) -> BaseSignals:
        """The signals of `ids`, in that order."""
        index = {row_id: i for i, row_id in enumerate(self.ids)}
        rows = torch.tensor([index[i] for i in ids], dtype=torch.long)
        return BaseSignals(
            list(ids),
            self.two_way[rows],
            self.stats[rows],
            self.hidden[rows],
            self.full_ece[rows],
            self.positions[rows],
            self.temperatures,
            self.n_bins,
        )

    def missing(self, ids: Sequence[str]) -> list[str]:
        """The ids among `ids` with no signals here."""
        have = set(self.ids)
        return [i for i in ids if i not in have]

    def confidences(self) -> dict[str, np.ndarray]:
        """base/ptrue, base/pavg, base/seqlogp, base/pmin as float64 arrays (the eval's names)."""
        out = {"base/ptrue": confidences(self.two_way)}
        for column, name in enumerate(ANSWER_STATS):
            out[f"base/{name}"] = self.stats[:, column].numpy().copy()
        return out

    def full_ece_scans(self, temperatures: Sequence[float], n_bins: int) -> list | None:
        """[(temperature, FullECE)] over these rows, or None when a temperature or n_bins was
        not recorded (the caller then computes them)."""
        if n_bins != self.n_bins or not set(temperatures) <= set(self.temperatures):
            return None
        scans = []
        for t in temperatures:
            column = self.temperatures.index(t)
            metric = FullECE(n_bins)
            metric.add_sums(
                self.full_ece[:, column, 0].sum(0),
                self.full_ece[:, column, 1].sum(0),
                int(self.positions.sum()),
            )
            scans.append((t, metric))
        return scans


def concat(parts: Sequence[BaseSignals]) -> BaseSignals:
    """Rows of several BaseSignals (same temperatures and bins) as one."""
    first = parts[0]
    return BaseSignals(
        [i for p in parts for i in p.ids],
        torch.cat([p.two_way for p in parts]),
        torch.cat([p.stats for p in parts]),
        torch.cat([p.hidden for p in parts]),
        torch.cat([p.full_ece for p in parts]),
        torch.cat([p.positions for p in parts]),
        first.temperatures,
        first.n_bins,
    )


def temperature_grid(eval_cfg) -> list[float]:
    """Token temperatures of the eval's Full-ECE scan (`eval.token_temperature`, always 1.0)."""
    grid = np.linspace(
        eval_cfg.token_temperature.low,
        eval_cfg.token_temperature.high,
        eval_cfg.token_temperature.steps,
    )
    return sorted({round(float(t), 6) for t in grid} | {1.0})


# ---------------------------------------------------------------------------- identity and files


def signals_key(cfg) -> dict[str, str]:
    """What a run's signals depend on: the model's content hash (its name when it has none), a
    hash of the prompt config (answer prompt, query, yes/no words) and the hidden layer recorded
    (`model.feature_layer`)."""
    prompt_cfg, layer = cfg.prompt, int(cfg.model.feature_layer)
    prompt = OmegaConf.to_container(prompt_cfg, resolve=True) if prompt_cfg is not None else {}
    fingerprint = model_fingerprint(cfg.model)
    model = fingerprint.get("sha256") or f"name:{fingerprint.get('name')}"
    prompt_hash = sha256_text(json.dumps(prompt, sort_keys=True))[:16]
    return {"model": str(model), "prompt": prompt_hash, "layer": str(layer)}


def save_signals(path: str | Path, signals: BaseSignals, key: dict[str, str]) -> None:
    """Write signals as safetensors (atomically), ids and key in the metadata."""
    tensors = {
        "two_way": signals.two_way.float().contiguous(),
        "stats": signals.stats.double().contiguous(),
        "hidden": signals.hidden.float().contiguous(),
        "full_ece": signals.full_ece.double().contiguous(),
        "positions": signals.positions.long().contiguous(),
    }
    metadata = {
        "ids": json.dumps(signals.ids),
        "temperatures": json.dumps(signals.temperatures),
        "n_bins": str(signals.n_bins),
        **{f"key.{k}": v for k, v in key.items()},
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_signals(path: str | Path) -> tuple[BaseSignals, dict[str, str]]:
    """Signals and their key from a file written by `save_signals`."""
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    signals = BaseSignals(
        json.loads(meta["ids"]),
        tensors["two_way"],
        tensors["stats"],
        tensors["hidden"],
        tensors["full_ece"],
        tensors["positions"],
        json.loads(meta["temperatures"]),
        int(meta["n_bins"]),
    )
    key = {k.removeprefix("key."): v for k, v in meta.items() if k.startswith("key.")}
    return signals, key


def read_signals(data_dir: str | Path, key: dict[str, str]) -> BaseSignals | None:
    """The labeled set's recorded signals, or None when it has none; fails, naming both, when
    they were made with another model, prompt or feature layer than `key` (before any model
    work)."""
    path = Path(data_dir) / SIGNALS_FILE
    if not path.is_file():
        return None
    signals, recorded = load_signals(path)
    recorded.setdefault("layer", "-1")  # a file from before model.feature_layer: the last layer
    for name, setting in (("model", "model"), ("prompt", "prompt"), ("layer", "feature_layer")):
        if recorded.get(name) != key[name]:
            raise InputError(
                path,
                None,
                f"key.{name}",
                f"base signals were recorded with {setting} {recorded.get(name)!r}, but this run "
                f"uses {setting} {key[name]!r}: re-run the data stage with this {setting}, or use "
                f"the {setting} the labeled set was made with",
            )
    return signals


# ---------------------------------------------------------------------------- computing


def _full_ece(
    answers: Sequence[tuple[torch.Tensor, torch.Tensor]], temperatures: Sequence[float], n_bins: int
) -> torch.Tensor:
    """[rows, T, 2, n_bins] Full-ECE bin sums of each row's answer-token logits [L, V] (row by
    row: no batch-sized temporaries)."""
    return torch.stack(
        [
            full_ece_sums(lg, tg, torch.zeros_like(tg), 1, temperatures, n_bins)[0]
            for lg, tg in answers
        ]
    )


def rows_signals(
    ids: Sequence[str],
    two_way: torch.Tensor,
    hidden: torch.Tensor,
    answers: Sequence[tuple[torch.Tensor, torch.Tensor]],
    temperatures: Sequence[float],
    n_bins: int,
) -> BaseSignals:
    """BaseSignals of a batch from its query outputs and each row's (answer logits, targets)."""
    return BaseSignals(
        list(ids),
        two_way.float().cpu(),
        torch.stack([answer_stats(lg, tg) for lg, tg in answers]),
        hidden.float().cpu(),
        _full_ece(answers, temperatures, n_bins),
        torch.tensor([int(tg.numel()) for _, tg in answers], dtype=torch.long),
        list(temperatures),
        n_bins,
    )


@torch.inference_mode()
def signals_from_generation(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    out,
    response_ids: Sequence[list[int]],
    suffix_ids: Sequence[int],
    tokens: QueryTokens,
    ids: Sequence[str],
    temperatures: Sequence[float],
    n_bins: int,
    layer: int,
) -> tuple[BaseSignals | None, list[int]]:
    """Signals of one generated batch from `generate`'s own outputs (`out`: sequences, raw
    logits and KV cache; `inputs`: its left-padded prompts), with one more pass: the query
    suffix on the cache, each row's columns after its response masked out.

    A row whose response re-encodes to a prefix of its generated tokens is served here; the
    others (a response whose text does not re-encode to the tokens generated) are returned by
    position, for `compute_signals`. Returns (signals of the served
    rows or None, positions of the rest)."""
    width = inputs["input_ids"].shape[1]
    generated = out.sequences[:, width:].cpu()
    steps = generated.shape[1]
    served = [
        r
        for r, ids_r in enumerate(response_ids)
        if len(ids_r) <= steps and generated[r, : len(ids_r)].tolist() == list(ids_r)
    ]
    rest = [r for r in range(len(response_ids)) if r not in served]
    if not served:
        return None, rest
    rows = len(response_ids)
    lengths = torch.tensor([len(response_ids[r]) if r in served else 0 for r in range(rows)])
    # The cache holds every generated token but the last: a response that used every step
    # gets its last token back as a "bridge" column; for the others that column is masked.
    bridge = lengths == steps
    in_cache = torch.arange(steps - 1)[None, :] < lengths[:, None]
    suffix = torch.tensor([list(suffix_ids)] * rows, dtype=torch.long)
    new_ids = torch.cat([generated[:, -1:], suffix], dim=1)
    mask = torch.cat(
        [inputs["attention_mask"].cpu(), in_cache.long(), bridge.long()[:, None]]
        + [torch.ones_like(suffix)],
        dim=1,
    )
    start = inputs["attention_mask"].sum(1).cpu() + lengths  # first suffix position
    positions = torch.cat(
        [(start - 1).clamp(min=0)[:, None], start[:, None] + torch.arange(len(suffix_ids))], dim=1
    )
    device = inputs["input_ids"].device
    result = model(
        input_ids=new_ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        past_key_values=out.past_key_values,
        logits_to_keep=1,
        use_cache=True,
        output_hidden_states=True,
    )
    two_way = query_logits(result.logits[:, -1, :], tokens)[served]
    hidden = last_token_state(result.hidden_states, layer)[served]
    answers = [  # generation's raw logits of each answer token (no [B, steps, V] copy)
        (
            torch.stack([out.logits[step][r] for step in range(int(lengths[r]))])
            if lengths[r]
            else out.logits[0][r, None, :0],
            generated[r, : int(lengths[r])],
        )
        for r in served
    ]
    picked = [ids[r] for r in served]
    return rows_signals(picked, two_way, hidden, answers, temperatures, n_bins), rest


@torch.inference_mode()
def compute_signals(
    qm: QueryModel,
    tokenizer,
    rows: Sequence[dict],
    tokens: QueryTokens,
    batch_size: int,
    temperatures: Sequence[float],
    n_bins: int,
    layer: int,
    progress=None,
) -> BaseSignals:
    """Signals of labeled rows (`id`, `prompt`, `response`, `query`) by base passes of the
    model: for follow-up queries one pass per row (prompt + response, then the suffix on its
    cache); for restated queries a query pass and an answer pass. `layer`: the hidden layer
    recorded (`model.feature_layer`)."""
    queries = [encode_query(tokenizer, row) for row in rows]
    suffix_ids, pad_id = common_suffix_ids(queries), tokenizer.pad_token_id
    ids = [str(r["id"]) for r in rows]
    if suffix_ids is None:
        return _restated_signals(
            qm, tokenizer, rows, queries, tokens, batch_size, temperatures, n_bins, layer
        )
    device = next(qm.module.parameters()).device
    parts = []
    batches = followup_batches(queries, suffix_ids, pad_id, batch_size)
    for batch, collated in progress(batches) if progress else batches:
        collated = {k: v.to(device) for k, v in collated.items()}
        with qm.base_mode():
            (logits, targets, owners), cache = followup_prefix_pass(qm.module, collated)
            last, state = followup_suffix_outputs(qm.module, collated, cache, layer)
        answers = [(logits[owners == r], targets[owners == r]) for r in range(len(batch))]
        two_way = query_logits(last, tokens)
        parts.append(
            rows_signals([ids[i] for i in batch], two_way, state, answers, temperatures, n_bins)
        )
    return concat(parts).select(ids)


def _restated_signals(
    qm: QueryModel,
    tokenizer,
    rows: Sequence[dict],
    queries: Sequence,
    tokens: QueryTokens,
    batch_size: int,
    temperatures: Sequence[float],
    n_bins: int,
    layer: int,
) -> BaseSignals:
    """`compute_signals` for restated queries: a query pass, then an answer pass per row."""
    pad_id, device = tokenizer.pad_token_id, next(qm.module.parameters()).device
    two_way = query_two_way_logits(qm, queries, tokens, pad_id, batch_size, base=True)
    with qm.base_mode():
        hidden = query_features(qm.module, queries, pad_id, batch_size, layer)
    encoded = [encode_answer(tokenizer, r["prompt"], r["response"]) for r in rows]
    empty = (torch.empty(0, 1), torch.empty(0, dtype=torch.long))
    answers = [empty] * len(rows)
    usable = [i for i, e in enumerate(encoded) if len(e.input_ids) > e.answer_start]
    lengths = [len(encoded[i].input_ids) for i in usable]
    for positions in length_sorted_batches(lengths, batch_size):
        batch = [usable[p] for p in positions]
        collated = collate_answers([encoded[i] for i in batch], pad_id)
        with qm.base_mode():
            logits, targets, owners = answer_token_logits(
                qm.module, {k: v.to(device) for k, v in collated.items()}
            )
        for r, index in enumerate(batch):
            answers[index] = (logits[owners == r], targets[owners == r])
    ids = [str(r["id"]) for r in rows]
    return rows_signals(ids, two_way, hidden, answers, temperatures, n_bins)
