"""The terminal results table of `calibtune run`."""

from __future__ import annotations

from calibtune.pipeline import results_table


def test_results_table_shows_values_deltas_and_missing():
    metrics = {
        "n_test": 1000,
        "accuracy": 0.5,
        "answer_agreement": 0.995,
        "methods": {
            "base/ptrue": {"ece": 0.2, "brier": 0.3, "auroc": None},
            "tuned/ptrue": {"ece": 0.05, "brier": 0.2, "auroc": 0.7},
        },
        "deltas": {"ece": {"value": -0.15, "ci95": [-0.17, -0.13]}},
    }
    lines = results_table(metrics).splitlines()
    assert lines[2].startswith("| ece | 0.200 | 0.050 | -0.150 [-0.170, -0.130] |")
    assert lines[4].startswith("| auroc | n/a | 0.700 |")
    assert lines[3].endswith("| n/a (not computed) |")  # brier delta absent
    assert "0.995" in lines[-1]


def test_atomic_write_gives_usual_permissions_and_no_leftovers(tmp_path):
    import os
    import stat

    import pytest

    from calibtune.io import atomic_path, write_text_atomic

    write_text_atomic(tmp_path / "out.txt", "hello")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o666 & ~umask
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "half.txt") as tmp:
        tmp.write_text("partial")
        raise RuntimeError("crash mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    import pytest

    from calibtune.io import atomic_dir

    target = tmp_path / "adapter"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "weights").write_text("half of v2")
        raise RuntimeError("crash mid-write")
    assert (target / "weights").read_text() == "v1"
    with atomic_dir(target) as tmp:
        (tmp / "other").write_text("v3")
    assert sorted(p.name for p in target.iterdir()) == ["other"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no temp or .old dirs


def test_provenance_records_the_commit_the_process_started_with(tmp_path, monkeypatch):
    """A commit made in the checkout while a long stage runs must not be what its outputs say
    produced them: the commit is read once, when the stage starts."""
    import subprocess

    from calibtune import runtime

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    git("init", "-q")
    git("commit", "-q", "--allow-empty", "-m", "first")
    first = git("rev-parse", "HEAD")
    read_commit = runtime.git_commit
    monkeypatch.setattr(runtime, "git_commit", lambda: read_commit(tmp_path))
    runtime.commit_at_start.cache_clear()
    assert runtime.commit_at_start() == first
    git("commit", "-q", "--allow-empty", "-m", "second")
    assert git("rev-parse", "HEAD") != first
    assert runtime.provenance()["git_commit"] == first
    runtime.commit_at_start.cache_clear()


def test_jsonl_rows_carry_the_line_an_editor_shows_and_probabilities_are_checked(tmp_path):
    import math

    import pytest

    from calibtune.errors import InputError
    from calibtune.io import check_probability, read_jsonl, read_jsonl_numbered

    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"a": 2}\n', encoding="utf-8")
    assert read_jsonl_numbered(path) == [(1, {"a": 1}), (4, {"a": 2})]
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    path.write_text('{"a": 1}\n\n[2]\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"rows\.jsonl:3"):
        read_jsonl_numbered(path)
    assert check_probability(path, 2, "confidence", 1) == 1.0
    assert isinstance(check_probability(path, 2, "confidence", 1), float)
    for bad in (True, -0.01, 1.01, math.nan, "0.5", None):
        with pytest.raises(InputError, match=r"rows\.jsonl:7: field 'p'.*in \[0, 1\]"):
            check_probability(path, 7, "p", bad)
