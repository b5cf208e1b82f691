"""Shared model parts: loading (embedded default, local dirs, hub ids), prompts, query tokens."""

from calibtune.models.loading import load_model, load_tokenizer, model_fingerprint
from calibtune.models.prompts import (
    QueryTokens,
    find_query_tokens,
    query_confidence,
    query_logits,
    render_answer_prompt,
    render_query_prompt,
)

__all__ = [
    "QueryTokens",
    "find_query_tokens",
    "load_model",
    "load_tokenizer",
    "model_fingerprint",
    "query_confidence",
    "query_logits",
    "render_answer_prompt",
    "render_query_prompt",
]
