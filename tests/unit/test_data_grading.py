"""Graders against hand-checked responses (the default model answers in sentences)."""

from __future__ import annotations

import functools

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


def test_hedge_rejected_only_when_it_offers_another_answer():
    question = "What is the capital of France?"
    assert grade("Maybe Paris.", ["Paris"], None, "exact", question) is True
    assert grade("Paris, or maybe Lyon.", ["Paris"], None, "exact", question) is False
    yen = ["Yen", "Japanese yen", "JPY"]
    assert grade("The yen, or JPY.", yen, None, "exact", "What is the currency of Japan?") is True
    assert grade("It is 12, or twelve.", ["12"], None, "numeric", "What is 7 + 5?") is True


@functools.cache
def builtin_facts() -> dict[str, dict]:
    """The first row of every built-in fact, by qid."""
    from calibtune.data.builtin import builtin_suite

    facts: dict[str, dict] = {}
    for row in builtin_suite():
        facts.setdefault(row["qid"], row)
    return facts


def builtin_answers(qid: str) -> tuple[list[str], str, str]:
    """Answers, grader and first question of one built-in fact."""
    row = builtin_facts()[qid]
    return row["answers"], row["grader"], row["question"]


@pytest.mark.parametrize(
    ("qid", "response", "correct"),
    [
        ("capital_country/CG", "It is the capital of the Democratic Republic of the Congo.", False),
        ("capital_country/CG", "It is the capital of the Republic of the Congo.", True),
        ("capital_country/CD", "Kinshasa is the capital of Congo.", False),
        ("capital_country/CD", "Kinshasa is the capital of the DRC.", True),
        ("capital_country/SD", "Khartoum is the capital of South Sudan.", False),
        ("capital_country/SD", "Khartoum is the capital of Sudan.", True),
        ("capital_country/GN", "Conakry is the capital of Guinea-Bissau.", False),
        ("capital_country/GN", "Conakry is the capital of Papua New Guinea.", False),
        ("capital_country/GN", "Conakry is the capital of Guinea.", True),
        ("capital_country/US", "Washington is the capital of the USA.", True),
        ("capital_country/US", "It is the capital of the U.S.", True),
        ("capital_country/TW", "Taipei is the capital of the Republic of China.", True),
        ("capital_country/CN", "Beijing is the capital of the Republic of China.", False),
        ("capital_country/CN", "Beijing is the capital of the People's Republic of China.", True),
        ("capital_country/KW", "Kuwait is a country in the Middle East.", True),
        ("capital_country/KW", "Kuwait City is a city in the Middle East.", False),
        ("capital_country/DK", "Denmark is a Nordic country bordering Norway.", True),
        ("capital_country/DK", "It is Denmark or Norway.", False),
        ("capitals/UA", "The capital of Ukraine is Kiev.", True),
        ("capitals/UA", "The capital of Ukraine is Kyiv.", True),
    ],
)
def test_country_and_capital_graders(qid, response, correct):
    answers, grader, question = builtin_answers(qid)
    assert grade(response, answers, None, grader, question) is correct


@pytest.mark.parametrize(
    ("response", "correct"),
    [
        ("Palembang is in Southeast Asia, specifically in Indonesia, Malaysia", False),
        ("Palembang is a city in Indonesia.", True),
        ("It is an Indonesian city.", True),
        ("It is located in the Indian Ocean.", False),
    ],
)
def test_country_grader_lists_and_demonyms(response, correct):
    question = "In which country is the city of Palembang?"
    answers = ["Indonesia", "Republic of Indonesia"]
    assert grade(response, answers, None, "country", question) is correct


def test_country_grader_blocks_seas_and_reads_demonyms_only_before_place_nouns():
    question = "In which country is the city of Qinhuangdao?"
    for response, correct in [
        ("Qinhuangdao is located in the East China Sea.", False),
        ("Qinhuangdao is a Chinese city.", True),
        ("Qinhuangdao is in China.", True),
        ("Qinhuangdao is famous for Chinese food.", False),
    ]:
        assert grade(response, ["China"], None, "country", question) is correct, response


@pytest.mark.parametrize(
    ("qid", "response", "correct"),
    [
        ("currencies/AU", "The currency of Australia is the US dollar.", False),
        ("currencies/AU", "The currency of Australia is the dollar.", False),
        ("currencies/AU", "The currency of Australia is the Australian dollar.", True),
        ("currencies/AU", "It is the AUD.", True),
        ("currencies/AG", "The currency of Antigua and Barbuda is the US dollar.", False),
        ("currencies/FR", "Euros", True),
        ("currencies/JP", "The yen, or JPY.", True),
        ("currencies/JP", "The yen, or the won.", False),
        ("currencies/EC", "Ecuador uses the US dollar.", True),
        ("currencies/BF", "It is the West African CFA franc.", True),
    ],
)
def test_currency_answers_name_the_countrys_currency(qid, response, correct):
    answers, grader, question = builtin_answers(qid)
    assert grade(response, answers, None, grader, question) is correct


@pytest.mark.parametrize(
    ("symbol", "name", "response", "correct"),
    [
        ("In", "Indium", "The chemical symbol of Indium is In.", True),
        ("In", "Indium", "In chemistry, indium is a metal.", False),
        ("Fe", "Iron", "In the periodic table, iron is Fe.", True),
        ("Be", "Beryllium", "It can be found in emeralds.", False),
        ("As", "Arsenic", "As a metalloid, arsenic is toxic.", False),
        ("As", "Arsenic", "The symbol of arsenic is As.", True),
        ("He", "Helium", "He is a noble gas.", False),
        ("He", "Helium", "Helium is a noble gas with the symbol He.", True),
        ("I", "Iodine", "I think it is Io.", False),
        ("I", "Iodine", "The symbol for iodine is I.", True),
        ("S", "Sulfur", "Sulfur's symbol is Su.", False),
        ("S", "Sulfur", "Sulfur's symbol is S.", True),
        ("Bh", "Bohrium", "The symbol of Bohrium is BH.", False),
        ("Fm", "Fermium", "The chemical symbol is fm.", False),
        ("Au", "Gold", "The symbol of gold is Au, not Ag.", False),
        ("Zr", "Zirconium", "Zirconium has the symbol Zr and atomic number 40.", True),
    ],
)
def test_symbol_grader_is_case_sensitive_and_skips_english_words(symbol, name, response, correct):
    question = f"What is the chemical symbol of {name}?"
    assert grade(response, [symbol], None, "symbol", question) is correct


@pytest.mark.parametrize(
    ("qid", "response", "correct"),
    [
        ("continents/ZA", "South Africa is part of Africa.", True),
        ("continents/ZA", "South Africa.", False),
        ("continents/SN", "Senegal is located in the African continent.", True),
        ("continents/RO", "Romania is one of the European countries.", True),
        ("continents/RU", "Russia is in Eurasia, which consists of Europe and Asia.", False),
        ("continents/CU", "Cuba is in the Americas, in the Caribbean.", False),
        ("continents/MG", "Madagascar is in the Caribbean, Africa, and the Americas.", False),
        ("continents/MG", "Madagascar is an island off Africa, far from the Americas.", True),
        ("continents/MG", "Madagascar is in Africa or Asia.", False),
        ("continents/AU", "Australia is part of Oceania.", True),
    ],
)
def test_continent_grader(qid, response, correct):
    answers, grader, question = builtin_answers(qid)
    assert grader == "continent"
    assert grade(response, answers, None, grader, question) is correct
