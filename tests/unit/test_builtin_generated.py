"""The generated built-in domains: hand-checked answers, checks of every row against an
independent computation, groups, determinism, and the graders they use."""

from __future__ import annotations

import datetime
import functools
import re
from collections import Counter
from fractions import Fraction

import pytest

from calibtune.data.builtin.generated import (
    UNIT_CONVERSIONS,
    format_amount,
    generated_rows,
    number_in_words,
    ordinal,
    to_roman,
    weekday_name,
)
from calibtune.data.grading import GRADERS, grade, spelled_numbers
from calibtune.errors import ConfigError

GROUP_PREFIX = {
    "roman_numerals": "roman/",
    "roman_to_number": "roman/",
    "number_words": "number/",
    "counting": "arithmetic/1,",
    "weekdays": "date/",
    "letter_positions": "letter/",
    "letter_neighbours": "letter/",
    "months": "month/",
    "unit_conversions": "unit/",
    "squares": "arithmetic/",
    "square_roots": "arithmetic/",
}
FIELDS = {"id", "qid", "group", "domain", "question", "answers", "choices", "grader"}


@functools.cache
def rows() -> tuple[dict, ...]:
    return tuple(generated_rows())


@functools.cache
def facts() -> dict[str, dict]:
    """The first row of every fact, by qid."""
    found: dict[str, dict] = {}
    for row in rows():
        found.setdefault(row["qid"], row)
    return found


def test_rows_have_the_suite_format_unique_ids_and_group_prefixes():
    domains = Counter(row["domain"] for row in rows())
    assert set(domains) == set(GROUP_PREFIX)
    assert len({row["id"] for row in rows()}) == len(rows())
    for row in rows():
        assert FIELDS <= set(row) <= FIELDS | {"difficulty"}, row
        assert row["choices"] is None and row["grader"] in GRADERS
        assert row["qid"].startswith(row["domain"] + "/") and row["id"].startswith(row["qid"] + "/")
        assert row["group"].startswith(GROUP_PREFIX[row["domain"]]), row
        assert row["answers"] and all(isinstance(a, str) and a for a in row["answers"])
    per_domain_facts = Counter(fact["domain"] for fact in facts().values())
    assert per_domain_facts["letter_positions"] == 26
    assert per_domain_facts["months"] == 36
    assert per_domain_facts["letter_neighbours"] == 50
    assert all(per_domain_facts[d] >= 99 for d in ("roman_numerals", "weekdays", "squares"))


def test_rows_are_deterministic_fresh_and_phrasings_differ():
    first = generated_rows()
    first[0]["answers"].append("mutated")
    assert generated_rows() == list(rows())
    by_qid: dict[str, list[str]] = {}
    for row in rows():
        by_qid.setdefault(row["qid"], []).append(row["question"])
    assert all(len(set(q)) == len(q) >= 2 for q in by_qid.values())


@pytest.mark.parametrize(
    ("n", "numeral"),
    [(1, "I"), (4, "IV"), (9, "IX"), (14, "XIV"), (40, "XL"), (90, "XC"), (400, "CD")]
    + [(1994, "MCMXCIV"), (2024, "MMXXIV"), (3999, "MMMCMXCIX"), (444, "CDXLIV")],
)
def test_roman_numerals(n, numeral):
    assert to_roman(n) == numeral


def roman_value(numeral: str) -> int:
    """Independent reading of a numeral: add each symbol, subtract it before a larger one."""
    values = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
    digits = [values[c] for c in numeral]
    return sum(-d if d < nxt else d for d, nxt in zip(digits, [*digits[1:], 0], strict=True))


def test_roman_rows_both_ways_agree_with_an_independent_reading():
    assert facts()["roman_numerals/14"]["answers"] == ["XIV"]
    assert facts()["roman_to_number/XIV"]["answers"] == ["14"]
    assert facts()["roman_numerals/14"]["group"] == facts()["roman_to_number/XIV"]["group"]
    for row in rows():
        if row["domain"] == "roman_numerals":
            n = int(row["qid"].split("/")[1])
            assert roman_value(row["answers"][0]) == n and str(n) in row["question"]
        if row["domain"] == "roman_to_number":
            numeral = row["qid"].split("/")[1]
            assert int(row["answers"][0]) == roman_value(numeral) and numeral in row["question"]
    with pytest.raises(ValueError):
        to_roman(4000)


@pytest.mark.parametrize(
    ("n", "american", "british"),
    [
        (7, "seven", "seven"),
        (13, "thirteen", "thirteen"),
        (40, "forty", "forty"),
        (47, "forty-seven", "forty-seven"),
        (110, "one hundred ten", "one hundred and ten"),
        (347, "three hundred forty-seven", "three hundred and forty-seven"),
        (1000, "one thousand", "one thousand"),
        (2005, "two thousand five", "two thousand and five"),
        (100_100, "one hundred thousand one hundred", "one hundred thousand one hundred"),
        (
            999_999,
            "nine hundred ninety-nine thousand nine hundred ninety-nine",
            "nine hundred and ninety-nine thousand nine hundred and ninety-nine",
        ),
    ],
)
def test_number_in_words(n, american, british):
    assert number_in_words(n) == american
    assert number_in_words(n, british=True) == british


def test_number_word_rows_read_back_to_their_number():
    assert facts()["number_words/20"]["answers"] == ["twenty"]
    for fact in facts().values():
        if fact["domain"] == "number_words":
            n = int(fact["qid"].split("/")[1])
            assert f"{n:,}" in fact["question"]
            assert all(spelled_numbers(answer) == [n] for answer in fact["answers"]), fact


def zeller(date: datetime.date) -> str:
    """Day of the week by Zeller's congruence (independent of datetime.weekday)."""
    month, year = (date.month + 12, date.year - 1) if date.month < 3 else (date.month, date.year)
    k, j = year % 100, year // 100
    h = (date.day + 13 * (month + 1) // 5 + k + k // 4 + j // 4 + 5 * j) % 7
    return ["Saturday", "Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday"][h]


def test_weekdays_hand_checked_and_every_row_by_zellers_congruence():
    assert weekday_name(datetime.date(1976, 7, 4)) == "Sunday"
    assert weekday_name(datetime.date(2000, 1, 1)) == "Saturday"
    assert weekday_name(datetime.date(1900, 1, 1)) == "Monday"
    assert weekday_name(datetime.date(1969, 7, 20)) == "Sunday"
    dates = []
    for row in rows():
        if row["domain"] == "weekdays":
            date = datetime.date.fromisoformat(row["qid"].split("/")[1])
            dates.append(date)
            assert row["answers"] == [zeller(date)] and row["group"] == f"date/{date}"
            assert str(date.year) in row["question"] and str(date.day) in row["question"]
    assert min(dates).year >= 1900 and max(dates).year <= 2020 and len(set(dates)) >= 100


def test_letters_and_months_and_their_inverses_share_a_group():
    fifth = facts()["letter_positions/E"]
    assert fifth["answers"] == ["E"] and "5th" in fifth["question"]
    after_k, before_l = facts()["letter_neighbours/after/K"], facts()["letter_neighbours/before/L"]
    assert after_k["answers"] == ["L"] and before_l["answers"] == ["K"]
    assert after_k["group"] == before_l["group"] == "letter/K"
    after_dec = facts()["months/after/December"]
    before_jan = facts()["months/before/January"]
    assert after_dec["answers"] == ["January"] and before_jan["answers"] == ["December"]
    assert after_dec["group"] == before_jan["group"] == "month/December"
    assert facts()["months/position/7"]["answers"] == ["July"]
    assert facts()["months/after/March"]["answers"] == ["April"]
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101)] == [
        "1st",
        "2nd",
        "3rd",
        "4th",
        "11th",
        "12th",
        "13th",
        "21st",
        "22nd",
        "23rd",
        "101st",
    ]


def test_unit_conversions_are_exact_both_ways():
    factors = {key: factor for key, _, _, factor in UNIT_CONVERSIONS}
    assert (factors["km-m"], factors["m-cm"], factors["h-min"], factors["d-h"]) == (
        1000,
        100,
        60,
        24,
    )
    assert format_amount(Fraction(7, 2)) == "3.5" and format_amount(Fraction(350)) == "350"
    assert format_amount(Fraction(1, 4)) == "0.25"
    for fact in facts().values():
        if fact["domain"] != "unit_conversions":
            continue
        key = fact["qid"].split("/")[1]
        asked = Fraction(re.search(r"(\d+(?:\.\d+)?) ", fact["question"]).group(1))
        answer = Fraction(fact["answers"][0])
        back = fact["qid"].endswith("/back")
        assert answer == (asked / factors[key] if back else asked * factors[key]), fact
        assert fact["group"] == f"unit/{key}/{format_amount(asked if not back else answer)}"


def test_squares_roots_and_counting():
    assert facts()["squares/13"]["answers"] == ["169"]
    assert facts()["square_roots/169"]["answers"] == ["13"]
    assert facts()["squares/13"]["group"] == facts()["square_roots/169"]["group"]
    assert facts()["squares/13"]["group"] == "arithmetic/13,13"
    for fact in facts().values():
        if fact["domain"] == "counting":
            n = int(fact["qid"].split("/")[1])
            assert fact["answers"] == [str(n + 1)] and fact["group"] == f"arithmetic/1,{n}"


def test_every_gold_answer_is_graded_right_and_another_facts_gold_wrong():
    by_domain: dict[str, list[dict]] = {}
    for fact in facts().values():
        by_domain.setdefault(fact["domain"], []).append(fact)
    for domain, domain_facts in by_domain.items():
        for fact, other in zip(domain_facts, domain_facts[1:] + domain_facts[:1], strict=True):
            answers, question, grader = fact["answers"], fact["question"], fact["grader"]
            gold = answers[0]
            assert grade(gold, answers, None, grader, question), (domain, gold)
            assert grade(f"The answer is {gold}.", answers, None, grader, question), gold
            if other["answers"][0] != gold:
                wrong = other["answers"][0]
                assert not grade(wrong, answers, None, grader, question), (domain, gold, wrong)


@pytest.mark.parametrize(
    ("response", "answers", "question", "correct"),
    [
        ("E", ["E"], "What is the 5th letter of the alphabet?", True),
        ("The answer is E", ["E"], "What is the 5th letter of the alphabet?", True),
        ('The answer is "e".', ["E"], "What is the 5th letter of the alphabet?", True),
        ("The 1st letter is A.", ["A"], "What is the 1st letter of the alphabet?", True),
        ("It is the letter 'a'.", ["A"], "What is the 1st letter of the alphabet?", True),
        ("It is the letter a.", ["A"], "What is the 1st letter of the alphabet?", True),
        ("A is the first letter.", ["A"], "What is the 1st letter of the alphabet?", True),
        ("It is a vowel.", ["A"], "What is the 1st letter of the alphabet?", False),  # article
        ("A common guess is E.", ["A"], "What is the 1st letter of the alphabet?", False),
        ("I think it is I.", ["I"], "What is the 9th letter of the alphabet?", True),
        ("I think it is J.", ["I"], "What is the 9th letter of the alphabet?", False),
        ("I'm sure it's J.", ["J"], "What is the 10th letter of the alphabet?", True),
        ("E or F", ["E"], "What is the 5th letter of the alphabet?", False),
        ("E, F", ["E"], "What is the 5th letter of the alphabet?", False),
        ("The letter after K is L.", ["L"], "Which letter comes after K in the alphabet?", True),
        ("K", ["L"], "Which letter comes after K in the alphabet?", False),  # an echo
        ("The letter K comes after K.", ["L"], "Which letter comes after K?", False),
        ("The letter J is just before K.", ["J"], "What letter is just before K?", True),
        ("The fifth letter, e.g. in 'bed'", ["E"], "What is the 5th letter?", False),
        ("The answer is 5.", ["E"], "What is the 5th letter of the alphabet?", False),
        ("a", ["A"], "What is the 1st letter of the alphabet?", True),  # a letter alone
        ("'b'.", ["A"], "What is the 1st letter of the alphabet?", False),
    ],
)
def test_letter_grader(response, answers, question, correct):
    assert grade(response, answers, None, "letter", question) is correct


@pytest.mark.parametrize(
    ("response", "answers", "correct"),
    [
        ("The Roman numeral for 14 is XIV.", ["XIV"], True),
        ("XIV", ["XIV"], True),
        ('The Roman numeral "XIV" stands for 14.', ["XIV"], True),
        ("I think it is XIV.", ["XIV"], True),  # the pronoun I is no numeral
        ("The Roman numeral for 1 is I.", ["I"], True),
        ("I believe it is II.", ["I"], False),
        ("It is XIV or XV.", ["XIV"], False),
        ("The Roman numeral for 14 is XLIV.", ["XIV"], False),
        ("XIIII", ["XIV"], False),
        ("xiv.", ["XIV"], True),  # a numeral alone is read in any case
        ("It is xiv.", ["XIV"], False),  # inside a sentence lower case is not read
        ("XV", ["XIV"], False),
        ("14 in Roman numerals is 14.", ["XIV"], False),
    ],
)
def test_roman_grader(response, answers, correct):
    assert grade(response, answers, None, "roman", "What is the Roman numeral for 14?") is correct


@pytest.mark.parametrize(
    ("response", "correct"),
    [
        ("forty-seven", True),
        ("Forty-Seven.", True),
        ("forty seven", True),
        ('47 in words is "forty-seven".', True),
        ("fourty-seven", True),  # misspelled, still the number
        ("47", False),  # digits are not words
        ("forty", False),
        ("one hundred forty-seven", False),  # "forty-seven" inside a larger number
        ("forty-seven or forty-eight", False),
        ("four seven", False),
    ],
)
def test_spelled_number_grader(response, correct):
    answers = ["forty-seven"]
    assert grade(response, answers, None, "spelled_number", "Write 47 in words.") is correct


def test_spelled_number_grader_reads_scales_and_british_and():
    question = "How do you write the number 2,005 in words?"
    answers = ["two thousand five", "two thousand and five"]
    for response, correct in [
        ("Two thousand and five.", True),
        ("two thousand five", True),
        ("two thousand", False),
        ("twenty oh five", False),
        ("two hundred and five", False),
    ]:
        assert grade(response, answers, None, "spelled_number", question) is correct, response
    assert spelled_numbers("nineteen eighty-four") == [19, 84]
    assert spelled_numbers("a thousand and one nights") == [1001]
    assert spelled_numbers("twelve hundred") == [1200]
    with pytest.raises(ConfigError, match="not one number"):
        grade("two", ["two three"], None, "spelled_number", "")


@pytest.mark.parametrize(
    ("response", "answers", "question", "grader", "correct"),
    [
        (
            "4 July 1976 was a Sunday.",
            ["Sunday"],
            "What day of the week was 4 July 1976?",
            "weekday",
            True,
        ),
        ("It was a Sunday or a Monday.", ["Sunday"], "What day was 4 July 1976?", "weekday", False),
        ("20 July 2014 was a Friday.", ["Sunday"], "What day was 20 July 2014?", "weekday", False),
        ("A Sunday, not a Monday.", ["Sunday"], "What day was 4 July 1976?", "weekday", True),
        ("4 July 1976 is a date.", ["Sunday"], "What day was 4 July 1976?", "weekday", False),
        ("The month after April is May.", ["May"], "Which month comes after April?", "month", True),
        ("It may be June.", ["May"], "Which month comes after April?", "month", False),
        ("May", ["May"], "Which month comes after April?", "month", True),
        (
            "The month after March is April.",
            ["April"],
            "Which month comes after March?",
            "month",
            True,
        ),
        (
            "The month after March is March.",
            ["April"],
            "Which month comes after March?",
            "month",
            False,
        ),
        ("April or May", ["April"], "Which month comes after March?", "month", False),
        (
            "The 1st month of the year is January 1st.",
            ["January"],
            "What is the 1st month?",
            "month",
            True,
        ),
    ],
)
def test_weekday_and_month_graders(response, answers, question, grader, correct):
    assert grade(response, answers, None, grader, question) is correct
