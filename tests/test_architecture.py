"""The package layers of ``qmri`` (ARCHITECTURE.md): every import, lazy ones included, goes down."""

from __future__ import annotations

import re
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib" / "qmri"

#: Lowest first; a package may import only packages before it (and itself).
LAYERS = ("paths", "cli_args", "metrics", "io", "anatomy", "physics", "simulate", "classical", "networks", "training", "models", "tasks", "infer_cli", "bids_infer", "bench", "cli")

IMPORT = re.compile(r"^\s*from\s+(\.+[\w.]*|qmri[\w.]*)\s+import|^\s*import\s+(qmri[\w.]*)", re.M)


def resolved_imports(f: Path) -> list[str]:
    """The absolute ``qmri`` modules (or packages) that file ``f`` of ``lib/qmri`` imports."""
    parts = list(f.relative_to(LIB.parent).with_suffix("").parts)
    is_pkg = parts[-1] == "__init__"
    if is_pkg:
        parts = parts[:-1]
    out = []
    for rel, absolute in IMPORT.findall(f.read_text()):
        target = absolute or rel
        if target.startswith("."):
            dots = len(target) - len(target.lstrip("."))
            base = parts if is_pkg else parts[:-1]
            base = base[: len(base) - (dots - 1)]
            target = ".".join(base + ([target[dots:]] if target[dots:] else []))
        out.append(target)
    return out


def package_imports() -> dict[str, set[str]]:
    """Top-level package -> the other top-level packages it imports (absolute or relative)."""
    deps: dict[str, set[str]] = {}
    for f in LIB.rglob("*.py"):
        parts = f.relative_to(LIB).parts
        if len(parts) < 2 and parts[0] == "__init__.py":
            continue
        top = Path(parts[0]).stem
        for target in resolved_imports(f):
            t = target.split(".")
            if len(t) > 1 and t[1] != top:
                deps.setdefault(top, set()).add(t[1])
    return deps


def test_every_package_is_in_a_layer():
    packages = {p.stem if p.is_file() else p.name for p in LIB.iterdir() if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert packages == set(LAYERS), f"put new packages into LAYERS (and ARCHITECTURE.md): {packages ^ set(LAYERS)}"


def test_imports_go_down_the_layers():
    """No upward import and therefore no cycle between packages."""
    rank = {p: i for i, p in enumerate(LAYERS)}
    upward = [f"{src} -> {dst}" for src, dsts in package_imports().items() for dst in dsts if rank[dst] >= rank[src]]
    assert not upward, upward


def test_a_network_package_imports_no_other_network():
    """``qmri.models.<network>`` uses the shared layers only, never another network's package."""
    for pkg in (LIB / "models").iterdir():
        if not (pkg / "__init__.py").exists():
            continue
        for f in pkg.glob("*.py"):
            others = [t for t in resolved_imports(f) if t.startswith("qmri.models.") and not t.startswith(f"qmri.models.{pkg.name}")]
            assert not others, f"{pkg.name}/{f.name} imports {others}"
