"""Files shipped inside the calibtune package, and the config interpolation that names them.

`${calibtune.package_file:data/styleshift.jsonl}` in a config resolves to the absolute path of
that file inside the installed package (`src/calibtune/` in a checkout, `site-packages/calibtune/`
from a wheel), so a packaged file works from any working directory. The resolver is registered
when `calibtune` is imported, before any config is composed.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE_FILE_RESOLVER = "calibtune.package_file"


def package_file(relative: str) -> str:
    """The absolute path of `relative` (e.g. "data/styleshift.jsonl") inside the package."""
    path = (PACKAGE_DIR / relative).resolve()
    if not path.is_relative_to(PACKAGE_DIR):
        raise ValueError(f"{relative!r} is outside the calibtune package")
    return str(path)


def register_resolvers() -> None:
    """Register `${calibtune.package_file:<path>}` with OmegaConf (once per process)."""
    if not OmegaConf.has_resolver(PACKAGE_FILE_RESOLVER):
        OmegaConf.register_new_resolver(PACKAGE_FILE_RESOLVER, package_file)
