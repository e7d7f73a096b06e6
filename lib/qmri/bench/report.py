"""Benchmark tables: rows of dicts -> markdown, JSON and a console print."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch


def device_label() -> str:
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


class Timer:
    def __enter__(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.t0


def save_report(out_dir: str | Path, name: str, sections: dict[str, tuple[list[dict], list[str]]], meta: dict[str, Any]) -> Path:
    """Write ``<name>.md`` and ``<name>.json`` with one table per section; print the markdown."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# {name}", "", f"Device: {meta.get('device', device_label())}. " + meta.get("note", ""), ""]
    for title, (rows, cols) in sections.items():
        md += [f"## {title}", "", markdown_table(rows, cols), ""]
    text = "\n".join(md)
    (out / f"{name}.md").write_text(text)
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "sections": {k: v[0] for k, v in sections.items()}}, indent=2, default=float))
    print(text)
    return out / f"{name}.md"
