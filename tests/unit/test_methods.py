"""The method objects (calibtune.models.methods): the registry's lookups by name, by adapter dir
and by loaded model, what each method tells the stages, and no string switch on the method
anywhere else in the library."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import get_args

import pytest
import torch

from calibtune.errors import ConfigError
from calibtune.models.methods import (
    ALORA,
    ALORA_HEAD,
    BASE,
    LORA,
    METHODS,
    PROBE,
    method_named,
    method_of_adapter,
    method_of_model,
)
from calibtune.models.probe import PROBE_CONFIG
from calibtune.schema import Method

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "calibtune"
NAMES = {"base", "probe", "lora", "alora", "alora_head"}


def test_the_registry_holds_every_configurable_method_once():
    assert set(get_args(Method)) == set(METHODS) - {"base"}  # base: eval.adapter=null
    assert all(method_named(name) is method for name, method in METHODS.items())
    with pytest.raises(ConfigError, match="method='qlora': choose one of"):
        method_named("qlora")


def test_an_adapter_dir_names_its_method(tmp_path):
    names = ("probe", "lora", "alora", "alora_head", "empty")
    probe, lora, alora, alora_head, empty = (tmp_path / n for n in names)
    for folder in (probe, lora, alora, alora_head, empty):
        folder.mkdir()
    (probe / PROBE_CONFIG).write_text("{}")
    (lora / "adapter_config.json").write_text(json.dumps({"alora_invocation_tokens": None}))
    for folder in (alora, alora_head):
        (folder / "adapter_config.json").write_text(json.dumps({"alora_invocation_tokens": [7]}))
    (alora_head / PROBE_CONFIG).write_text("{}")
    assert method_of_adapter(None) is BASE
    assert method_of_adapter(probe) is PROBE
    assert method_of_adapter(lora) is LORA
    assert method_of_adapter(alora) is ALORA
    assert method_of_adapter(alora_head) is ALORA_HEAD  # an aLoRA and a head in one dir
    assert method_of_adapter(empty) is LORA  # PEFT then says what is missing


def test_a_loaded_model_names_its_method():
    class Peft(torch.nn.Module):
        def __init__(self, tokens):
            super().__init__()
            config = type("Config", (), {"alora_invocation_tokens": tokens})()
            self.peft_config = {"default": config}

        def disable_adapter(self):
            raise NotImplementedError

    plain = torch.nn.Linear(2, 2)
    assert method_of_model(plain) is BASE
    assert method_of_model(plain, probe=torch.nn.Linear(2, 1)) is PROBE
    assert method_of_model(Peft(None)) is LORA
    assert method_of_model(Peft([3, 4])) is ALORA
    assert method_of_model(Peft([3, 4]), probe=torch.nn.Linear(2, 1)) is ALORA_HEAD


def test_what_each_method_tells_the_stages():
    assert not BASE.tuned and all(m.tuned for m in (PROBE, LORA, ALORA, ALORA_HEAD))
    can_change = [m.name for m in METHODS.values() if m.unchanged_answers is None]
    assert sorted(can_change) == ["base", "lora"]  # base: nothing tuned, nothing to compare
    assert [m for m in METHODS.values() if m.tuned_query_pass] == [ALORA_HEAD, ALORA, LORA]
    assert [m for m in METHODS.values() if m.tuned_full_ece] == [LORA]
    assert [m for m in METHODS.values() if m.activated] == [ALORA_HEAD, ALORA]
    assert [m for m in METHODS.values() if m.adapter_head] == [ALORA_HEAD]
    assert [m for m in METHODS.values() if m.unmerged_export] == [ALORA_HEAD, PROBE, ALORA]
    assert all(m.base_answer_tokens for m in (PROBE, ALORA, ALORA_HEAD))
    assert not LORA.base_answer_tokens


def method_name_switches(path: Path, root: Path = PACKAGE) -> list[str]:
    """Comparisons of anything with a method's name in `path` (`x == "lora"`, `x in ("lora",
    "alora")`), as 'file:line'."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Compare):
            continue
        for side in [node.left, *node.comparators]:
            values = side.elts if isinstance(side, ast.Tuple | ast.List | ast.Set) else [side]
            if any(isinstance(v, ast.Constant) and v.value in NAMES for v in values):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_no_string_switch_on_the_method_outside_the_method_objects():
    allowed = PACKAGE / "models" / "methods.py"
    found = [
        s for p in sorted(PACKAGE.rglob("*.py")) if p != allowed for s in method_name_switches(p)
    ]
    assert not found, f"ask the method object instead: {found}"


def test_the_switch_finder_finds_switches(tmp_path):
    source = tmp_path / "switch.py"
    source.write_text('if kind in ("lora", "alora"):\n    pass\nok = method.name == "probe"\n')
    assert method_name_switches(source, tmp_path) == ["switch.py:1", "switch.py:3"]
    source.write_text('if kind == "builtin" or fit == "logistic":\n    pass\n')
    assert method_name_switches(source, tmp_path) == []
