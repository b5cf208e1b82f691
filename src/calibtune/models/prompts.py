"""Answer prompts, shared by every stage (the uncertainty query is `calibtune.models.confidence`).

The answer prompt asks the model a question. It goes through the tokenizer's chat template when
`prompt.use_chat_template` is true and the tokenizer has one, else through a plain completion
format (few-shot for base models).
"""

from __future__ import annotations

import string
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

CHOICE_LETTERS = string.ascii_uppercase


def format_question(question: str, choices: Sequence[str] | None) -> str:
    """The question text, with lettered choices appended for multiple choice."""
    if not choices:
        return question
    lines = [f"{CHOICE_LETTERS[i]}. {choice}" for i, choice in enumerate(choices)]
    return question + "\n" + "\n".join(lines)


def uses_chat(tokenizer: PreTrainedTokenizerBase, prompt_cfg) -> bool:
    """Whether prompts go through the tokenizer's chat template."""
    return bool(prompt_cfg.use_chat_template) and bool(getattr(tokenizer, "chat_template", None))


def chat_messages(prompt_cfg, user_text: str) -> list[dict[str, str]]:
    """The configured system turn (if any) and one user turn."""
    messages = []
    if prompt_cfg.get("system"):
        messages.append({"role": "system", "content": prompt_cfg.system})
    return messages + [{"role": "user", "content": user_text}]


def render_user_turn(tokenizer: PreTrainedTokenizerBase, prompt_cfg, user_text: str) -> str:
    """Render one user turn (plus the configured system turn) ready for the assistant's reply."""
    if uses_chat(tokenizer, prompt_cfg):
        messages = chat_messages(prompt_cfg, user_text)
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prefix = prompt_cfg.get("completion_prefix") or ""
    return f"{prefix}Question: {user_text}\nAnswer:"


def render_answer_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt_cfg, question: str, choices: Sequence[str] | None
) -> str:
    """The prompt under which the model answers `question`."""
    user_text = prompt_cfg.answer_template.format(question=format_question(question, choices))
    return render_user_turn(tokenizer, prompt_cfg, user_text)
