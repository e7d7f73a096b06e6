"""Checkpoint files of every network: ``{"state_dict", "config": json}`` written atomically.

The networks layer owns the format (predictors load it; the training loop writes it), so that
inference never imports the training stack.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def save_checkpoint(path: str | Path, net: torch.nn.Module, config: dict) -> Path:
    """Write ``{"state_dict", "config": json}`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": net.state_dict(), "config": json.dumps(config)}, tmp)
    tmp.replace(path)  # atomic: an infer task never reads a half-written file
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict, dict]:
    """(state_dict, config) of a checkpoint written by :func:`save_checkpoint`."""
    ckpt = torch.load(path, map_location=device, weights_only=True)
    return ckpt["state_dict"], json.loads(ckpt["config"])
