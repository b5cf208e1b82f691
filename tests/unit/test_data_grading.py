"""Graders against hand-checked responses (the default model answers in sentences)."""

from __future__ import annotations

import pytest

from calibtune.data.grading import choice_letter, grade, normalize_words
from calibtune.errors import ConfigError


def test_normalize_drops_case_accents_punctuation_articles():
    assert normalize_words("The Café, São Tomé!") == ["cafe", "sao", "tome"]


@pytest.mark.parametrize(
    ("response", "answers", "question", "correct"),
    [
        ("Paris", ["Paris"], "What is the capital of France?", True),
        ("The capital of France is Paris.", ["Paris"], "What is the capital of France?", True),
        ("It is Paris or Lyon.", ["Paris"], "What is the capital of France?", False),
        ("Either Paris, or maybe Lyon", ["Paris"], "What is the capital of France?", False),
        ("The capital of France is Lyon.", ["Paris"], "What is the capital of France?", False),
        ("Parisian cafés", ["Paris"], "What is the capital of France?", False),
        ("Sao Tome", ["São Tomé"], "What is the capital of Sao Tome and Principe?", True),
        (
            "The capital of Luxembourg is Brussels.",
            ["Luxembourg"],
            "What is the capital of Luxembourg?",
            False,
        ),
        (
            "Luxembourg City is the capital of Luxembourg.",
            ["Luxembourg"],
            "What is the capital of Luxembourg?",
            True,
        ),
        (
            "The chemical symbol of gold is Au.",
            ["Au"],
            "What is the chemical symbol of Gold?",
            True,
        ),
        (
            "It is located in the United Kingdom.",
            ["UK", "United Kingdom"],
            "Which country is Leeds in?",
            True,
        ),
        ("The US dollar", ["Euro", "EUR"], "What is the currency of France?", False),
    ],
)
def test_exact_match(response, answers, question, correct):
    assert grade(response, answers, None, "exact", question) is correct


@pytest.mark.parametrize(
    ("response", "answers", "question", "correct"),
    [
        ("12", ["12"], "What is 7 + 5?", True),
        ("7 + 5 = 12", ["12"], "7 + 5 =", True),
        ("The answer is twelve.", ["12"], "What is 7 + 5?", True),
        ("7 + 5 = 13", ["12"], "7 + 5 =", False),
        ("It is 12 or 13.", ["12"], "What is 7 + 5?", False),
        ("10 + 2 = 12", ["12"], "What is 7 + 5?", False),  # several candidate numbers
        ("The product is 1,081.", ["1081"], "What is 23 * 47?", True),
        ("To solve this we need to add", ["12"], "What is 7 + 5?", False),
        ("The atomic number of carbon is 6.", ["6"], "What is the atomic number of Carbon?", True),
    ],
)
def test_numeric_match(response, answers, question, correct):
    assert grade(response, answers, None, "numeric", question) is correct


@pytest.mark.parametrize(
    ("response", "picked"),
    [
        ("B", "B"),
        ("(C)", "C"),
        ("The answer is A.", "A"),
        ("A or B", None),
        ("Mercury", "B"),  # by choice text
        ("I think it is D: Mars", "D"),
        ("no idea", None),
    ],
)
def test_choice_letter(response, picked):
    assert choice_letter(response, ["Venus", "Mercury", "Earth", "Mars"]) == picked


def test_choice_and_substring_graders():
    choices = ["Venus", "Mercury", "Earth", "Mars"]
    assert grade("The answer is B.", ["B"], choices, "choice") is True
    assert grade("The answer is C.", ["B"], choices, "choice") is False
    assert grade("paris or lyon", ["Paris"], None, "substring") is True
    with pytest.raises(ConfigError, match="choices"):
        grade("A", ["A"], None, "choice")
    with pytest.raises(ConfigError, match="unknown grader"):
        grade("A", ["A"], None, "fuzzy")
