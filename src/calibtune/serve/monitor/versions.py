"""Calibrator versions beside an export: promote a refitted calibrator as the next version,
roll back to an earlier one. The active one is the export's calibtune.json `calibrator`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from calibtune.errors import ConfigError
from calibtune.io import write_json_atomic

SERVE_CONFIG = "calibtune.json"
VERSIONS_DIR = "calibrator_versions"


def version_path(export_dir: Path, version: int) -> Path:
    """The file of one calibrator version beside the export."""
    return export_dir / VERSIONS_DIR / f"v{version:04d}.json"


def read_serve_config(export_dir: Path) -> dict:
    """The export's calibtune.json."""
    path = export_dir / SERVE_CONFIG
    if not path.is_file():
        raise ConfigError(
            f"monitor.export={export_dir}: no {SERVE_CONFIG} (a `calibtune export` dir)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def promote(export_dir: Path, result: dict, source: str = "refit") -> int:
    """Write a new calibrator (`result["params"]`, from the monitor's refit or `calibtune adapt`:
    `source`) as the next version and make it the active one."""
    serve = read_serve_config(export_dir)
    active = int(serve.get("calibrator_version", 0))
    if not version_path(export_dir, 0).is_file():
        write_json_atomic(version_path(export_dir, 0), {"calibrator": serve["calibrator"]})
    versions = sorted(int(p.stem[1:]) for p in (export_dir / VERSIONS_DIR).glob("v*.json"))
    version = versions[-1] + 1
    name = (serve.get("calibrator") or {}).get("name", "per_domain")
    calibrator = {"name": f"{name} ({source} v{version})", "params": result["params"]}
    record = {k: v for k, v in result.items() if k != "params"}
    write_json_atomic(
        version_path(export_dir, version),
        {"calibrator": calibrator, source: record, "parent": active},
    )
    write_json_atomic(
        export_dir / SERVE_CONFIG,
        {**serve, "calibrator": calibrator, "calibrator_version": version},
    )
    return version


def rollback(export_dir: str | os.PathLike, target: str | int) -> int:
    """Make an earlier calibrator version active (`previous`: the one before the active)."""
    export_dir = Path(export_dir)
    serve = read_serve_config(export_dir)
    active = int(serve.get("calibrator_version", 0))
    versions = sorted(int(p.stem[1:]) for p in (export_dir / VERSIONS_DIR).glob("v*.json"))
    if target == "previous":
        earlier = [v for v in versions if v < active]
        if not earlier:
            raise ConfigError(f"monitor.rollback=previous: version {active} is the first one")
        version = earlier[-1]
    else:
        version = int(target)
        if version not in versions:
            raise ConfigError(f"monitor.rollback={target}: versions are {versions}")
    calibrator = json.loads(version_path(export_dir, version).read_text())["calibrator"]
    write_json_atomic(
        export_dir / SERVE_CONFIG,
        {**serve, "calibrator": calibrator, "calibrator_version": version},
    )
    print(f"calibrator version {version} is active in {export_dir} (was {active})")
    return version
