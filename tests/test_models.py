"""The network table (qmri.models): every module, weights file, card and recipe it names exists."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from qmri import models
from qmri.networks.checkpoint import load_checkpoint
from qmri.tasks import registry
from qmri.training import model_card, replay

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", list(models.MODELS))
def test_each_network_entry_is_true(name):
    m = models.MODELS[name]
    for mod in m.modules.values():
        importlib.import_module(mod)
    # the package holds exactly the modules the table names (nothing a newcomer would miss)
    pkg = REPO / "lib" / "qmri" / "models" / name
    assert {p.stem for p in pkg.glob("*.py")} - {"__init__"} == {r for r, mod in m.modules.items() if mod.startswith(m.package + ".")}
    assert {p.stem for p in (pkg / "recipes").glob("*.json")} == set(m.recipes)
    ft = m.module("fine_tune")
    assert callable(ft.volumes) and callable(ft.fit) and ft.RECIPE in m.recipes and ft.DESCRIPTION and ft.METRIC
    assert set(m.recipes) <= set(replay.names())
    for r in m.recipes:
        assert replay.load(r)["task"] in m.train_command
    for path in m.weights_paths():
        load_checkpoint(path)  # loads
        card = model_card.load(path.parent)["models"][path.name]
        assert card["sha256"] == model_card.sha256(path), f"{path}: card and file disagree"
    assert (m.card_dir() / "README.md").is_file() and (m.card_dir() / "NOTES.md").is_file()


def test_every_task_network_is_in_the_table():
    """The registry's weights of each task are the table's, and every network task has an entry."""
    for task in registry.TASKS:
        w = registry.weights(task)
        files = set(w.values()) if isinstance(w, dict) else {w}
        listed = {p for m in models.for_task(task) for p in m.weights_paths()}
        assert files == listed, task


def test_qmri_models_prints_every_weights_file_with_its_sha(tmp_path):
    out = subprocess.run([sys.executable, "-m", "qmri.cli", "models", "--json"], capture_output=True, text=True, timeout=120, check=True).stdout
    rows = json.loads(out)
    assert len(rows) == sum(len(m.weights) for m in models.MODELS.values())
    assert all(r["sha256"] and len(r["sha256"]) == 64 and r["version"] for r in rows)
    missing = subprocess.run([sys.executable, "-m", "qmri.cli", "models", "--model-dir", str(tmp_path)], capture_output=True, text=True, timeout=120).stdout
    assert "MISSING" in missing
