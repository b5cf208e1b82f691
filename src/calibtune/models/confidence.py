"""The uncertainty query, in one place: how it is rendered, the follow-up suffix it shares with
the answer, the yes/no tokens, and P(yes) / (P(yes) + P(no)) for a base, LoRA, activated-LoRA
(aLoRA) or probe model, with or without a prefix KV cache.

Train validation, the eval stage and `calibtune.Scorer` all compute confidences with
`query_two_way_logits` (or, in eval, `followup_batches`, which runs the same per-batch passes
and also returns the answer-token logits), so the same model, rows and batch size give
bit-identical numbers in every stage.

How a model answers the query is its `QueryModel.method` (`calibtune.models.methods`), found
by `QueryModel.of` (loaded models: a PEFT config with `alora_invocation_tokens` is an aLoRA) or
given by the train stage (`QueryModel.training`: method=alora trains a plain LoRA whose saved
config gets those tokens). The passes ask the method, never its name:

- the LM's yes/no logits: one forward over the whole query (for a follow-up query, one pass over
  prompt + response + suffix, which also yields the answer-token logits); an `activated` method
  (aLoRA) runs the base model over prompt + response (a KV cache), then the adapter over the
  suffix.
- a method with its own reading (`own_two_way_logits`: the probe's head on the frozen model's
  hidden state at the query's last token) gives its logits itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from calibtune.errors import ConfigError
from calibtune.models.encoding import (
    EncodedAnswer,
    collate_followup,
    common_suffix_ids,
    encode_answer,
    encode_text,
    followup_full_pass,
    followup_prefix_pass,
    followup_suffix_logits,
    last_token_logits,
    length_sorted_batches,
    pad_sequences,
)
from calibtune.models.methods import QueryMethod, method_of_adapter, method_of_model
from calibtune.models.prompts import (
    chat_messages,
    format_question,
    render_user_turn,
    uses_chat,
)

# ---------------------------------------------------------------------------- rendering


def render_query_prompt(
    tokenizer: PreTrainedTokenizerBase,
    prompt_cfg,
    question: str,
    choices: Sequence[str] | None,
    answer: str,
) -> str:
    """The uncertainty query: question + proposed answer + 'Is the proposed answer correct?'.

    `prompt.query_style=followup` continues the answer conversation: the answer prompt, the
    answer as the assistant's turn, then `followup_template` as a new user turn. The rendered
    answer prompt + answer is then an exact prefix of the query, so one pass can serve both and
    an aLoRA adapter can reuse the base model's KV cache. `restate` puts question and answer
    into one user turn through `query_template`."""
    if prompt_cfg.query_style == "followup":
        question_turn = prompt_cfg.answer_template.format(
            question=format_question(question, choices)
        )
        return _render_followup(tokenizer, prompt_cfg, question_turn, answer)
    user_text = prompt_cfg.query_template.format(
        question=format_question(question, choices), answer=answer.strip()
    )
    return render_user_turn(tokenizer, prompt_cfg, user_text)


def _render_followup(
    tokenizer: PreTrainedTokenizerBase, prompt_cfg, question_turn: str, answer: str
) -> str:
    """Answer prompt (the rendered `question_turn`) + answer + the follow-up user turn."""
    answer_prompt = render_user_turn(tokenizer, prompt_cfg, question_turn)
    followup = prompt_cfg.followup_template
    if not uses_chat(tokenizer, prompt_cfg):
        return f"{answer_prompt}{answer}\n{followup}\nAnswer:"
    messages = chat_messages(prompt_cfg, question_turn) + [
        {"role": "assistant", "content": answer},
        {"role": "user", "content": followup},
    ]
    query = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not query.startswith(answer_prompt + answer):
        raise ConfigError(
            "prompt.query_style=followup: this chat template does not render the answer prompt "
            "+ answer as the start of the follow-up conversation; use prompt.query_style=restate"
        )
    return query


def query_suffix(prompt: str, response: str, query: str) -> str | None:
    """The text the query adds after prompt + response (a follow-up query), else None."""
    head = prompt + response
    return query[len(head) :] if query.startswith(head) and len(query) > len(head) else None


def shared_suffix(rows: Sequence[dict]) -> str | None:
    """The suffix every row's query adds to its prompt + response (follow-up queries), else None."""
    suffixes = {query_suffix(r["prompt"], r["response"], r["query"]) for r in rows}
    return suffixes.pop() if len(suffixes) == 1 else None


# ---------------------------------------------------------------------------- yes / no tokens


@dataclass(frozen=True)
class QueryTokens:
    """Token ids that spell the answers to the uncertainty query (all single-token variants)."""

    yes_ids: tuple[int, ...]
    no_ids: tuple[int, ...]


def _single_token_variants(tokenizer: PreTrainedTokenizerBase, word: str) -> list[int]:
    variants = dict.fromkeys([word, " " + word, word.capitalize(), " " + word.capitalize()])
    ids = []
    for variant in variants:
        encoded = tokenizer.encode(variant, add_special_tokens=False)
        if len(encoded) == 1 and encoded[0] not in ids:
            ids.append(encoded[0])
    return ids


def find_query_tokens(
    tokenizer: PreTrainedTokenizerBase, yes: str = "yes", no: str = "no"
) -> QueryTokens:
    """Look up the yes/no answer tokens (leading-space and capitalised variants included).

    Fails when the word itself (or its leading-space form) is not a single token."""
    found = {}
    for key, word in (("yes", yes), ("no", no)):
        ids = _single_token_variants(tokenizer, word)
        core = [tokenizer.encode(w, add_special_tokens=False) for w in (word, " " + word)]
        if not any(len(c) == 1 for c in core):
            raise ConfigError(
                f"query answer {word!r} is not a single token for this tokenizer "
                f"(it encodes to {core[0]}); set prompt.query_{key} to a word that is"
            )
        found[key] = tuple(ids)
    if set(found["yes"]) & set(found["no"]):
        raise ConfigError(f"query answers {yes!r} and {no!r} share a token; choose distinct words")
    return QueryTokens(yes_ids=found["yes"], no_ids=found["no"])


def query_tokens_of(tokenizer: PreTrainedTokenizerBase, prompt_cfg) -> QueryTokens:
    """The yes/no tokens of `prompt.query_yes` / `prompt.query_no`."""
    return find_query_tokens(tokenizer, prompt_cfg.query_yes, prompt_cfg.query_no)


def query_logits(next_token_logits: torch.Tensor, tokens: QueryTokens) -> torch.Tensor:
    """Two-way logits [no, yes] from next-token logits [..., vocab] (log-sum-exp over variants)."""
    no = torch.logsumexp(next_token_logits[..., list(tokens.no_ids)].float(), dim=-1)
    yes = torch.logsumexp(next_token_logits[..., list(tokens.yes_ids)].float(), dim=-1)
    return torch.stack([no, yes], dim=-1)


def yes_probability(two_way: torch.Tensor) -> torch.Tensor:
    """P(yes) / (P(yes) + P(no)) from two-way [no, yes] logits (float32 softmax)."""
    return torch.softmax(two_way.float(), dim=-1)[..., 1]


def query_confidence(next_token_logits: torch.Tensor, tokens: QueryTokens) -> torch.Tensor:
    """P(yes) / (P(yes) + P(no)) from next-token logits at the query's last position."""
    return yes_probability(query_logits(next_token_logits, tokens))


def confidences(two_way: torch.Tensor) -> np.ndarray:
    """The confidences of two-way logits [N, 2] as float64 numpy (what stages report)."""
    return yes_probability(two_way.cpu()).double().numpy()


# ---------------------------------------------------------------------------- encoded queries


class EncodedQueryLike(Protocol):
    """What the confidence passes read of a query (train's `TrainExample` is one too)."""

    query_ids: list[int]
    answer: EncodedAnswer
    suffix_ids: tuple[int, ...] | None


@dataclass(frozen=True)
class EncodedQuery:
    """Token ids of one uncertainty query. A follow-up query has `suffix_ids`, `answer` holds
    prompt + response and query_ids = answer.input_ids + suffix_ids; otherwise `answer` is
    filled only on request."""

    query_ids: list[int]
    answer: EncodedAnswer
    suffix_ids: tuple[int, ...] | None = None


def encode_query(
    tokenizer: PreTrainedTokenizerBase, row: dict, with_answer: bool = False
) -> EncodedQuery:
    """Encode a row's query (`prompt`, `response`, `query`); a follow-up query as prompt +
    response + suffix, so its prefix is token-identical to the answer pass."""
    suffix = query_suffix(row["prompt"], row["response"], row["query"])
    if suffix is not None:
        answer = encode_answer(tokenizer, row["prompt"], row["response"])
        suffix_ids = tuple(encode_text(tokenizer, suffix))
        return EncodedQuery(answer.input_ids + list(suffix_ids), answer, suffix_ids)
    answer = EncodedAnswer(input_ids=[], answer_start=0)
    if with_answer:
        answer = encode_answer(tokenizer, row["prompt"], row["response"])
    return EncodedQuery(encode_text(tokenizer, row["query"]), answer)


# ---------------------------------------------------------------------------- models


@dataclass(frozen=True)
class QueryModel:
    """A model that answers the uncertainty query, and its `method` (base, lora, alora, probe).

    `module` runs the tuned side (in training a DDP/FSDP wrapper of `peft`); `peft` owns
    `disable_adapter()` (the base side); `probe` is a probe method's head."""

    module: torch.nn.Module
    method: QueryMethod
    peft: torch.nn.Module | None = None
    probe: torch.nn.Module | None = None

    @classmethod
    def of(cls, model: torch.nn.Module, probe: torch.nn.Module | None = None) -> QueryModel:
        """The query model of a loaded model (with its PEFT adapter, or a probe head)."""
        peft = model if hasattr(model, "disable_adapter") else None
        return cls(model, method_of_model(model, probe), peft=peft, probe=probe)

    @classmethod
    def training(
        cls,
        module: torch.nn.Module,
        peft_model: torch.nn.Module,
        method: QueryMethod,
        head: torch.nn.Module | None = None,
    ) -> QueryModel:
        """The train stage's model: an `activated` method (method=alora) trains the adapter as
        a plain LoRA that only ever runs on the query suffix, saved with its invocation tokens;
        `head`: the head trained beside it (method=alora_head)."""
        return cls(module, method, peft=peft_model, probe=head)

    def base_mode(self) -> contextlib.AbstractContextManager:
        """Context in which the model runs as the base model (adapter disabled), if it has one."""
        return self.peft.disable_adapter() if self.peft is not None else contextlib.nullcontext()

    def check_queries(self, tokenizer: PreTrainedTokenizerBase, suffix: str | None) -> None:
        """Fail when the method cannot score these queries (an aLoRA whose invocation tokens
        are not their suffix)."""
        self.method.check_queries(self, tokenizer, suffix)


# ---------------------------------------------------------------------------- P(yes)


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


def query_batches(queries: Sequence[EncodedQueryLike], batch_size: int) -> list[list[int]]:
    """Query indices in batches of similar length (longest first, ties by index)."""
    return length_sorted_batches([len(q.query_ids) for q in queries], batch_size)


def followup_batches(
    queries: Sequence[EncodedQueryLike], suffix_ids: Sequence[int], pad_id: int, batch_size: int
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """(indices, collated follow-up batch on CPU) in `query_batches` order."""
    for batch in query_batches(queries, batch_size):
        yield batch, collate_followup([queries[i].answer for i in batch], suffix_ids, pad_id)


def followup_query_logits(
    qm: QueryModel, collated: dict[str, torch.Tensor], *, base: bool, cache=None
) -> tuple[torch.Tensor, tuple | None]:
    """Next-token logits [B, V] after a follow-up batch's suffix, and the answer-token logits
    when the pass computed them. base and an activated method (aLoRA): the suffix over the base
    model's KV cache of prompt + response (`cache`, made here when None); otherwise one pass
    over the whole query."""
    if base or qm.method.activated:
        if cache is None:
            with qm.base_mode():
                owner = qm.peft if qm.peft is not None else qm.module
                _, cache = followup_prefix_pass(owner, collated, answer_logits=False)
        with qm.base_mode() if base else contextlib.nullcontext():
            return followup_suffix_logits(qm.module, collated, cache), None
    last, answer = followup_full_pass(qm.module, collated)
    return last, answer


@torch.no_grad()
def query_two_way_logits(
    qm: QueryModel,
    queries: Sequence[EncodedQueryLike],
    tokens: QueryTokens,
    pad_id: int,
    batch_size: int,
    *,
    base: bool = False,
    progress=None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Two-way [no, yes] logits [N, 2] (float32, CPU, input order) of each query under the
    tuned model (`base`: adapter disabled). `progress` wraps the batch iterator (a bar);
    `device`: where batches go (default: the model's first parameter's)."""
    own = None if base else qm.method.own_two_way_logits(qm, queries, pad_id, batch_size)
    if own is not None:
        return own
    logits = torch.empty(len(queries), 2)
    device = device or _device(qm.module)
    suffix_ids = common_suffix_ids(queries)
    if suffix_ids is not None:
        batches = followup_batches(queries, suffix_ids, pad_id, batch_size)
        for batch, collated in _wrap(batches, progress):
            last, _ = followup_query_logits(qm, _to_device(collated, device), base=base)
            logits[batch] = query_logits(last, tokens).cpu()
        return logits
    if qm.method.activated and not base:
        raise ConfigError("an activated LoRA needs follow-up queries that share one suffix")
    for batch in _wrap(query_batches(queries, batch_size), progress):
        padded = pad_sequences([queries[i].query_ids for i in batch], pad_id, side="left")
        with qm.base_mode() if base else contextlib.nullcontext():
            last = last_token_logits(qm.module, _to_device(padded, device))
        logits[batch] = query_logits(last, tokens).cpu()
    return logits


def _wrap(iterable, progress):
    """`progress(iterable)` when a progress wrapper is given."""
    return progress(iterable) if progress is not None else iterable


def attach_adapter(model: torch.nn.Module, adapter_dir: str | Path | None) -> QueryModel:
    """`model` with the adapter saved in `adapter_dir` (a PEFT LoRA / aLoRA, or a probe head;
    None: the base model) as a query model, in eval mode."""
    module, probe = method_of_adapter(adapter_dir).attach(model.eval(), adapter_dir)
    return QueryModel.of(module, probe)
