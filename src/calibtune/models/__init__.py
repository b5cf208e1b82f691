"""Shared model parts: loading (embedded default, local dirs, hub ids), answer prompts, the
uncertainty query (`calibtune.models.confidence`) and the methods that answer it, one object
each (`calibtune.models.methods`)."""

from calibtune.models.confidence import (
    QueryModel,
    QueryTokens,
    find_query_tokens,
    query_confidence,
    query_logits,
    render_query_prompt,
)
from calibtune.models.loading import load_model, load_tokenizer, model_fingerprint
from calibtune.models.prompts import render_answer_prompt

__all__ = [
    "QueryModel",
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
