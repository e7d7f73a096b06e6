"""Training progress for a watcher in another process: one small JSON file, replaced atomically.

The server starts each training in its own process (MONAI Label's background task), so the
server's ``GET /train/`` cannot see the loop's variables. The training process names a file with
:func:`set_sink`; the loop then calls :func:`report` with what it is doing (stage, epoch of
epochs, step of steps, running training loss, the last validation metric), and the server reads
the file back with :func:`read`. Without a sink, :func:`report` does nothing, so the command-line
trainings are unaffected.

Fields written (all optional but ``stage``, ``started`` and ``updated``): ``stage`` (a few words),
``epoch``/``epochs``, ``step``/``steps``, ``loss`` (running mean training loss of the epoch, the
recipe's own loss units), ``metric`` (the validation metric's name), ``value`` (its latest value),
``best`` (its best value so far), ``fraction`` (0..1 of the planned steps), ``started``/``updated``
(Unix seconds), ``pid``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_write_text

#: Least time between two writes, in seconds (forced reports are always written).
MIN_INTERVAL_S = 1.0

_SINK: dict[str, Any] = {"path": None, "last": 0.0, "state": {}}


def set_sink(path: str | Path | None) -> None:
    """Start writing progress to ``path`` (None stops); the state starts empty, ``started`` now."""
    _SINK["path"] = None if path is None else Path(path)
    _SINK["last"] = 0.0
    _SINK["state"] = {} if path is None else {"started": round(time.time(), 3), "pid": os.getpid()}


def discard() -> None:
    """Remove the sink's file and stop writing (for a process about to end without its ``finally``)."""
    path, _SINK["path"] = _SINK["path"], None
    if path is not None:
        Path(path).unlink(missing_ok=True)


def report(force: bool = False, **fields: Any) -> None:
    """Merge ``fields`` into the progress state and write it (at most once a second unless ``force``).

    Non-finite numbers are written as null (JSON has no NaN). A failed write is ignored: progress
    is a courtesy to the watcher and never ends a training."""
    path = _SINK["path"]
    if path is None:
        return
    state = _SINK["state"]
    for key, value in fields.items():
        state[key] = None if isinstance(value, float) and not math.isfinite(value) else value
    epoch, epochs, step, steps = (state.get(k) for k in ("epoch", "epochs", "step", "steps"))
    if all(isinstance(x, int) for x in (epoch, epochs, step, steps)) and epochs > 0 and steps > 0:
        state["fraction"] = round(min(1.0, ((epoch - 1) + step / steps) / epochs), 4)
    now = time.time()
    if not force and now - _SINK["last"] < MIN_INTERVAL_S:
        return
    state["updated"] = round(now, 3)
    try:
        atomic_write_text(path, json.dumps(state))
        _SINK["last"] = now
    except OSError:
        pass


def read(path: str | Path, since: float | None = None) -> dict | None:
    """The progress in ``path``, or None when there is none (or it is older than ``since``, Unix s)."""
    try:
        state = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    if since is not None and float(state.get("started") or 0) < since:
        return None
    return state
