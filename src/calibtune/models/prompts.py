"""Prompts and the uncertainty query, shared by every stage (DESIGN.md §1 step 3).

The answer prompt asks the model a question; the query prompt asks whether a proposed answer is
correct. Both go through the tokenizer's chat template when `prompt.use_chat_template` is true
and the tokenizer has one, else through a plain completion format (few-shot for base models).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from calibtune.errors import ConfigError

CHOICE_LETTERS = string.ascii_uppercase


def format_question(question: str, choices: Sequence[str] | None) -> str:
    """The question text, with lettered choices appended for multiple choice."""
    if not choices:
        return question
    lines = [f"{CHOICE_LETTERS[i]}. {choice}" for i, choice in enumerate(choices)]
    return question + "\n" + "\n".join(lines)


def _uses_chat(tokenizer: PreTrainedTokenizerBase, prompt_cfg) -> bool:
    return bool(prompt_cfg.use_chat_template) and bool(getattr(tokenizer, "chat_template", None))


def _chat_messages(prompt_cfg, user_text: str) -> list[dict[str, str]]:
    """The configured system turn (if any) and one user turn."""
    messages = []
    if prompt_cfg.get("system"):
        messages.append({"role": "system", "content": prompt_cfg.system})
    return messages + [{"role": "user", "content": user_text}]


def _render(tokenizer: PreTrainedTokenizerBase, prompt_cfg, user_text: str) -> str:
    """Render one user turn (plus the configured system turn) ready for the assistant's reply."""
    if _uses_chat(tokenizer, prompt_cfg):
        messages = _chat_messages(prompt_cfg, user_text)
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prefix = prompt_cfg.get("completion_prefix") or ""
    return f"{prefix}Question: {user_text}\nAnswer:"


def render_answer_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt_cfg, question: str, choices: Sequence[str] | None
) -> str:
    """The prompt under which the model answers `question`."""
    user_text = prompt_cfg.answer_template.format(question=format_question(question, choices))
    return _render(tokenizer, prompt_cfg, user_text)


def render_query_prompt(
    tokenizer: PreTrainedTokenizerBase,
    prompt_cfg,
    question: str,
    choices: Sequence[str] | None,
    answer: str,
) -> str:
    """The uncertainty query: question + proposed answer + 'Is the proposed answer correct?'.

    `prompt.query_style=followup` (the default) continues the answer conversation: the answer
    prompt, the answer as the assistant's turn, then `followup_template` as a new user turn. The
    rendered answer prompt + answer is then an exact prefix of the query, so one pass can serve
    both and an aLoRA adapter can reuse the base model's KV cache. `restate` puts question and
    answer into one user turn through `query_template`."""
    if prompt_cfg.get("query_style", "restate") == "followup":
        return _render_followup(tokenizer, prompt_cfg, question, choices, answer)
    user_text = prompt_cfg.query_template.format(
        question=format_question(question, choices), answer=answer.strip()
    )
    return _render(tokenizer, prompt_cfg, user_text)


def _render_followup(
    tokenizer: PreTrainedTokenizerBase,
    prompt_cfg,
    question: str,
    choices: Sequence[str] | None,
    answer: str,
) -> str:
    answer_prompt = render_answer_prompt(tokenizer, prompt_cfg, question, choices)
    followup = prompt_cfg.followup_template
    if not _uses_chat(tokenizer, prompt_cfg):
        return f"{answer_prompt}{answer}\n{followup}\nAnswer:"
    user_text = prompt_cfg.answer_template.format(question=format_question(question, choices))
    messages = _chat_messages(prompt_cfg, user_text) + [
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


def query_logits(next_token_logits: torch.Tensor, tokens: QueryTokens) -> torch.Tensor:
    """Two-way logits [no, yes] from next-token logits [..., vocab] (log-sum-exp over variants)."""
    no = torch.logsumexp(next_token_logits[..., list(tokens.no_ids)].float(), dim=-1)
    yes = torch.logsumexp(next_token_logits[..., list(tokens.yes_ids)].float(), dim=-1)
    return torch.stack([no, yes], dim=-1)


def query_confidence(next_token_logits: torch.Tensor, tokens: QueryTokens) -> torch.Tensor:
    """P(yes) / (P(yes) + P(no)) from next-token logits at the query's last position."""
    return torch.softmax(query_logits(next_token_logits, tokens), dim=-1)[..., 1]
