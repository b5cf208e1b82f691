"""Batched generation: length-sorted batches, stop strings, and batched == one at a time."""

from __future__ import annotations

import pytest

from calibtune.config import conf_dir
from calibtune.data.generation import cut_at_stop, generate_answers, length_sorted_batches
from calibtune.models import load_model, load_tokenizer, render_answer_prompt


def test_length_sorted_batches_cover_every_index_once():
    batches = length_sorted_batches([3, 9, 1, 9, 5], batch_size=2)
    assert batches == [[1, 3], [4, 0], [2]]


def test_cut_at_stop():
    assert cut_at_stop(" Paris.\nQuestion: next", ["\n", "Question:"]) == "Paris."
    assert cut_at_stop("Paris", []) == "Paris"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from omegaconf import OmegaConf

    model_cfg = OmegaConf.create(
        {
            "name_or_path": str(tiny_model_dir),
            "device": "cpu",
            "dtype": "float32",
            "attn_implementation": "eager",
            "trust_remote_code": False,
            "revision": None,
        }
    )
    prompt_cfg = OmegaConf.load(conf_dir() / "common.yaml").prompt
    return load_model(model_cfg), load_tokenizer(model_cfg), prompt_cfg


def test_batched_greedy_equals_one_at_a_time(tiny):
    model, tokenizer, prompt_cfg = tiny
    questions = ["What is the capital of France?", "2 + 2 =", "Which element has the symbol Au?"]
    prompts = [render_answer_prompt(tokenizer, prompt_cfg, q, None) for q in questions]
    batched = generate_answers(model, tokenizer, prompts, max_new_tokens=6, batch_size=3)
    single = [
        generate_answers(model, tokenizer, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts
    ]
    assert batched == single
    assert all(len(answers) == 1 for answers in batched)


def test_sampling_gives_k_seeded_samples(tiny):
    model, tokenizer, prompt_cfg = tiny
    prompts = [render_answer_prompt(tokenizer, prompt_cfg, "What is the capital of Peru?", None)]
    kwargs = {"max_new_tokens": 6, "batch_size": 4, "num_samples": 4, "temperature": 1.0}
    first = generate_answers(model, tokenizer, prompts, seed=3, **kwargs)
    assert len(first[0]) == 4
    assert generate_answers(model, tokenizer, prompts, seed=3, **kwargs) == first
    assert len(set(first[0])) > 1  # a random tiny model at temperature 1 does not repeat itself
