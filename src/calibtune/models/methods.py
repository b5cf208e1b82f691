"""The ways calibtune gives a model its confidence, one object each: the base model (nothing
tuned), the probe (a head on the frozen model's hidden state at the query's last token), LoRA,
the activated LoRA (aLoRA: the adapter acts on the query's tokens only), and the activated LoRA
with a head (`alora_head`: a linear head on the query's last hidden
state with the adapter on, trained jointly with it from the fitted probe and a zero LoRA B, so
its step 0 is the probe).

Each object owns what differs between them: what the stages ask of it (can the answers change?
are the answer tokens the base model's? does the tuned confidence need a model pass?), its
features -> confidence for the query pass, how its adapter is recognised and loaded, what an
export ships, and which config keys it reads (a sweep may search only those; `optim.*` keys it
does not use are refused at compose time). Stage code asks the object and never its name.

The lookups are here and only here: `method_named` (config `method.name`, an export's
`adapter_kind`), `method_of_model` (a loaded model), `method_of_adapter` (an adapter dir).
Each method's training recipe is the train stage's (`calibtune.train.recipe.RECIPES`, keyed by
these objects), so this module imports nothing above `calibtune.models`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from calibtune.errors import ConfigError
from calibtune.models.encoding import (
    answer_stats,
    answers_stats,
    collate_followup,
    common_suffix_ids,
    encode_text,
    followup_prefix_pass,
    followup_suffix_outputs,
    last_token_state,
    length_sorted_batches,
    pad_sequences,
)
from calibtune.models.probe import PROBE_CONFIG, PROBE_WEIGHTS, is_probe_dir, load_probe

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from transformers import PreTrainedTokenizerBase

PEFT_CONFIG = "adapter_config.json"
OPTIM_KEYS = ("lr", "weight_decay", "betas", "eps", "warmup", "scheduler")


def alora_invocation_tokens(model) -> list[int] | None:
    """The invocation tokens of a loaded activated-LoRA adapter on `model`, else None."""
    config = getattr(model, "peft_config", {}).get("default")
    tokens = getattr(config, "alora_invocation_tokens", None)
    return list(tokens) if tokens else None


def _query_passes(module: torch.nn.Module, queries: Sequence, pad_id: int, batch_size: int):
    """One forward per batch of queries (similar lengths, left-padded, as
    `models.confidence.query_batches`): yields (row indices, padded width, hidden states)."""
    device = next(module.parameters()).device
    for batch in length_sorted_batches([len(q.query_ids) for q in queries], batch_size):
        padded = pad_sequences([queries[i].query_ids for i in batch], pad_id, side="left")
        out = module(
            **{k: v.to(device) for k, v in padded.items()},
            output_hidden_states=True,
            logits_to_keep=1,
            use_cache=False,
        )
        yield batch, padded["input_ids"].shape[1], out.hidden_states


@torch.no_grad()
def query_features(
    module: torch.nn.Module, queries: Sequence, pad_id: int, batch_size: int, layer: int
) -> torch.Tensor:
    """Hidden state after `layer` (`model.feature_layer`) at each query's last token, [N, H]
    (float32, CPU): the probe's features."""
    feats = torch.empty(len(queries), module.config.hidden_size)
    for batch, _, states in _query_passes(module, queries, pad_id, batch_size):
        feats[batch] = last_token_state(states, layer).float().cpu()
    return feats


@torch.no_grad()
def query_features_and_answer_stats(
    module: torch.nn.Module, queries: Sequence, pad_id: int, batch_size: int, layer: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`query_features` of follow-up queries (their prefix is prompt + response) and, from the
    same forward, the answer signals [N, 3] (`answer_stats`): the LM head on the last hidden
    states that predict the response tokens."""
    feats = torch.empty(len(queries), module.config.hidden_size)
    stats = torch.full((len(queries), 3), float("nan"), dtype=torch.float64)
    for batch, width, states in _query_passes(module, queries, pad_id, batch_size):
        feats[batch] = last_token_state(states, layer).float().cpu()
        stats[batch] = _prefix_answer_stats(module, states[-1], width, [queries[i] for i in batch])
    return feats, stats


def _prefix_answer_stats(
    module: torch.nn.Module, final: torch.Tensor, width: int, queries: Sequence
) -> torch.Tensor:
    """[B, 3] `answer_stats` of left-padded follow-up queries' response tokens, from the batch's
    last hidden states [B, W, H] (normed: the LM head's input), one LM-head call for the batch."""
    rows, columns, targets = [], [], []
    for row, query in enumerate(queries):
        answer, offset = query.answer, width - len(query.query_ids)
        response = answer.input_ids[answer.answer_start :]
        start = offset + answer.answer_start - 1  # the position that predicts the first token
        rows += [row] * len(response)
        columns += range(start, start + len(response))
        targets += response
    owners = torch.tensor(rows, dtype=torch.long, device=final.device)
    targets = torch.tensor(targets, dtype=torch.long, device=final.device)
    columns = torch.tensor(columns, dtype=torch.long, device=final.device)
    logits = module.get_output_embeddings()(final[owners, columns])
    return torch.stack(
        [answer_stats(logits[owners == r], targets[owners == r]) for r in range(len(queries))]
    )


@torch.no_grad()
def followup_query_features(
    module: torch.nn.Module,
    peft: torch.nn.Module,
    queries: Sequence,
    pad_id: int,
    batch_size: int,
    layer: int,
) -> torch.Tensor:
    """Hidden state after `layer` at each follow-up query's last token, [N, H] (float32, CPU),
    as an activated adapter sees it: prompt + response through the base model (`peft` with its
    adapter disabled; a KV cache), the shared suffix through `module` with the adapter on. Batches
    as `models.confidence.query_batches`; `module` may be a DDP / FSDP2 / DeepSpeed wrapper."""
    suffix = common_suffix_ids(queries)
    if suffix is None:
        raise ConfigError("an activated LoRA needs follow-up queries that share one suffix")
    device = next(module.parameters()).device
    feats: torch.Tensor | None = None
    for batch in length_sorted_batches([len(q.query_ids) for q in queries], batch_size):
        collated = collate_followup([queries[i].answer for i in batch], suffix, pad_id)
        collated = {k: v.to(device) for k, v in collated.items()}
        with peft.disable_adapter():
            _, cache = followup_prefix_pass(peft, collated, answer_logits=False)
        _, hidden = followup_suffix_outputs(module, collated, cache, layer)
        if feats is None:
            feats = torch.empty(len(queries), hidden.shape[-1])
        feats[batch] = hidden.float().cpu()
    return feats if feats is not None else torch.empty(0, 0)


@dataclass(frozen=True, eq=False)
class QueryMethod:
    """One method. The fields are what stages ask; the methods are what differs in behaviour
    (the defaults are a LoRA's: the LM's yes/no logits over the query, adapter merged on export).

    - `tuned`: something was trained (False: the base model only; nothing to compare against).
    - `unchanged_answers`: why the answers are the base model's by construction (None: they
      can change, so the eval generates both and measures the agreement).
    - `base_answer_tokens`: why the tuned answer-token distributions are the base model's (the
      eval's tuned Full-ECE is the base figure); None: the tuned model's own.
    - `tuned_query_pass`: the tuned confidence needs the model (a LoRA's query pass); else it is
      read off the recorded base signals.
    - `tuned_full_ece`: that query pass also gives the tuned answer-token logits (Full-ECE).
    - `activated`: the adapter runs only on the query suffix, over the base model's KV cache of
      prompt + response (follow-up queries only; no gradient checkpointing in training).
    - `adapter_head`: a head on the query's hidden state trains beside the adapter,
      starting from the linear probe fitted on train (its step 0 is the probe).
    - `unmerged_export`: an export keeps the adapter in its own folder beside the base weights.
    - `exported`: what an export ships, in words.
    - `config_prefixes`: config keys only this method reads (a sweep may search only these and
      the keys every method reads).
    """

    name: str
    tuned: bool = True
    unchanged_answers: str | None = None
    base_answer_tokens: str | None = None
    tuned_query_pass: bool = False
    tuned_full_ece: bool = False
    activated: bool = False
    adapter_head: bool = False
    unmerged_export: bool = False
    exported: str = ""
    config_prefixes: tuple[str, ...] = ()

    # -- loading

    def recognizes(self, adapter_dir: Path | None) -> bool:
        """Whether `adapter_dir` holds this method's adapter."""
        return adapter_dir is not None and (Path(adapter_dir) / PEFT_CONFIG).is_file()

    def describes(self, model: torch.nn.Module, probe: torch.nn.Module | None) -> bool:
        """Whether a loaded model (with its PEFT adapter, or a probe head) is this method's."""
        return probe is None and hasattr(model, "disable_adapter")

    def attach(self, model: torch.nn.Module, adapter_dir: Path | None) -> tuple:
        """(model with the adapter of `adapter_dir` applied, probe head or None), in eval mode."""
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(adapter_dir)).eval(), None

    # -- the query pass

    def own_two_way_logits(
        self, qm: Any, queries: Sequence, pad_id: int, batch_size: int
    ) -> torch.Tensor | None:
        """Tuned [no, yes] logits [N, 2] when this method reads them off something other than
        the LM's yes/no logits (a probe's head); None: the LM's (`query_two_way_logits`)."""
        return None

    def confidences_from_signals(
        self, qm: Any, hidden: torch.Tensor, stats: torch.Tensor
    ) -> torch.Tensor | None:
        """Tuned [no, yes] logits from the recorded base signals (hidden states [N, H], answer
        signals [N, 3]), when this method needs no model pass of its own for them (a probe);
        else None."""
        return None

    def check_queries(self, qm: Any, tokenizer: PreTrainedTokenizerBase, suffix: str | None):
        """Fail when these queries are ones this method cannot score."""

    # -- export

    def save_export(self, qm: Any, adapter_dir: Path, out_dir: Path, subdir: str) -> None:
        """Write the exported model's weights into `out_dir` (a LoRA: merged into the base)."""
        qm.module.merge_and_unload().save_pretrained(out_dir, safe_serialization=True)

    # -- config

    def config_errors(self, cfg: DictConfig, optim_defaults: dict) -> list[str]:
        """Settings this method would ignore, set away from their defaults (one line each)."""
        return []


@dataclass(frozen=True, eq=False)
class BaseMethod(QueryMethod):
    """The base model alone (eval.adapter=null): no adapter, no tuned confidence."""

    def recognizes(self, adapter_dir: Path | None) -> bool:
        return adapter_dir is None

    def describes(self, model: torch.nn.Module, probe: torch.nn.Module | None) -> bool:
        return probe is None and not hasattr(model, "disable_adapter")

    def attach(self, model: torch.nn.Module, adapter_dir: Path | None) -> tuple:
        return model, None

    def save_export(self, qm: Any, adapter_dir: Path, out_dir: Path, subdir: str) -> None:
        qm.module.save_pretrained(out_dir, safe_serialization=True)


@dataclass(frozen=True, eq=False)
class ProbeMethod(QueryMethod):
    """A head on the frozen model's hidden state (its `layer`) at the query's last token."""

    def recognizes(self, adapter_dir: Path | None) -> bool:
        return adapter_dir is not None and is_probe_dir(adapter_dir)

    def describes(self, model: torch.nn.Module, probe: torch.nn.Module | None) -> bool:
        return probe is not None

    def attach(self, model: torch.nn.Module, adapter_dir: Path | None) -> tuple:
        return model, load_probe(adapter_dir)

    def own_two_way_logits(
        self, qm: Any, queries: Sequence, pad_id: int, batch_size: int
    ) -> torch.Tensor:
        """The head on the query pass's hidden state and, when it reads them, the answer
        signals: from the same pass for follow-up queries (prompt + response is their prefix),
        else from an answer pass over each query's prompt + response."""
        layer, stats = qm.probe.layer, None
        if not qm.probe.answer_signals:
            features = query_features(qm.module, queries, pad_id, batch_size, layer)
        elif all(q.suffix_ids is not None for q in queries):
            features, stats = query_features_and_answer_stats(
                qm.module, queries, pad_id, batch_size, layer
            )
        elif any(not q.answer.input_ids for q in queries):
            raise ConfigError("this probe reads the answer signals: encode queries with_answer")
        else:
            features = query_features(qm.module, queries, pad_id, batch_size, layer)
            stats = answers_stats(qm.module, [q.answer for q in queries], pad_id, batch_size)
        return qm.probe.two_way(qm.probe.inputs(features, stats)).float()

    def confidences_from_signals(
        self, qm: Any, hidden: torch.Tensor, stats: torch.Tensor
    ) -> torch.Tensor:
        return qm.probe.two_way(qm.probe.inputs(hidden, stats)).detach()

    def save_export(self, qm: Any, adapter_dir: Path, out_dir: Path, subdir: str) -> None:
        qm.module.save_pretrained(out_dir, safe_serialization=True)
        (out_dir / subdir).mkdir()
        for name in (PROBE_WEIGHTS, PROBE_CONFIG):
            shutil.copy2(Path(adapter_dir) / name, out_dir / subdir / name)

    def config_errors(self, cfg: DictConfig, optim_defaults: dict) -> list[str]:
        """probe.fit=logistic uses no optim.* key; probe.fit=adamw trains at a constant
        learning rate (optim.scheduler and optim.warmup unused): a changed one is refused."""
        if cfg.probe.fit == "logistic":
            ignored = OPTIM_KEYS
            why = "fits its head by L-BFGS to convergence, so no optim.* key acts"
            hint = "probe.fit=adamw trains the head with optim.lr, betas, eps and weight_decay"
        else:
            ignored = ("scheduler", "warmup")
            why = "trains its head at a constant learning rate without warmup"
            hint = "a LoRA (method=lora or alora) follows optim.scheduler and optim.warmup"
        return [
            f"optim.{key}={_plain(cfg.optim[key])!r}: method=probe with probe.fit={cfg.probe.fit} "
            f"{why}; leave optim.{key} at its default ({_plain(optim_defaults[key])!r}) "
            f"({hint})"
            for key in ignored
            if _plain(cfg.optim[key]) != _plain(optim_defaults[key])
        ]


@dataclass(frozen=True, eq=False)
class ActivatedLoraMethod(QueryMethod):
    """A LoRA that acts only from its invocation tokens (the follow-up query's suffix) on."""

    def recognizes(self, adapter_dir: Path | None) -> bool:
        if not super().recognizes(adapter_dir):
            return False
        config = json.loads((Path(adapter_dir) / PEFT_CONFIG).read_text(encoding="utf-8"))
        return bool(config.get("alora_invocation_tokens"))

    def describes(self, model: torch.nn.Module, probe: torch.nn.Module | None) -> bool:
        return super().describes(model, probe) and alora_invocation_tokens(model) is not None

    def check_queries(self, qm: Any, tokenizer: PreTrainedTokenizerBase, suffix: str | None):
        """An activated LoRA only acts on its invocation tokens: the queries must end in them."""
        invocation = alora_invocation_tokens(qm.module)
        if invocation is None:
            return
        if qm.module.peft_config["default"].task_type != "CAUSAL_LM":
            raise ConfigError(
                "the adapter is an activated LoRA without task_type CAUSAL_LM in its "
                "adapter_config.json, so PEFT would never activate it: set task_type to CAUSAL_LM"
            )
        if suffix is None or encode_text(tokenizer, suffix) != invocation:
            raise ConfigError(
                "the adapter is an activated LoRA (method=alora) whose invocation tokens are not "
                "the suffix of these queries, so it would never act: evaluate a labeled set built "
                "with the same prompt (prompt.query_style=followup and the same followup_template)"
            )

    def save_export(self, qm: Any, adapter_dir: Path, out_dir: Path, subdir: str) -> None:
        """The adapter into `subdir`, then the base weights with PEFT's layers taken out
        (`unload`, in place: saved as they are, the base weights would carry PEFT's names)."""
        qm.module.save_pretrained(out_dir / subdir, safe_serialization=True)
        qm.module.unload().save_pretrained(out_dir, safe_serialization=True)


@dataclass(frozen=True, eq=False)
class ActivatedLoraHeadMethod(ActivatedLoraMethod):
    """An activated LoRA and a linear head on the query's hidden state (adapter on): the
    adapter dir holds both the PEFT adapter and the head's probe files."""

    def recognizes(self, adapter_dir: Path | None) -> bool:
        return super().recognizes(adapter_dir) and is_probe_dir(adapter_dir)

    def describes(self, model: torch.nn.Module, probe: torch.nn.Module | None) -> bool:
        return (
            probe is not None
            and hasattr(model, "disable_adapter")
            and alora_invocation_tokens(model) is not None
        )

    def attach(self, model: torch.nn.Module, adapter_dir: Path | None) -> tuple:
        peft_model, _ = super().attach(model, adapter_dir)
        return peft_model, load_probe(adapter_dir)

    def own_two_way_logits(
        self, qm: Any, queries: Sequence, pad_id: int, batch_size: int
    ) -> torch.Tensor:
        layer = qm.probe.layer
        features = followup_query_features(qm.module, qm.peft, queries, pad_id, batch_size, layer)
        device = next(qm.probe.parameters()).device
        return qm.probe.two_way(features.to(device)).detach().float().cpu()

    def save_export(self, qm: Any, adapter_dir: Path, out_dir: Path, subdir: str) -> None:
        super().save_export(qm, adapter_dir, out_dir, subdir)
        for name in (PROBE_WEIGHTS, PROBE_CONFIG):
            shutil.copy2(Path(adapter_dir) / name, out_dir / subdir / name)


def _plain(value: object) -> object:
    """A config value as plain Python (lists as lists of floats), for comparing with defaults."""
    if isinstance(value, str | bool) or value is None:
        return value
    if isinstance(value, int | float):
        return float(value)
    return [float(v) for v in value]


BASE = BaseMethod("base", tuned=False, exported="base model")
PROBE = ProbeMethod(
    "probe",
    unchanged_answers="a probe head reads the frozen model: the answers are the base model's",
    base_answer_tokens="a probe head leaves the LM untouched: tuned Full-ECE is the base figure",
    unmerged_export=True,
    exported="base model + probe head",
    config_prefixes=("probe.",),
)
LORA = QueryMethod(
    "lora",
    tuned_query_pass=True,
    tuned_full_ece=True,
    exported="merged model",
    config_prefixes=("lora.", "train.beta"),
)
ALORA = ActivatedLoraMethod(
    "alora",
    unchanged_answers=(
        "an activated LoRA is inactive on the answer prompt: the answers are the base model's"
    ),
    base_answer_tokens=(
        "an activated LoRA is inactive on prompt + response: tuned Full-ECE is the base figure"
    ),
    tuned_query_pass=True,
    activated=True,
    unmerged_export=True,
    exported="base model + aLoRA adapter",
    config_prefixes=("lora.",),
)
ALORA_HEAD = ActivatedLoraHeadMethod(
    "alora_head",
    unchanged_answers=ALORA.unchanged_answers,
    base_answer_tokens=ALORA.base_answer_tokens,
    tuned_query_pass=True,
    activated=True,
    adapter_head=True,
    unmerged_export=True,
    exported="base model + aLoRA adapter + head",
    config_prefixes=("lora.",),
)
# The registry, in the order the lookups try them: an aLoRA with a head is also an aLoRA and
# its dir a probe's; an aLoRA is also a PEFT LoRA.
METHODS: dict[str, QueryMethod] = {m.name: m for m in (ALORA_HEAD, PROBE, ALORA, LORA, BASE)}


def method_named(name: str) -> QueryMethod:
    """The method of a config's `method.name` (or an export's `adapter_kind`)."""
    if name not in METHODS:
        raise ConfigError(f"method={name!r}: choose one of {sorted(METHODS)}")
    return METHODS[name]


def method_of_model(model: torch.nn.Module, probe: torch.nn.Module | None = None) -> QueryMethod:
    """The method of a loaded model (with its PEFT adapter, or a probe head)."""
    return next(m for m in METHODS.values() if m.describes(model, probe))


def method_of_adapter(adapter_dir: str | Path | None) -> QueryMethod:
    """The method whose adapter `adapter_dir` holds (None: the base model); a directory no
    method recognises is tried as a PEFT adapter (PEFT then says what is missing)."""
    adapter_dir = None if adapter_dir is None else Path(adapter_dir)
    return next((m for m in METHODS.values() if m.recognizes(adapter_dir)), LORA)
