"""Generated domains of the built-in suite: every answer is computed here (no typed-in facts)
from the rules of Roman numerals, English number names and counting, Python's calendar
arithmetic, the order of the alphabet and of the months, and exact unit factors. Sampling uses
fixed seeds, so the rows are the same on every machine.

  domain             asks                                         grader          group
  roman_numerals     14 -> XIV                                    roman           roman/<n>
  roman_to_number    XIV -> 14                                    numeric         roman/<n>
  number_words       47 -> forty-seven                            spelled_number  number/<n>
  counting           count on from 41 -> 42                       numeric         arithmetic/1,41
  weekdays           4 July 1976 -> Sunday                        weekday         date/<iso date>
  letter_positions   5th letter -> E                              letter          letter/E
  letter_neighbours  letter after K -> L, letter before L -> K    letter          letter/K
  months             month after / before, 7th month -> July      month           month/<name>
  unit_conversions   3.5 metres -> 350 centimetres, and back      numeric         unit/m-cm/3.5
  squares            13 squared -> 169                            numeric         arithmetic/13,13
  square_roots       square root of 169 -> 13                     numeric         arithmetic/13,13

A neighbour fact and its inverse ("after K", "before L") share the group of the earlier of the
two (`letter/K`; `month/March` for "after March" and "before April"; December -> January is
`month/December`). Counting, squares and roots use the arithmetic group of `n + 1` and `n * n`,
so that "13 squared" never lands in another split than the arithmetic row "13 * 13 =". Rows of
domains drawn from bands of growing size (Roman numerals, number words, counting) carry
`difficulty` (the band, 1 = smallest) like the built-in arithmetic, so that a sample visits
every band.
"""

from __future__ import annotations

import datetime
import random
from decimal import Decimal
from fractions import Fraction

from calibtune.data.builtin.rows import phrasing_rows
from calibtune.data.lexicons import MONTH_NAMES, SMALL_NUMBER_NAMES, TENS_NAMES, WEEKDAY_NAMES

GENERATED_SEED = 20240612
LETTERS = tuple(chr(ord("A") + i) for i in range(26))

# Phrasings picked from probes of the default model (5-8 facts per candidate phrasing): those it
# most often answers with a value rather than a method ("To find the square of 21, we ..."). For
# weekdays, number words, unit conversions and large squares it mostly answers with neither.
ROMAN_PHRASINGS = (
    "What is the Roman numeral for {n}?",
    "Which Roman numeral stands for {n}?",
    "How do you write {n} in Roman numerals?",
)
ROMAN_TO_NUMBER_PHRASINGS = (
    "What number is the Roman numeral {numeral}?",
    "Which number does the Roman numeral {numeral} stand for?",
    "What is the value of the Roman numeral {numeral}?",
)
NUMBER_WORDS_PHRASINGS = (
    "What is the English word for the number {n}?",
    "How do you write the number {n} in words?",
    "Write the number {n} in words.",
)
WEEKDAY_PHRASINGS = (
    "What day of the week was {day} {month} {year}?",
    "On which day of the week did {month} {day}, {year} fall?",
    "{day} {month} {year} was which day of the week?",
)
LETTER_POSITION_PHRASINGS = (
    "What is the {ordinal} letter of the alphabet?",
    "In the English alphabet, which letter is in position {n}?",
)
LETTER_AFTER_PHRASINGS = (
    "What is the next letter after {letter} in the alphabet?",
    "Which letter comes after {letter} in the alphabet?",
)
LETTER_BEFORE_PHRASINGS = (
    "Which letter comes before {letter} in the alphabet?",
    "What letter is just before {letter} in the alphabet?",
)
MONTH_AFTER_PHRASINGS = (
    "Which month comes after {month}?",
    "What month follows {month}?",
)
MONTH_BEFORE_PHRASINGS = (
    "Which month comes before {month}?",
    "Which month is just before {month}?",
)
MONTH_POSITION_PHRASINGS = (
    "Which month is month number {n} of the year?",
    "What is the {ordinal} month of the year?",
)
UNIT_PHRASINGS = (
    "How many {to} are there in {x} {frm}?",
    "{x} {frm} = how many {to}?",
)
COUNTING_PHRASINGS = (
    "Count on from {n}: what is the next number?",
    "Counting up from {n}, what number comes next?",
)
SQUARE_PHRASINGS = (
    "What is {n} squared?",
    "{n} squared =",
    "{n}^2 =",
)
SQUARE_ROOT_PHRASINGS = (
    "What is the square root of {square}?",
    "The square root of {square} =",
)

# (difficulty, lowest, highest, how many): every number of the first band, a sample of the rest.
ROMAN_BANDS = ((1, 1, 20, 20), (2, 21, 100, 40), (3, 101, 999, 90), (4, 1000, 3999, 90))
NUMBER_WORD_BANDS = (
    (1, 1, 20, 20),
    (2, 21, 99, 50),
    (3, 100, 999, 80),
    (4, 1000, 9999, 80),
    (5, 10_000, 999_999, 80),
)
COUNTING_BANDS = (
    (1, 1, 99, 40),
    (2, 100, 999, 40),
    (3, 1000, 9999, 40),
    (4, 10_000, 999_999, 40),
)
WEEKDAY_FIRST, WEEKDAY_LAST, WEEKDAY_COUNT = (
    datetime.date(1900, 1, 1),
    datetime.date(2020, 12, 31),
    300,
)
ROMAN_VALUES = (
    (1000, "M"),
    (900, "CM"),
    (500, "D"),
    (400, "CD"),
    (100, "C"),
    (90, "XC"),
    (50, "L"),
    (40, "XL"),
    (10, "X"),
    (9, "IX"),
    (5, "V"),
    (4, "IV"),
    (1, "I"),
)
# (key, larger unit, smaller unit, smaller units in one larger): exact by definition.
UNIT_CONVERSIONS = tuple(
    (key, large, small, int(factor))
    for key, large, small, factor in map(
        str.split,
        """
km-m kilometres metres 1000
m-cm metres centimetres 100
m-mm metres millimetres 1000
cm-mm centimetres millimetres 10
kg-g kilograms grams 1000
g-mg grams milligrams 1000
t-kg tonnes kilograms 1000
l-ml litres millilitres 1000
h-min hours minutes 60
min-s minutes seconds 60
d-h days hours 24
wk-d weeks days 7
yr-mo years months 12
""".strip().splitlines(),
    )
)
UNIT_VALUES_PER_CONVERSION = 8
# Amounts of the larger unit: whole numbers, halves and quarters (never 1: plural unit names).
UNIT_AMOUNTS = (
    *(Fraction(n) for n in range(2, 21)),
    *(Fraction(2 * n + 1, 2) for n in range(10)),
    Fraction(1, 4),
    Fraction(3, 4),
)
SQUARE_BASES = range(2, 101)


def to_roman(n: int) -> str:
    """The standard (subtractive) Roman numeral of 1 <= n <= 3999."""
    if not 1 <= n <= 3999:
        raise ValueError(f"no standard Roman numeral for {n}")
    digits = []
    for value, symbol in ROMAN_VALUES:
        count, n = divmod(n, value)
        digits.append(symbol * count)
    return "".join(digits)


def _below_hundred(n: int) -> str:
    if n < 20:
        return SMALL_NUMBER_NAMES[n]
    tens, ones = divmod(n, 10)
    return TENS_NAMES[tens] + (f"-{SMALL_NUMBER_NAMES[ones]}" if ones else "")


def _below_thousand(n: int, british: bool) -> str:
    hundreds, rest = divmod(n, 100)
    parts = [f"{SMALL_NUMBER_NAMES[hundreds]} hundred"] if hundreds else []
    if rest:
        parts += ["and"] if hundreds and british else []
        parts.append(_below_hundred(rest))
    return " ".join(parts)


def number_in_words(n: int, british: bool = False) -> str:
    """English name of 0 <= n < 10**9: "three hundred forty-seven"; british=True puts "and"
    before the last part ("three hundred and forty-seven", "two thousand and five")."""
    if not 0 <= n < 10**9:
        raise ValueError(f"number_in_words covers 0 to 999,999,999, not {n}")
    if n == 0:
        return "zero"
    parts = []
    for scale, name in ((10**6, "million"), (1000, "thousand"), (1, "")):
        chunk = n // scale % 1000
        if not chunk:
            continue
        if scale == 1 and british and parts and chunk < 100:
            parts.append("and")
        parts.append(f"{_below_thousand(chunk, british)} {name}".strip())
    return " ".join(parts)


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, ..."""
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def weekday_name(date: datetime.date) -> str:
    """English name of the day of the week of a (proleptic Gregorian) date."""
    return WEEKDAY_NAMES[date.weekday()]


def _banded_sample(bands, rng: random.Random) -> list[tuple[int, int]]:
    """(difficulty, number) for every band: all of a band when it asks for that many, else a
    sample without repeats, in increasing order."""
    chosen = []
    for level, lo, hi, count in bands:
        numbers = range(lo, hi + 1)
        picked = numbers if count >= len(numbers) else sorted(rng.sample(numbers, count))
        chosen += [(level, n) for n in picked]
    return chosen


def _with_difficulty(rows: list[dict], level: int) -> list[dict]:
    return [{**row, "difficulty": level} for row in rows]


def roman_rows() -> list[dict]:
    """Numbers to Roman numerals and back (`roman_numerals`, `roman_to_number`)."""
    rows: list[dict] = []
    for level, n in _banded_sample(ROMAN_BANDS, random.Random(GENERATED_SEED)):
        numeral, group = to_roman(n), f"roman/{n}"
        rows += _with_difficulty(
            phrasing_rows(
                "roman_numerals", str(n), group, ROMAN_PHRASINGS, [numeral], "roman", n=n
            ),
            level,
        )
        rows += _with_difficulty(
            phrasing_rows(
                "roman_to_number",
                numeral,
                group,
                ROMAN_TO_NUMBER_PHRASINGS,
                [str(n)],
                "numeric",
                numeral=numeral,
            ),
            level,
        )
    return rows


def number_word_rows() -> list[dict]:
    """Numbers written in English words (`number_words`), American and British forms."""
    rows: list[dict] = []
    for level, n in _banded_sample(NUMBER_WORD_BANDS, random.Random(GENERATED_SEED + 1)):
        answers = list(dict.fromkeys([number_in_words(n), number_in_words(n, british=True)]))
        rows += _with_difficulty(
            phrasing_rows(
                "number_words",
                str(n),
                f"number/{n}",
                NUMBER_WORDS_PHRASINGS,
                answers,
                "spelled_number",
                n=f"{n:,}",
            ),
            level,
        )
    return rows


def counting_rows() -> list[dict]:
    """The number after n (`counting`), n from bands of growing size."""
    rows: list[dict] = []
    for level, n in _banded_sample(COUNTING_BANDS, random.Random(GENERATED_SEED + 4)):
        rows += _with_difficulty(
            phrasing_rows(
                "counting",
                str(n),
                f"arithmetic/1,{n}",
                COUNTING_PHRASINGS,
                [str(n + 1)],
                "numeric",
                n=n,
            ),
            level,
        )
    return rows


def weekday_rows() -> list[dict]:
    """The day of the week of dates drawn uniformly from 1900 to 2020 (`weekdays`)."""
    rng = random.Random(GENERATED_SEED + 2)
    span = (WEEKDAY_LAST - WEEKDAY_FIRST).days + 1
    offsets = sorted(rng.sample(range(span), WEEKDAY_COUNT))
    rows: list[dict] = []
    for offset in offsets:
        date = WEEKDAY_FIRST + datetime.timedelta(days=offset)
        rows += phrasing_rows(
            "weekdays",
            date.isoformat(),
            f"date/{date.isoformat()}",
            WEEKDAY_PHRASINGS,
            [weekday_name(date)],
            "weekday",
            day=date.day,
            month=MONTH_NAMES[date.month - 1],
            year=date.year,
        )
    return rows


def _neighbour_rows(domain: str, kind: str, names, after_phrasings, before_phrasings, grader):
    """ "after X" and "before Y" for each adjacent pair X, Y (wrapping when `kind` is month),
    both in the group of X."""
    rows: list[dict] = []
    pairs = list(zip(names, names[1:], strict=False))
    if kind == "month":
        pairs.append((names[-1], names[0]))
    for first, second in pairs:
        group = f"{kind}/{first}"
        rows += phrasing_rows(
            domain, f"after/{first}", group, after_phrasings, [second], grader, **{kind: first}
        )
        rows += phrasing_rows(
            domain, f"before/{second}", group, before_phrasings, [first], grader, **{kind: second}
        )
    return rows


def letter_rows() -> list[dict]:
    """Letters by position (`letter_positions`) and their neighbours (`letter_neighbours`)."""
    rows: list[dict] = []
    for index, letter in enumerate(LETTERS, start=1):
        rows += phrasing_rows(
            "letter_positions",
            letter,
            f"letter/{letter}",
            LETTER_POSITION_PHRASINGS,
            [letter],
            "letter",
            ordinal=ordinal(index),
            n=index,
        )
    return rows + _neighbour_rows(
        "letter_neighbours",
        "letter",
        LETTERS,
        LETTER_AFTER_PHRASINGS,
        LETTER_BEFORE_PHRASINGS,
        "letter",
    )


def month_rows() -> list[dict]:
    """Month after, before (wrapping at the year's end) and by position (`months`)."""
    rows = _neighbour_rows(
        "months", "month", MONTH_NAMES, MONTH_AFTER_PHRASINGS, MONTH_BEFORE_PHRASINGS, "month"
    )
    for index, month in enumerate(MONTH_NAMES, start=1):
        rows += phrasing_rows(
            "months",
            f"position/{index}",
            f"month/{month}",
            MONTH_POSITION_PHRASINGS,
            [month],
            "month",
            ordinal=ordinal(index),
            n=index,
        )
    return rows


def format_amount(value: Fraction) -> str:
    """An exact decimal: 350, 3.5, 0.25 (the value must have a finite decimal expansion)."""
    if value.denominator == 1:
        return str(value.numerator)
    text = str(Decimal(value.numerator) / Decimal(value.denominator))
    if Fraction(text) != value:
        raise ValueError(f"{value} has no short exact decimal")
    return text


def unit_rows() -> list[dict]:
    """Exact metric and time conversions, each amount asked both ways (`unit_conversions`)."""
    rng = random.Random(GENERATED_SEED + 3)
    rows: list[dict] = []
    for key, large, small, factor in UNIT_CONVERSIONS:
        for amount in sorted(rng.sample(UNIT_AMOUNTS, UNIT_VALUES_PER_CONVERSION)):
            big, little = format_amount(amount), format_amount(amount * factor)
            group = f"unit/{key}/{big}"
            rows += phrasing_rows(
                "unit_conversions",
                f"{key}/{big}",
                group,
                UNIT_PHRASINGS,
                [little],
                "numeric",
                to=small,
                x=big,
                frm=large,
            )
            rows += phrasing_rows(
                "unit_conversions",
                f"{key}/{big}/back",
                group,
                UNIT_PHRASINGS,
                [big],
                "numeric",
                to=large,
                x=little,
                frm=small,
            )
    return rows


def square_rows() -> list[dict]:
    """Squares of 2..100 (`squares`) and square roots of those squares (`square_roots`)."""
    rows: list[dict] = []
    for n in SQUARE_BASES:
        group = f"arithmetic/{n},{n}"
        rows += phrasing_rows(
            "squares", str(n), group, SQUARE_PHRASINGS, [str(n * n)], "numeric", n=n
        )
        rows += phrasing_rows(
            "square_roots",
            str(n * n),
            group,
            SQUARE_ROOT_PHRASINGS,
            [str(n)],
            "numeric",
            square=n * n,
        )
    return rows


def generated_rows() -> list[dict]:
    """Every generated row, in a fixed order (fresh dicts and lists on every call)."""
    return (
        roman_rows()
        + number_word_rows()
        + counting_rows()
        + weekday_rows()
        + letter_rows()
        + month_rows()
        + unit_rows()
        + square_rows()
    )
