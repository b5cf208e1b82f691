"""Graders (docs/data.md): does a free-text answer match the gold answers?

The default model answers in sentences ("The capital of France is Paris."), so the text graders
look for the gold answer inside the response, and reject a response that offers two different
answers ("Paris or Lyon", "12 or 13", "Indonesia, Malaysia") or only echoes words of the
question. `country` finds every country a response names, longest name first (so "South Sudan"
is not "Sudan" and "Guinea-Bissau" not "Guinea"); `symbol` matches chemical symbols
case-sensitively as symbols ("In" the symbol, not "in" the word). The LLM judge asks a local
model through the same generation call as the data stage (`judge_grades`).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import get_args

from calibtune.errors import ConfigError
from calibtune.schema import Grader

GRADERS = get_args(Grader)  # the allowed values live in calibtune.schema
ARTICLES = {"a", "an", "the"}
# Words that join alternative answers, and words that carry no answer inside an alternative.
ALTERNATIVE_WORDS = {"or", "either"}
FILLER_WORDS = {"maybe", "perhaps", "possibly", "probably", "it", "is", "also", "known", "as"}
FILLER_WORDS |= {"called", "simply", "just", "i", "think", "not", "sure", "but", "s", "which"}
# Words that may stand between two names of a list of alternatives ("Ghana, or maybe Togo").
LIST_WORDS = {"or", "and", "either", "in", "maybe", "perhaps", "possibly"}
# Element symbols that are also English words: read as words when a lower-case word follows.
ENGLISH_WORD_SYMBOLS = {"I", "In", "As", "Be", "He", "No", "At", "Am"}
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


def offers_other_answer(
    words: Sequence[str], aliases: Sequence[Sequence[str]], context_words: Sequence[str]
) -> bool:
    """True when an "or"/"either" the context lacks joins an alternative that names none of the
    aliases ("Paris or Lyon", "Paris, or maybe Lyon"); "yen, or JPY" names one answer twice."""
    joiners = [i for i, w in enumerate(words) if w in ALTERNATIVE_WORDS and w not in context_words]
    if not joiners:
        return False
    bounds = [-1, *joiners, len(words)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        segment = list(words[start + 1 : end])
        content = [w for w in segment if w not in context_words and w not in FILLER_WORDS]
        if content and not any(count_phrase(segment, a) for a in aliases):
            return True
    return False


def exact_match(response: str, answers: Sequence[str], question: str = "") -> bool:
    """Normalized exact match with aliases, also inside a sentence, but not when the response
    offers another answer beside it and not only where the response echoes the question (the
    alias must occur more often than there)."""
    words = normalize_words(response)
    question_words = normalize_words(question)
    aliases = [normalize_words(a) for a in answers if normalize_words(a)]
    if any(words == alias for alias in aliases):
        return True
    if offers_other_answer(words, aliases, question_words):
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
    return len(new) == 1 and next(iter(new)) in gold


# --- entity graders: every answer of a kind the response names, gold or not --------------------


@dataclass(frozen=True)
class Lexicon:
    """Names of the entities of one kind: normalized word runs (and case-exact runs for
    acronyms such as "USA") to an entity id; id "" marks a name that is no answer (a blocker
    such as "East China Sea" or a city name) but still hides the shorter names inside it."""

    phrases: dict[tuple[str, ...], str]
    acronyms: dict[tuple[str, ...], str]
    longest: int


def make_lexicon(names: dict[str, Sequence[str]], blockers: Sequence[str] = ()) -> Lexicon:
    """A Lexicon from entity id -> names, plus blocker names (entity names win over blockers)."""
    phrases: dict[tuple[str, ...], str] = {}
    acronyms: dict[tuple[str, ...], str] = {}
    for name in blockers:
        if normalize_words(name):
            phrases.setdefault(tuple(normalize_words(name)), "")
    for entity, aliases in names.items():
        for alias in aliases:
            letters = re.sub(r"[^A-Za-z]", "", alias)
            if letters and letters.isupper() and len(letters) <= 4:
                acronyms[tuple(raw_words(alias))] = entity
            elif normalize_words(alias):
                phrases[tuple(normalize_words(alias))] = entity
    longest = max(len(p) for p in [*phrases, *acronyms]) if phrases or acronyms else 0
    return Lexicon(phrases, acronyms, longest)


def raw_words(text: str) -> list[str]:
    """Words as `normalize_words` splits them, case kept and articles dropped."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return [w for w in re.sub(r"[^\w\s]", " ", text).split() if w.lower() not in ARTICLES]


def find_mentions(text: str, lexicon: Lexicon) -> list[tuple[str, int, int]]:
    """(entity, first word, end word) of each name in the text, read left to right taking the
    longest name at each word (blockers are consumed and not listed)."""
    raw = raw_words(text)
    words = [w.lower() for w in raw]
    found = []
    i = 0
    while i < len(words):
        for length in range(min(lexicon.longest, len(words) - i), 0, -1):
            entity = lexicon.acronyms.get(tuple(raw[i : i + length]))
            if entity is None:
                entity = lexicon.phrases.get(tuple(words[i : i + length]))
            if entity is not None:
                if entity:
                    found.append((entity, i, i + length))
                i += length
                break
        else:
            i += 1
    return found


def entity_match(response: str, answers: Sequence[str], question: str, lexicon: Lexicon) -> bool:
    """The first entity the response names beyond the question's is the gold one, and no other
    entity stands beside a gold mention as an alternative ("Indonesia, Malaysia", "Ghana or
    Togo"); an entity named elsewhere ("Denmark ..., bordering Norway") is no alternative.
    A response that is just an answer is right; answers the lexicon does not know fall back to
    `exact_match`."""
    if normalize_words(response) in [normalize_words(a) for a in answers]:
        return True
    gold = {entity for answer in answers for entity, _, _ in find_mentions(answer, lexicon)}
    if not gold:
        return exact_match(response, answers, question)
    echoed = Counter(entity for entity, _, _ in find_mentions(question, lexicon))
    new = []
    for mention in find_mentions(response, lexicon):
        if echoed[mention[0]] > 0:
            echoed[mention[0]] -= 1
        else:
            new.append(mention)
    if not new or new[0][0] not in gold:
        return False
    words = normalize_words(response)
    for before, after in zip(new, new[1:], strict=False):
        between = set(words[before[2] : after[1]])
        if (before[0] in gold) != (after[0] in gold) and between <= LIST_WORDS:
            return False
    return True


@cache
def entity_lexicon(kind: str) -> Lexicon:
    """The lexicon of an entity grader: `country` (every country's names and '<demonym>
    city/state ...'; cities and seas as blockers) or `continent` (continents, their adjectives
    and 'the Americas' / 'Eurasia'; country names as blockers)."""
    from calibtune.data.builtin import continent_names, country_names, place_names

    if kind == "country":
        return make_lexicon(country_names(), place_names())
    countries = [name for names in country_names().values() for name in names]
    return make_lexicon(continent_names(), countries)


SYMBOL = re.compile(r"(?<![\w'’])([A-Z][a-z]?)(?![\w'’])")


def symbol_mentions(text: str, symbols: frozenset[str]) -> Counter:
    """Chemical symbols in the text, case-exact and standing alone ("Fe", not "fe" or "Fe2"),
    except English words used as words ("In the table", "I think", "He is")."""
    found: Counter = Counter()
    for match in SYMBOL.finditer(text):
        token = match.group(1)
        if token not in symbols:
            continue
        if token in ENGLISH_WORD_SYMBOLS and re.match(r"\s+[a-z]", text[match.end() :]):
            continue
        found[token] += 1
    return found


def symbol_match(response: str, answers: Sequence[str], question: str = "") -> bool:
    """The response names exactly one chemical symbol beyond the question's, a gold one."""
    from calibtune.data.builtin import element_symbols

    symbols = element_symbols() | frozenset(answers)
    new = set(symbol_mentions(response, symbols) - symbol_mentions(question, symbols))
    return len(new) == 1 and new <= set(answers)


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
    """Is `response` correct? grader: exact | numeric | choice | substring | country | continent
    | symbol (judge: judge_grades)."""
    if grader == "exact":
        return exact_match(response, answers, question)
    if grader == "numeric":
        return numeric_match(response, answers, question)
    if grader == "choice":
        return choice_match(response, answers, choices)
    if grader == "substring":
        return substring_match(response, answers)
    if grader in ("country", "continent"):
        return entity_match(response, answers, question, entity_lexicon(grader))
    if grader == "symbol":
        return symbol_match(response, answers, question)
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
