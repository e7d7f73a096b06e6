"""Training requests: checking a client's parameters, and the task history kept across restarts.

MONAI Label passes a training request's JSON straight to the trainer process, where a bad value
ends the task in ERROR long after the client was told it started; and its task list lives in the
server's memory, so a restart forgets every training. Here the parameters are checked against the
trainer's own defaults before anything starts (HTTP 422 naming the key), and finished tasks are
appended to ``train_tasks.json`` in the model folder. A running task carries the training
process's own progress (``progress``: stage, epoch of epochs, step of steps, loss, validation metric).
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from qmri.io.atomic import atomic_write_text
from qmri.training import progress as watch

#: Bounds of the numeric parameters every trainer shares (inclusive).
BOUNDS = {"max_epochs": (1, 10000), "steps_per_epoch": (1, 100000), "batch_size": (1, 256), "lr": (1e-8, 1.0), "patch": (8, 512), "crop": (8, 1024), "val_slices": (1, 4096), "torch_threads": (0, 256)}
DEVICE = re.compile(r"cpu|cuda(:\d{1,2})?|cuda if available")
GPUS = re.compile(r"all|\d{1,2}(,\d{1,2}){0,15}")
HISTORY = "train_tasks.json"
KEEP = 100


def _number(key: str, value: Any, default: Any) -> Any:
    want = type(default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (want is int and not float(value).is_integer()):
        raise HTTPException(status_code=422, detail=f"training parameter '{key}' must be {'an integer' if want is int else 'a number'}, got {json.dumps(value)[:40]}")
    value = want(value)
    if not math.isfinite(value):
        raise HTTPException(status_code=422, detail=f"training parameter '{key}' must be finite")
    lo, hi = BOUNDS.get(key, (0, math.inf))
    if not lo <= value <= hi:
        raise HTTPException(status_code=422, detail=f"training parameter '{key}' must lie in [{lo}, {hi}], got {value}")
    return value


def train_params(params: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    """``params`` checked against the trainer's ``defaults``: known keys, the defaults' types, bounds."""
    if not isinstance(params, dict):
        raise HTTPException(status_code=422, detail="the training request must be a JSON object of parameters")
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise HTTPException(status_code=422, detail=f"unknown training parameter(s) {', '.join(repr(str(k)[:40]) for k in unknown[:8])}; this trainer takes: {', '.join(sorted(defaults))}")
    out = {}
    for key, value in params.items():
        default = defaults[key]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise HTTPException(status_code=422, detail=f"training parameter '{key}' must be true or false, got {json.dumps(value)[:40]}")
        elif isinstance(default, (int, float)):
            value = _number(key, value, default)
        elif key == "device":
            if not isinstance(value, str) or not DEVICE.fullmatch(value):
                raise HTTPException(status_code=422, detail=f"training parameter 'device' must be cpu, cuda, cuda:N or 'cuda if available', got {json.dumps(value)[:40]}")
        elif key == "gpus":
            if not isinstance(value, str) or not GPUS.fullmatch(value):
                raise HTTPException(status_code=422, detail=f"training parameter 'gpus' must be 'all' or a list like '0,1', got {json.dumps(value)[:40]}")
        elif isinstance(default, str):
            if not isinstance(value, str) or len(value) > 64:
                raise HTTPException(status_code=422, detail=f"training parameter '{key}' must be a short string, got {json.dumps(value)[:40]}")
        out[key] = value
    return out


def finished_tasks(model_dir: Path, live: list[dict]) -> list[dict]:
    """Every training task known: the kept history, then the live ones; finished live tasks are
    added to the history file (atomically) so that they survive a restart."""
    path = Path(model_dir) / HISTORY
    try:
        kept = json.loads(path.read_text()) if path.exists() else []
        kept = kept if isinstance(kept, list) else []
    except (OSError, json.JSONDecodeError):
        kept = []
    known = {t.get("id") for t in kept if isinstance(t, dict)}
    live = [{**t, "details": list(t.get("details") or [])} for t in live]
    new = [t for t in live if t.get("id") not in known and t.get("status") in ("DONE", "ERROR", "STOPPED")]
    if new:
        kept = (kept + new)[-KEEP:]
        atomic_write_text(path, json.dumps(kept, indent=1, default=str))
    ids = {t.get("id") for t in kept}
    return kept + [t for t in live if t.get("id") not in ids]


def with_progress(task: dict, trainers: dict) -> dict:
    """``task`` with ``progress`` (:func:`qmri.training.progress.read`) while it is SUBMITTED or
    RUNNING: the file its trainer writes, if it was started by this task (not a stale one)."""
    if not isinstance(task, dict) or task.get("status") not in ("SUBMITTED", "RUNNING"):
        return task
    trainer = trainers.get(str((task.get("request") or {}).get("model")))
    path = getattr(trainer, "progress_path", None)
    if path is None:
        return task
    try:
        since = datetime.strptime(str(task.get("start_ts")), "%Y-%m-%d %H:%M:%S").timestamp() - 2.0
    except ValueError:
        since = None
    state = watch.read(path, since=since)
    return {**task, "progress": state} if state else task
