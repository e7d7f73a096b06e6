"""Model cards as data: metadata.json beside the weights, README.md rendered from it, NOTES.md untouched."""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import REPO
from qmri.training import model_card as mc

MODELS = REPO / "apps" / "qmri" / "model"


def test_record_keeps_other_models_and_hand_written_notes(tmp_path):
    (tmp_path / "a.pt").write_bytes(b"weights a")
    (tmp_path / "b.pt").write_bytes(b"weights b")
    notes = "# notes\n\nMeasured by hand: C = 0.31.\n"
    (tmp_path / mc.NOTES_FILE).write_text(notes)
    res = {"config": {"lr": 3e-4, "seed": 1}, "best": {"epoch": 4, "val_nrmse": 0.41}, "history": [{}] * 6, "seconds": 60.0, "device": "cpu"}
    mc.record(tmp_path / "a.pt", "Two nets", {"Network": "U-Net"}, res, command="qmri train x --lr 3e-4", date="2026-12-05")
    readme = mc.record(tmp_path / "b.pt", "Two nets", {"Network": "CNN"}, dict(res, best={"epoch": 2}), command="qmri train y")
    meta = json.loads((tmp_path / mc.METADATA_FILE).read_text())
    assert set(meta["models"]) == {"a.pt", "b.pt"}
    a = meta["models"]["a.pt"]
    assert a["sha256"] == hashlib.sha256(b"weights a").hexdigest() and a["version"] == "2026-12-05"
    assert a["recipe"]["lr"] == 3e-4 and a["metrics"]["best"]["val_nrmse"] == 0.41 and a["metrics"]["epochs_run"] == 6
    assert "not for clinical use" in a["limits"]
    text = readme.read_text()
    assert "`qmri train x --lr 3e-4`" in text and "- **Network**: CNN" in text and a["sha256"] in text and "NOTES.md" in text
    assert (tmp_path / mc.NOTES_FILE).read_text() == notes  # never touched
    # retraining a replaces only its entry
    (tmp_path / "a.pt").write_bytes(b"weights a2")
    mc.record(tmp_path / "a.pt", "Two nets", {"Network": "U-Net 2"}, res, command="qmri train x")
    meta = json.loads((tmp_path / mc.METADATA_FILE).read_text())
    assert meta["models"]["b.pt"]["fields"] == {"Network": "CNN"} and meta["models"]["a.pt"]["sha256"] == hashlib.sha256(b"weights a2").hexdigest()


def test_fields_from_card_reads_bullets_with_continuations():
    text = "# T\n\n- **Command**: `qmri train`\n- **Served as**: network then CG,\n  which restores edges\n\nCurve: x\n"
    assert mc.fields_from_card(text) == {"Command": "`qmri train`", "Served as": "network then CG, which restores edges"}


@pytest.mark.parametrize("folder", ["qsmnet", "pvcnet", "pvcnet_fwhm", "synthnet", "oefnet"])
def test_shipped_cards_are_rendered_from_metadata_naming_the_shipped_weights(folder, tmp_path):
    d = MODELS / folder
    meta = json.loads((d / mc.METADATA_FILE).read_text())
    assert meta["models"]
    for name, m in meta["models"].items():
        assert m["sha256"] == hashlib.sha256((d / name).read_bytes()).hexdigest(), f"{folder}/{name} changed without its card"
        assert m["command"].startswith("qmri train") or "stage" in m["fields"].get("Date", ""), name
    assert (d / mc.NOTES_FILE).exists()
    copy = tmp_path / folder
    copy.mkdir()
    for f in (mc.METADATA_FILE, mc.NOTES_FILE):
        (copy / f).write_text((d / f).read_text())
    assert mc.render(copy).read_text() == (d / "README.md").read_text()  # README is the rendering of metadata.json
