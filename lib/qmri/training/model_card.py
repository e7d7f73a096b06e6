"""Model cards as data: ``metadata.json`` beside the weights, ``README.md`` rendered from it.

A model folder (``apps/qmri/model/<network>/``) holds:

* ``metadata.json`` (written by training; MONAI-bundle style): one entry per weights file with its
  version (training date), sha256, the training command, the recipe (the checkpoint's config),
  seeds and data, the best epoch's validation metrics, device and time, intended use and limits,
  and the card's descriptive fields (network, input/output, data, training...);
* ``README.md``: rendered from ``metadata.json`` by :func:`render` (never edited by hand);
* ``NOTES.md``: hand-written analysis and measured results, which no generator touches.

Training calls :func:`record`, which replaces only its own weights file's entry, so retraining one
network keeps the other entries of the folder and every hand-written note.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_write_text

METADATA_FILE = "metadata.json"
NOTES_FILE = "NOTES.md"
SCHEMA_VERSION = 1
INTENDED_USE = "Research on digital phantoms: quantitative-imaging method development and comparison with the classical reference methods."
LIMITS = "Trained only on digital phantoms generated from the MNI152 anatomy through the project's forward models; not validated on patient data; not for clinical use or diagnosis. Retrain on real data with the same trainers before any study use."


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load(folder: str | Path) -> dict[str, Any]:
    """The folder's metadata (empty skeleton when there is none yet)."""
    f = Path(folder) / METADATA_FILE
    if f.exists():
        return json.loads(f.read_text())
    return {"schema_version": SCHEMA_VERSION, "title": "", "summary": "", "models": {}}


def record(
    weights: str | Path,
    title: str,
    fields: dict[str, str],
    result: dict[str, Any] | None = None,
    command: str = "",
    summary: str = "",
    date: str | None = None,
) -> Path:
    """Store the card of ``weights`` (just trained) in its folder's ``metadata.json`` and re-render
    ``README.md``. ``fields``: ordered descriptive fields (name -> markdown text) for the card;
    ``result``: :func:`qmri.training.loop.train`'s result (history, best, config, seconds, device).
    Returns the README path."""
    weights = Path(weights)
    folder = weights.parent
    meta = load(folder)
    meta["title"] = title or meta.get("title", "")
    if summary:
        meta["summary"] = summary
    result = result or {}
    history = result.get("history") or []
    meta["models"][weights.name] = {
        "version": date or datetime.date.today().isoformat(),
        "sha256": sha256(weights) if weights.exists() else None,
        "size_mb": round(weights.stat().st_size / 1e6, 2) if weights.exists() else None,
        "command": command,
        "recipe": result.get("config", {}),
        "metrics": {"best": result.get("best", {}), "init": result.get("init_metrics"), "epochs_run": len(history)},
        "device": result.get("device"),
        "training_seconds": result.get("seconds"),
        "intended_use": INTENDED_USE,
        "limits": LIMITS,
        "fields": dict(fields),
    }
    atomic_write_text(folder / METADATA_FILE, json.dumps(meta, indent=1, default=str) + "\n")
    return render(folder)


def render(folder: str | Path) -> Path:
    """``README.md`` of ``folder`` from its ``metadata.json`` (and a pointer to ``NOTES.md``)."""
    folder = Path(folder)
    meta = load(folder)
    lines = [f"# {meta.get('title') or folder.name}", ""]
    lines += ["<!-- Generated from metadata.json by qmri.training.model_card.render: edit NOTES.md, not this file. -->", ""]
    if meta.get("summary"):
        lines += [meta["summary"], ""]
    models = meta.get("models", {})
    any_model = next(iter(models.values()), {})
    lines += [f"**Intended use**: {any_model.get('intended_use', INTENDED_USE)}", "", f"**Limits**: {any_model.get('limits', LIMITS)}", ""]
    if (folder / NOTES_FILE).exists():
        lines += [f"Measured results, status and analysis (hand-written): [`{NOTES_FILE}`]({NOTES_FILE}).", ""]
    for name, m in models.items():
        lines += [f"## `{name}`", ""]
        if m.get("command"):
            lines.append(f"- **Command**: `{m['command'].strip()}`")
        lines.append(f"- **Version**: {m.get('version')}; sha256 `{m.get('sha256')}`" + (f"; {m['size_mb']} MB" if m.get("size_mb") else ""))
        for k, v in m.get("fields", {}).items():
            lines.append(f"- **{k}**: {v}")
        lines.append("")
    path = folder / "README.md"
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


def fields_from_card(text: str) -> dict[str, str]:
    """The ``- **Name**: value`` bullets of a markdown card, in order (continuation lines joined)."""
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("- **") and "**" in s[4:]:
            k, _, v = s[4:].partition("**")
            key = k.strip().rstrip(":")
            fields[key] = v.lstrip(":").strip()
        elif key and line.startswith("  ") and s:
            fields[key] += " " + s
        else:
            key = None
    return fields
