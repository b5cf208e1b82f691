"""Graders (docs/data.md): does a free-text answer match the gold answers?

The default model answers in sentences ("The capital of France is Paris."), so the text graders
look for the gold answer inside the response, and reject a response that hedges between several
candidates ("Paris or Lyon", "either 12 or 13") or only echoes words of the question. The LLM judge
asks a local model through the same generation call as the data stage (`judge_grades`).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import get_args

from calibtune.errors import ConfigError
from calibtune.schema import Grader

GRADERS = get_args(Grader)  # the allowed values live in calibtune.schema
ARTICLES = {"a", "an", "the"}
HEDGE_WORDS = {"or", "either", "maybe", "perhaps", "possibly"}
NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
}
NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?")
LETTER = re.compile(r"(?<![A-Za-z])\(?([A-Z])(?:[).:]|(?![A-Za-z]))")


def normalize_words(text: str) -> list[str]:
    """Lowercase, accents and punctuation removed, articles dropped, split into words."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return [word for word in text.split() if word not in ARTICLES]


def count_phrase(words: Sequence[str], phrase: Sequence[str]) -> int:
    """How many times `phrase` occurs in `words` as a run of whole words."""
    n = len(phrase)
    if n == 0:
        return 0
    return sum(1 for i in range(len(words) - n + 1) if list(words[i : i + n]) == list(phrase))


def is_hedged(response_words: Sequence[str], context_words: Sequence[str]) -> bool:
    """True when the response offers alternatives ("or", "either", "maybe") the context lacks."""
    return any(word in HEDGE_WORDS and word not in context_words for word in response_words)


def exact_match(response: str, answers: Sequence[str], question: str = "") -> bool:
    """Normalized exact match with aliases, also inside a sentence, but not in a hedge and not
    only where the response echoes the question (the alias must occur more often than there)."""
    words = normalize_words(response)
    question_words = normalize_words(question)
    aliases = [normalize_words(a) for a in answers if normalize_words(a)]
    if any(words == alias for alias in aliases):
        return True
    if is_hedged(words, question_words + [w for a in aliases for w in a]):
        return False
    return any(count_phrase(words, a) > count_phrase(question_words, a) for a in aliases)


def substring_match(response: str, answers: Sequence[str]) -> bool:
    """Loose: any normalized alias occurs anywhere in the normalized response."""
    text = " ".join(normalize_words(response))
    return any(" ".join(normalize_words(a)) in text for a in answers if normalize_words(a))


def parse_numbers(text: str) -> list[float]:
    """Every number in the text, digits ("1,234", "-3.5") and small number words ("twelve")."""
    found = [float(m.replace(",", "")) for m in NUMBER.findall(text)]
    found += [float(NUMBER_WORDS[w]) for w in normalize_words(text) if w in NUMBER_WORDS]
    return found


def numeric_match(response: str, answers: Sequence[str], question: str = "") -> bool:
    """The response states exactly one number beyond those in the question, and it is a gold one."""
    gold = set()
    for answer in answers:
        gold.update(parse_numbers(str(answer)))
    if not gold:
        raise ConfigError(f"numeric grader: gold answers {list(answers)!r} hold no number")
    new = Counter(parse_numbers(response)) - Counter(parse_numbers(question))
    if is_hedged(normalize_words(response), normalize_words(question)):
        return False
    return len(new) == 1 and next(iter(new)) in gold


def choice_letter(response: str, choices: Sequence[str]) -> str | None:
    """The single choice letter the response picks (by letter, else by choice text), or None."""
    letters = {chr(ord("A") + i) for i in range(len(choices))}
    named = {m for m in LETTER.findall(response) if m in letters}
    if len(named) == 1:
        return named.pop()
    if named:
        return None
    words = normalize_words(response)
    by_text = {
        chr(ord("A") + i)
        for i, choice in enumerate(choices)
        if normalize_words(choice) and count_phrase(words, normalize_words(choice)) > 0
    }
    return by_text.pop() if len(by_text) == 1 else None


def choice_match(response: str, answers: Sequence[str], choices: Sequence[str] | None) -> bool:
    """Multiple choice: the one letter the response picks is a gold letter."""
    if not choices:
        raise ConfigError("the 'choice' grader needs questions with `choices`")
    picked = choice_letter(response, choices)
    return picked is not None and picked in {a.strip().upper() for a in answers}


def grade(
    response: str,
    answers: Sequence[str],
    choices: Sequence[str] | None,
    grader: str,
    question: str = "",
) -> bool:
    """Is `response` correct? grader: exact | numeric | choice | substring (judge: judge_grades)."""
    if grader == "exact":
        return exact_match(response, answers, question)
    if grader == "numeric":
        return numeric_match(response, answers, question)
    if grader == "choice":
        return choice_match(response, answers, choices)
    if grader == "substring":
        return substring_match(response, answers)
    if grader == "judge":
        raise ConfigError("the 'judge' grader needs a model: call judge_grades(...) instead")
    raise ConfigError(f"unknown grader {grader!r}; choose one of {', '.join(GRADERS)}")


def auto_grader(row: dict) -> str:
    """The grader a QA row asks for: its own `grader` key, else choice for MC, else exact."""
    if row.get("grader"):
        return str(row["grader"])
    return "choice" if row.get("choices") else "exact"


JUDGE_TEMPLATE = (
    "Question: {question}\nGold answer(s): {answers}\nProposed answer: {response}\n"
    "Does the proposed answer give the gold answer? Reply yes or no."
)


def judge_grades(
    model, tokenizer, prompt_cfg, rows: Sequence[dict], *, batch_size: int = 32
) -> list[bool]:
    """LLM judge: a local model reads question, gold answers and response and says yes or no."""
    from calibtune.data.generation import generate_answers
    from calibtune.models.prompts import render_user_turn

    prompts = [
        render_user_turn(
            tokenizer,
            prompt_cfg,
            JUDGE_TEMPLATE.format(
                question=row["question"],
                answers=" | ".join(row["answers"]),
                response=row["response"],
            ),
        )
        for row in rows
    ]
    replies = generate_answers(
        model, tokenizer, prompts, max_new_tokens=3, batch_size=batch_size, stop_strings=["\n"]
    )
    return [normalize_words(r[0])[:1] == ["yes"] for r in replies]
