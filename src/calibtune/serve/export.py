"""`calibtune export`: ship a tuned checkpoint as one plain Hugging Face model directory.

    calibtune export run_dir=<pipeline run dir>            # adapter from <run_dir>/train
    calibtune export serve.adapter=<train dir> serve.export.output_dir=<dir>

The directory holds the adapter merged into the base weights (safetensors, `merge_and_unload`),
the tokenizer, `calibtune.json` (prompt templates, query words, the fitted post-hoc
calibrator as plain params, per-domain when the eval fitted them, and the answer / retrieve /
escalate policy) and a model card README.md with the eval deltas. It loads with
plain `transformers` (`AutoModelForCausalLM.from_pretrained(dir)`), and with
`calibtune.Scorer.from_pretrained(dir)` for calibrated confidences. An activated LoRA
(method=alora) cannot be merged (it acts only on the query's tokens): the directory then holds
the base weights and the adapter in `adapter/`, loaded with PEFT on top of them. A probe
(method=probe) leaves the model unchanged: the base weights, and the head's two files in
`adapter/`, which `Scorer.from_pretrained` applies. What is written is the method's
(`calibtune.models.methods`: `save_export`, `unmerged_export`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from calibtune import __version__
from calibtune.config import check_config
from calibtune.errors import InputError
from calibtune.eval.report import headline_table, markdown_table
from calibtune.io import atomic_dir, write_json_atomic, write_text_atomic
from calibtune.models.loading import load_tokenizer, model_fingerprint
from calibtune.models.methods import ALORA, ALORA_HEAD, LORA, PROBE, method_named
from calibtune.runtime import is_rank_zero, provenance
from calibtune.serve.score import (
    ADAPTER_SUBDIR,
    SERVE_CONFIG,
    adapter_dir,
    load_tuned_model,
    resolve_calibrator,
    resolve_policy,
)

log = logging.getLogger(__name__)

CARD_METRICS = ("ece", "smooth_ece", "brier", "nll", "auroc", "aurc")


def read_eval_metrics(path: str | os.PathLike | None) -> dict | None:
    """The eval stage's metrics.json, or None when there is none (the card then says so)."""
    if path is None or not Path(path).is_file():
        log.warning("no eval metrics at %s: the model card will have no deltas", path)
        return None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as err:
        raise InputError(path, None, None, f"invalid JSON ({err})") from None


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "n/a"


def delta_table(metrics: dict) -> str:
    """Markdown table: base and tuned `ptrue` metrics and the tuned-minus-base delta with its CI."""
    methods = metrics.get("methods", {})
    present = {n for m in ("base/ptrue", "tuned/ptrue") for n in methods.get(m, {})}
    names = tuple(n for n in CARD_METRICS if n in present or n in metrics.get("deltas", {}))
    return markdown_table(headline_table(metrics, names))


# What the model card says an export is, and how to load its adapter, by method (templates of
# {base_name} and {subdir}); a method without its own text ships as a merged model.
CARD_TEXT = {
    LORA: (
        "{base_name} with a calibtune LoRA adapter merged into its weights. Ask it whether a "
        'proposed answer is correct and the probability of "yes" is a calibrated probability '
        "that the answer is right. The weights answer questions as the base model does.",
        "",
    ),
    PROBE: (
        "{base_name}, unchanged, and a calibtune probe head (`{subdir}/`) that reads the "
        "model's hidden state (the layer `probe_config.json` names) at the end of the "
        "uncertainty query asked after its answer (and, where `answer_signals` is true, the "
        "model's probabilities of the answer's tokens) and gives a calibrated probability "
        "that the answer is right. The head is "
        "applied by `calibtune.Scorer`.",
        "",
    ),
    ALORA: (
        "{base_name} and a calibtune activated-LoRA adapter (`{subdir}/`). The adapter acts "
        "only on the tokens of the uncertainty query, so the model answers exactly as the "
        "base model does; after its answer, ask whether the answer is correct and the "
        'probability of "yes" is a calibrated probability that the answer is right.',
        "from peft import PeftModel\n"
        'model = PeftModel.from_pretrained(model, "<this dir>/{subdir}")\n',
    ),
    ALORA_HEAD: (
        "{base_name}, a calibtune activated-LoRA adapter and a head (`{subdir}/`). The adapter "
        "acts only on the tokens of the uncertainty query, so the model answers exactly as the "
        "base model does; after its answer, the head reads a hidden state (the layer "
        "`probe_config.json` names) at the end of "
        "the uncertainty query (adapter on) and gives a calibrated probability that the answer "
        "is right. Adapter and head are applied by `calibtune.Scorer`.",
        "",
    ),
}


def model_card(base_name: str, serve_config: dict, metrics: dict | None) -> str:
    """The README.md of an export: what it is, how to load it, how to score, the eval deltas."""
    calibrator = serve_config.get("calibrator")
    if metrics:
        n_test, accuracy = metrics.get("n_test"), metrics.get("accuracy")
        results = (
            f"On the held-out test split (n = {n_test}, answer accuracy {_fmt(accuracy)}), "
            "the confidence `P(yes)/(P(yes)+P(no))` of the uncertainty query, base model vs this "
            "tuned model (paired bootstrap 95 % intervals):\n\n" + delta_table(metrics)
        )
    else:
        results = "No eval metrics were given at export time (run `calibtune eval` first)."
    prompt = serve_config["prompt"]
    followup = prompt.get("query_style") == "followup"
    query = prompt["followup_template"] if followup else prompt["query_template"]
    if followup:
        query += " (a new user turn after the model's answer)"
    subdir = serve_config.get("adapter_subdir")
    method = method_named(serve_config.get("adapter_kind") or LORA.name)
    intro, load_adapter = CARD_TEXT.get(method, CARD_TEXT[LORA])
    intro = intro.format(base_name=base_name, subdir=subdir)
    load_adapter = load_adapter.format(subdir=subdir)
    return f"""---
library_name: transformers
base_model: {base_name}
tags: [calibtune, calibration, uncertainty]
---

# Calibration-tuned {base_name}

{intro}

## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("<this dir>")
tokenizer = AutoTokenizer.from_pretrained("<this dir>")
{load_adapter}```

Calibrated confidences (the query prompt and calibrator in `{SERVE_CONFIG}` applied for you):

```python
import calibtune
scorer = calibtune.Scorer.from_pretrained("<this dir>")
questions = ["What is the capital of France?"]
answers = scorer.answer(questions)  # the model's own answers: the confidence is about those
scorer.score(questions, answers, domains=["capitals"])
```

With `domains`, a row of a domain the eval fitted a map for gets that map; other rows (and calls
without `domains`) get what the calibrator's `unseen` says (docs/production.md §1).

Uncertainty query: `{query}` (answer words
`{serve_config["prompt"]["query_yes"]}` / `{serve_config["prompt"]["query_no"]}`).
Post-hoc calibrator: {f"`{calibrator['name']}` (fitted on the val split)" if calibrator else "none"}.

## Results

{results}

Exported by calibtune {__version__} (git {serve_config.get("git_commit") or "unknown"}).
"""


def run_export(cfg: DictConfig) -> Path:
    """Merge the adapter into the base weights and write the export directory atomically."""
    check_config(cfg)
    output_dir = Path(cfg.serve.export.output_dir)
    adapter = adapter_dir(cfg.serve.adapter)
    calibrator = resolve_calibrator(cfg)
    metrics = read_eval_metrics(cfg.serve.export.metrics)
    query_model = load_tuned_model(cfg.model, adapter)
    method = query_model.method
    tokenizer = load_tokenizer(cfg.model)
    serve_config = {
        **provenance(),
        "base_model": model_fingerprint(cfg.model),
        "adapter": str(adapter.resolve()),
        "adapter_kind": method.name,
        "attn_implementation": cfg.model.get("attn_implementation") or "sdpa",
        "prompt": OmegaConf.to_container(cfg.prompt, resolve=True),
        "calibrator": {"name": cfg.serve.calibrator_name, "params": calibrator[0]}
        if calibrator
        else None,
        "adapter_subdir": ADAPTER_SUBDIR if method.unmerged_export else None,
        "policy": resolve_policy(cfg),
    }
    if not is_rank_zero():
        return output_dir
    with atomic_dir(output_dir) as tmp_dir:
        method.save_export(query_model, adapter, tmp_dir, ADAPTER_SUBDIR)
        tokenizer.save_pretrained(tmp_dir)
        write_json_atomic(tmp_dir / SERVE_CONFIG, serve_config)
        card = model_card(str(cfg.model.name_or_path), serve_config, metrics)
        write_text_atomic(tmp_dir / "README.md", card)
    print(f"exported {method.exported} to {output_dir}")
    return output_dir
