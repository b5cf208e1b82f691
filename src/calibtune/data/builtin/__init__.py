"""The built-in offline QA suite (30 domains): real facts that ship inside PyPI packages
(`facts`: geography, country codes, languages, currencies, subdivisions, chemical elements, and
generated arithmetic) and computed domains (`generated`: numerals, dates, letters, months,
units, squares). Every row has the format of `rows.phrasing_rows`.

The suite is the same on every machine: it depends on no config value.
"""

from __future__ import annotations

from functools import cache

from calibtune.data.builtin.facts import (
    arithmetic_rows,
    atomic_mass_rows,
    city_continent_rows,
    country_code_rows,
    currency_code_rows,
    element_rows,
    geography_rows,
    language_rows,
    neighbour_rows,
    subdivision_rows,
)
from calibtune.data.builtin.generated import generated_rows


@cache
def _builtin_rows() -> tuple[dict, ...]:
    """Every domain's rows, facts first, computed once."""
    return tuple(
        geography_rows()
        + element_rows()
        + arithmetic_rows()
        + country_code_rows()
        + neighbour_rows()
        + language_rows()
        + currency_code_rows()
        + subdivision_rows()
        + atomic_mass_rows()
        + city_continent_rows()
        + generated_rows()
    )


def builtin_suite() -> list[dict]:
    """All built-in QA rows, in a fixed order (fresh copies)."""
    return [
        dict(row, answers=list(row["answers"]), group=_copy_group(row["group"]))
        for row in _builtin_rows()
    ]


def _copy_group(group: str | list[str]) -> str | list[str]:
    """A row's group, a fresh list where it joins several (currency_codes)."""
    return list(group) if isinstance(group, list) else group
