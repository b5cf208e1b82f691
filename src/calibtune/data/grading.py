"""Graders (docs/data.md): does a free-text answer match the gold answers?

The default model answers in sentences ("The capital of France is Paris."), so the text graders
look for the gold answer inside the response, and reject a response that offers two different
answers ("Paris or Lyon", "12 or 13", "Indonesia, Malaysia") or only echoes words of the
question. `country` finds every country a response names, longest name first (so "South Sudan"
is not "Sudan" and "Guinea-Bissau" not "Guinea"); `symbol` matches chemical symbols
case-sensitively as symbols ("In" the symbol, not "in" the word). `weekday` and `month` read
day and month names the way `country` reads countries; `letter`, `roman` and `spelled_number`
find the single letters, Roman numerals and numbers written in words that a response states.
The names the entity graders read live in the leaf module `calibtune.data.lexicons`.
The LLM judge asks a local model through the same generation call as the data stage
(`judge_grades`).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import get_args

from calibtune.data.lexicons import (
    MONTH_NAMES,
    SMALL_NUMBER_NAMES,
    TENS_NAMES,
    WEEKDAY_NAMES,
    continent_names,
    country_names,
    element_symbols,
    place_names,
)
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
NUMBER_WORDS = {w: str(i) for i, w in enumerate((*SMALL_NUMBER_NAMES, "twenty"))}
TENS_WORDS = {w: 10 * i for i, w in enumerate(TENS_NAMES) if i >= 2}
TENS_WORDS["fourty"] = 40  # a common misspelling that still names the number
SCALE_WORDS = {"thousand": 1000, "million": 10**6, "billion": 10**9}
# Words that may follow "A" or "I" when it names a letter (or "I" a numeral) rather than the
# article or the pronoun: "A is the first letter", "I comes after H", "A or B".
LETTER_VERBS = {"is", "was", "comes", "came", "follows", "precedes", "and", "or"}
QUOTES = "'\"‘’“”`"
SINGLE_LETTER = re.compile(r"(?<!\w)([A-Za-z])(?!\w)")
ROMAN_NUMERAL = re.compile(r"(?<!\w)([IVXLCDM]+)(?!\w)")
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


def one_new_and_gold(found: Counter, echoed: Counter, gold: set) -> bool:
    """What a response names beyond what it echoes from the question (counted) is exactly one
    thing, and a gold one: the rule of the numeric, symbol, letter, roman and spelled graders."""
    new = found - echoed
    return len(new) == 1 and next(iter(new)) in gold


def numeric_match(response: str, answers: Sequence[str], question: str = "") -> bool:
    """The response states exactly one number beyond those in the question, and it is a gold one."""
    gold = set()
    for answer in answers:
        gold.update(parse_numbers(str(answer)))
    if not gold:
        raise ConfigError(f"numeric grader: gold answers {list(answers)!r} hold no number")
    return one_new_and_gold(
        Counter(parse_numbers(response)), Counter(parse_numbers(question)), gold
    )


# --- letters, Roman numerals and numbers in words ------------------------------------------------


def _next_word(text: str, end: int) -> str | None:
    """The word right after position `end` (after spaces only), or None."""
    match = re.match(r"\s+([A-Za-z]+)", text[end:])
    return match.group(1) if match else None


def _inside_word(text: str, start: int, end: int) -> bool:
    """True when text[start:end] is part of a contraction or dotted abbreviation ("it's",
    "I'm", "e.g.", "U.S."): an apostrophe or dot joins it to a letter on either side."""
    before = text[max(start - 2, 0) : start]
    after = text[end : end + 2]
    joined_before = len(before) == 2 and before[1] in "'’." and before[0].isalpha()
    joined_after = len(after) == 2 and after[0] in "'’." and after[1].isalpha()
    return joined_before or joined_after


def _used_as_word(text: str, end: int) -> bool:
    """True when "A" or "I" ending at `end` is the article or the pronoun: a lower-case word
    follows that is not a verb or a joiner a letter takes ("A is ...", "I or J")."""
    word = _next_word(text, end)
    return word is not None and word[0].islower() and word not in LETTER_VERBS


def _bare_token(response: str) -> str:
    """The response without surrounding spaces, quotes and punctuation ("'e'." -> "e")."""
    return response.strip().strip(QUOTES + ".,;:!?()[] ")


def letter_mentions(text: str) -> Counter:
    """Single letters the text names (upper-cased): a letter standing alone, not part of a
    word, contraction or dotted abbreviation. Quoted letters always count ("'a'", "“e”"); an
    unquoted "A" or "I" not when it is the article or the pronoun ("A common one", "I think";
    but "A is", "A."); an unquoted lower-case "a" or "i" only right after the word "letter"
    ("the letter a"); any other lower-case letter counts ("the letter e", "it is e")."""
    found: Counter = Counter()
    for match in SINGLE_LETTER.finditer(text):
        start, end = match.span(1)
        char = match.group(1)
        if _inside_word(text, start, end):
            continue
        quoted = text[start - 1 : start] in QUOTES and text[end : end + 1] in QUOTES
        quoted = quoted and start > 0 and end < len(text)
        if not quoted and char in "AI" and _used_as_word(text, end):
            continue
        after_letter = re.search(r"\bletter\s+$", text[:start], re.IGNORECASE) is not None
        if not quoted and char in "ai" and not after_letter:
            continue
        found[char.upper()] += 1
    return found


def letter_match(response: str, answers: Sequence[str], question: str = "") -> bool:
    """The response is a single letter (any case: "a", "'e'."), or it names exactly one letter
    beyond those in the question (see `letter_mentions`), a gold one: "E", "The 5th letter is E.",
    "It is the letter 'e'." are right for E; "E or F", "K, L" (asked after K: K is echoed, L
    is new, so right) and "A common letter" (no letter) are read accordingly."""
    bare, gold = _bare_token(response), {a.strip().upper() for a in answers}
    if len(bare) == 1 and bare.isalpha():
        return bare.upper() in gold
    return one_new_and_gold(letter_mentions(response), letter_mentions(question), gold)


def roman_mentions(text: str) -> Counter:
    """Roman numerals in the text: upper-case runs of I V X L C D M standing alone (not
    "xiv", not "XIVth"), except the pronoun "I" ("I think") and contraction parts ("I'm")."""
    found: Counter = Counter()
    for match in ROMAN_NUMERAL.finditer(text):
        start, end = match.span(1)
        token = match.group(1)
        if _inside_word(text, start, end) or (token == "I" and _used_as_word(text, end)):
            continue
        found[token] += 1
    return found


def roman_match(response: str, answers: Sequence[str], question: str = "") -> bool:
    """The response is a gold numeral alone (any case: "xiv."), or it writes exactly one Roman
    numeral beyond the question's, a gold one ("The Roman numeral for 14 is XIV." right; "XIV or
    XV", "XIIII" wrong; inside a sentence lower case is not read: "it is xiv" is wrong)."""
    bare = _bare_token(response)
    if bare and set(bare.upper()) <= set("IVXLCDM"):
        return bare.upper() in set(answers)
    return one_new_and_gold(roman_mentions(response), roman_mentions(question), set(answers))


def _below_hundred(words: Sequence[str], i: int) -> tuple[int, int] | None:
    """(value, next index) of "seven", "seventeen", "forty", "forty seven" at words[i]."""
    if i >= len(words):
        return None
    if words[i] in TENS_WORDS:
        value = TENS_WORDS[words[i]]
        unit = NUMBER_WORDS.get(words[i + 1]) if i + 1 < len(words) else None
        if unit is not None and 1 <= int(unit) <= 9:
            return value + int(unit), i + 2
        return value, i + 1
    if words[i] in NUMBER_WORDS:
        return int(NUMBER_WORDS[words[i]]), i + 1
    return None


def _below_thousand(words: Sequence[str], i: int) -> tuple[int, int] | None:
    """(value, next index) of "three hundred (and) forty seven", "twelve hundred", "hundred"
    (from "a hundred": the article is dropped) or a number below a hundred."""
    first = _below_hundred(words, i)
    if first is not None and (first[1] >= len(words) or words[first[1]] != "hundred"):
        return first
    if first is None and (i >= len(words) or words[i] != "hundred"):
        return None
    value, j = (first[0] * 100, first[1] + 1) if first else (100, i + 1)
    k = j + 1 if j < len(words) and words[j] == "and" else j
    rest = _below_hundred(words, k)
    return (value + rest[0], rest[1]) if rest and rest[0] > 0 else (value, j)


def _read_spelled(words: Sequence[str], i: int) -> tuple[int, int] | None:
    """(value, next index) of the longest number name starting at words[i], scales taken in
    falling order ("two million three thousand and five"; "a thousand" is 1,000)."""
    chunk = _below_thousand(words, i)
    if chunk is None:
        if words[i] not in SCALE_WORDS:
            return None
        chunk = (1, i)
    value, j = chunk
    total, last_scale = 0, float("inf")
    while j < len(words) and SCALE_WORDS.get(words[j], last_scale) < last_scale:
        last_scale = SCALE_WORDS[words[j]]
        total, j = total + value * last_scale, j + 1
        k = j + 1 if j < len(words) and words[j] == "and" else j
        following = _below_thousand(words, k)
        if following is None:
            return total, j
        value, j = following
    return total + value, j


def spelled_numbers(text: str) -> list[int]:
    """Every number the text writes in English words, each maximal number name read as one
    ("three hundred and forty-seven" is 347; "nineteen eighty-four" is 19 and 84); digits are
    not read."""
    words = normalize_words(text)
    found, i = [], 0
    while i < len(words):
        read = _read_spelled(words, i)
        if read is None:
            i += 1
        else:
            found.append(read[0])
            i = read[1]
    return found


def spelled_number_match(response: str, answers: Sequence[str], question: str = "") -> bool:
    """The response writes exactly one number in words beyond the question's, a gold one.
    Hyphens, case, "and" and commas do not matter ("Forty-Seven.", "forty seven", "three
    hundred and forty-seven"); digits alone are no answer ("47" is not "47 in words")."""
    gold = set()
    for answer in answers:
        values = spelled_numbers(str(answer))
        if len(values) != 1:
            raise ConfigError(f"spelled_number grader: gold answer {answer!r} is not one number")
        gold.add(values[0])
    found, echoed = Counter(spelled_numbers(response)), Counter(spelled_numbers(question))
    return one_new_and_gold(found, echoed, gold)


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


def calendar_lexicon(names: Sequence[str]) -> Lexicon:
    """Day or month names; "May" only capitalized ("May" or "MAY", not the verb "may")."""
    lexicon = make_lexicon({name: [name] for name in names if name != "May"})
    if "May" not in names:
        return lexicon
    acronyms = {**lexicon.acronyms, ("May",): "May", ("MAY",): "May"}
    return Lexicon(lexicon.phrases, acronyms, max(lexicon.longest, 1))


@cache
def entity_lexicon(kind: str) -> Lexicon:
    """The lexicon of an entity grader: `country` (every country's names and '<demonym>
    city/state ...'; cities and seas as blockers), `continent` (continents, their adjectives
    and 'the Americas' / 'Eurasia'; country names as blockers), `weekday` or `month`."""
    if kind in ("weekday", "month"):
        return calendar_lexicon(WEEKDAY_NAMES if kind == "weekday" else MONTH_NAMES)
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
    symbols = element_symbols() | frozenset(answers)
    found, echoed = symbol_mentions(response, symbols), symbol_mentions(question, symbols)
    return one_new_and_gold(found, echoed, set(answers))


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
    | symbol | weekday | month | letter | roman | spelled_number (judge: judge_grades)."""
    text_matchers = {
        "exact": exact_match,
        "numeric": numeric_match,
        "symbol": symbol_match,
        "letter": letter_match,
        "roman": roman_match,
        "spelled_number": spelled_number_match,
    }
    if grader in text_matchers:
        return text_matchers[grader](response, answers, question)
    if grader == "choice":
        return choice_match(response, answers, choices)
    if grader == "substring":
        return substring_match(response, answers)
    if grader in ("country", "continent", "weekday", "month"):
        return entity_match(response, answers, question, entity_lexicon(grader))
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
