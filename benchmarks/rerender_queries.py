"""Copy a labeled set with every query re-rendered by the current prompt config (responses,
labels and everything else unchanged), e.g. to turn restated queries into follow-up ones
without answering the questions again.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/rerender_queries.py <labeled set> <out dir> [overrides]
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from calibtune.config import compose
from calibtune.examples import MANIFEST, SPLITS, read_labeled_split, split_path
from calibtune.io import write_jsonl_atomic
from calibtune.models import load_tokenizer
from calibtune.models.confidence import render_query_prompt


def main() -> None:
    source, target, overrides = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    cfg = compose("data", overrides)
    tokenizer = load_tokenizer(cfg.model)
    target.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        rows = read_labeled_split(source, split)
        for row in rows:
            row["query"] = render_query_prompt(
                tokenizer, cfg.prompt, row["question"], row.get("choices"), row["response"]
            )
        write_jsonl_atomic(split_path(target, split), rows)
    shutil.copy(source / MANIFEST, target / MANIFEST)
    print(f"re-rendered {source} -> {target} (prompt.query_style={cfg.prompt.query_style})")


if __name__ == "__main__":
    main()
