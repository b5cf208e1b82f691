"""The probe head of `method=probe`: a small head on the frozen model's last hidden state at the
query's last token, saved as `probe.safetensors` + `probe_config.json` in an adapter dir."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from calibtune.errors import CalibtuneError

PROBE_WEIGHTS = "probe.safetensors"
PROBE_CONFIG = "probe_config.json"


class ProbeHead(torch.nn.Module):
    """Linear (hidden=0) or one-hidden-layer head: features [N, H] -> logit of correct [N]."""

    def __init__(self, in_features: int, hidden: int = 0, dropout: float = 0.0):
        super().__init__()
        self.in_features, self.hidden = in_features, hidden
        if hidden > 0:
            self.net = torch.nn.Sequential(
                torch.nn.Dropout(dropout),
                torch.nn.Linear(in_features, hidden),
                torch.nn.GELU(),
                torch.nn.Linear(hidden, 1),
            )
        else:
            self.net = torch.nn.Sequential(
                torch.nn.Dropout(dropout), torch.nn.Linear(in_features, 1)
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logit that the proposed answer is correct."""
        return self.net(features.float()).squeeze(-1)

    def two_way(self, features: torch.Tensor) -> torch.Tensor:
        """[no, yes] logits, so the query loss and metrics apply unchanged."""
        logit = self(features)
        return torch.stack([torch.zeros_like(logit), logit], dim=-1)


def is_probe_dir(path: str | Path) -> bool:
    """Whether `path` holds a saved probe head."""
    return (Path(path) / PROBE_CONFIG).is_file()


def load_probe(adapter_dir: str | Path) -> ProbeHead:
    """The probe head saved in `adapter_dir`, in eval mode."""
    adapter_dir = Path(adapter_dir)
    if not is_probe_dir(adapter_dir):
        raise CalibtuneError(f"{adapter_dir}: no {PROBE_CONFIG}; not a probe adapter")
    config = json.loads((adapter_dir / PROBE_CONFIG).read_text())
    head = ProbeHead(config["in_features"], config["hidden"])
    head.load_state_dict(load_file(adapter_dir / PROBE_WEIGHTS))
    return head.eval()
