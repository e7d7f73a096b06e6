"""The Slicer module's widget (the Qt layer, ``QuantitativeMaps.py``) driven as a clinician uses it,
headless: slicer-core's MRML scene, fake Qt widgets built from the module's .ui file
(:mod:`slicer_qt_fakes`), and the real server. Connect, pick a task, method and input, Run, and the
map arrives in the scene over the anatomy with its units; bad input and refused consent send
nothing; the selections survive in the scene's parameter node."""

from __future__ import annotations

import importlib
import json
import sys
import time

import nibabel as nib
import numpy as np
import pytest

from conftest import REPO, SAMPLE
from slicer_qt_fakes import install

pytest.importorskip("slicer", reason="slicer-core (Slicer's MRML without Qt) is not installed")
pytestmark = pytest.mark.server
MODULE_DIR = REPO / "slicer_extension" / "QuantitativeMaps"


@pytest.fixture
def widget(monkeypatch):
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    slicer, dialogs = install(monkeypatch, MODULE_DIR)
    sys.modules.pop("QuantitativeMaps", None)
    module = importlib.import_module("QuantitativeMaps")
    w = module.QuantitativeMapsWidget()
    w.setup()
    yield w, slicer, dialogs
    w.cleanup()
    sys.modules.pop("QuantitativeMaps", None)


def _field_block(half=14):
    """A central block of the sample QSM study's local field (ppm) with its own affine."""
    st = nib.load(SAMPLE / "studies" / "sub-1000_qsm.nii.gz")
    d = st.get_fdata(dtype=np.float32)
    d = d[..., 0] if d.ndim == 4 else d
    c = [n // 2 for n in d.shape[:3]]
    box = tuple(slice(x - half, x + half) for x in c)
    aff = st.affine.copy()
    aff[:3, 3] += aff[:3, :3] @ np.array([b.start for b in box])
    return d[box], aff


def _wait(w, seconds=120):
    deadline = time.time() + seconds
    while w.job is not None and time.time() < deadline:
        w.onPoll()  # what the QTimer does every 200 ms
        time.sleep(0.05)
    assert w.job is None, "the job did not finish"


def test_connect_run_and_see_the_map_over_anatomy(widget, server, tmp_path):
    w, slicer, dialogs = widget
    url, _ = server
    assert not w.ui.runButton.enabled and w.ui.serverUrlEdit.text.startswith("http")  # nothing to run yet
    w.ui.serverUrlEdit.text = url
    w.ui.connectButton.click()
    assert w.ui.runButton.enabled and "Connected" in w.ui.statusLabel.text, w.ui.statusLabel.text
    assert {"oef", "qsm", "qsm_raw", "pvc", "synthetic_ct", "synthetic_mr"} <= {it[1] for it in w.ui.taskCombo.items}

    w.ui.taskCombo.setCurrentIndex(w.ui.taskCombo.findData("qsm"))
    assert w.ui.methodCombo.currentData == "qsmnet"  # the server's default method
    assert [slot.key for slot, _ in w.inputSelectors] == ["field"]
    w.ui.methodCombo.setCurrentIndex(w.ui.methodCombo.findData("tkd"))

    field, aff = _field_block()
    node = w.logic.scene.add_volume(field, aff, "field")
    anatomy = w.logic.scene.add_volume(np.abs(field) + 1.0, aff, "anatomy")
    w.inputSelectors[0][1].setCurrentNode(node)
    w.ui.anatomySelector.setCurrentNode(anatomy)

    # refused consent: nothing is sent
    dialogs.question_answer = "No"
    w.ui.runButton.click()
    assert w.job is None and "consent not given" in w.ui.statusLabel.text and len(dialogs.questions) == 1
    # consent given: the job runs in the background and the map is loaded
    dialogs.question_answer = "Yes"
    w.ui.runButton.click()
    assert w.job is not None and w.ui.cancelButton.enabled and not w.ui.runButton.enabled
    _wait(w)
    assert not dialogs.errors, dialogs.errors
    assert w.ui.statusLabel.text.startswith("Loaded 1 map(s)"), w.ui.statusLabel.text
    (chi,) = w.resultNodes
    assert chi.GetName().startswith("field_qsm chi") or "chi" in chi.GetName()
    got = slicer.util.arrayFromVolume(chi).transpose(2, 1, 0)  # (k, j, i) -> (i, j, k)
    mask = field != 0
    assert got.shape == field.shape and np.all(got[~mask] == 0) and np.abs(got[mask]).max() > 0
    # TKD of the same field computed here by the task's code: the widget sent the right volume and B0
    from qmri.classical.qsm_inversion import tkd
    from qmri.io.multi_echo import b0_direction

    vs = np.linalg.norm(aff[:3, :3], axis=0)
    ref = np.asarray(tkd(field, mask, vs, b0_direction(aff)))
    assert np.linalg.norm(got[mask] - ref[mask]) / np.linalg.norm(ref[mask]) < 1e-3
    # over the anatomy, with a colour legend in units, and the window presets of the map
    comps = slicer.mrmlScene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    assert comps.GetNumberOfItems() >= 3
    for i in range(comps.GetNumberOfItems()):
        comp = comps.GetItemAsObject(i)
        assert comp.GetBackgroundVolumeID() == anatomy.GetID() and comp.GetForegroundVolumeID() == chi.GetID()
        assert comp.GetForegroundOpacity() == pytest.approx(0.6)
    assert "ppm" in w.ui.legendLabel.text and "colours" in w.ui.legendLabel.text
    w.ui.opacitySlider.value = 30
    assert comps.GetItemAsObject(0).GetForegroundOpacity() == pytest.approx(0.3)
    assert w.ui.windowCombo.count >= 1 and w.ui.windowCombo.itemData(0) == "default"

    # ROI statistics of the map in a segment drawn on the anatomy, exported as CSV
    from QuantitativeMapsLib.scene import affine_to_matrix, array_to_image

    labels = np.zeros(field.shape, np.int16)
    labels[10:18, 10:18, 10:18] = 1
    lab = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "rois")
    lab.SetAndObserveImageData(array_to_image(labels))
    lab.SetIJKToRASMatrix(affine_to_matrix(aff))
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "ROIs")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(lab, seg)
    w.ui.roiSegmentationSelector.setCurrentNode(seg)
    w.ui.roiStatisticsButton.click()
    inside = got[10:18, 10:18, 10:18]
    assert f"{inside.mean():.4g} +- " in w.ui.roiSummaryLabel.text and "ppm" in w.ui.roiSummaryLabel.text, w.ui.roiSummaryLabel.text
    dialogs.save_file = str(tmp_path / "roi.csv")
    w.ui.roiExportButton.click()
    assert "ppm" in (tmp_path / "roi.csv").read_text()

    # a training case needs a reference map and a study id; nothing is sent without them
    w.ui.sendCaseButton.click()
    assert "select the reference map" in dialogs.errors[-1]
    w.ui.referenceSelector.setCurrentNode(chi)
    w.ui.caseIdEdit.text = "  "
    w.ui.sendCaseButton.click()
    assert "enter a study id" in dialogs.errors[-1] and w.job is None

    # the selections are kept in the scene's parameter node and come back after closing it
    state = w.state()
    assert state.get("task") == "qsm" and state.get("method") == "tkd" and state.get("server") == url
    # consent is remembered for this server only
    dialogs.questions.clear()
    w.ui.runButton.click()
    _wait(w)
    assert not dialogs.questions and w.ui.statusLabel.text.startswith("Loaded 1 map(s)")
    # a run cancelled at once: its result is discarded
    n_maps = slicer.mrmlScene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems()
    w.ui.runButton.click()
    w.ui.cancelButton.click()
    _wait(w)
    assert w.ui.statusLabel.text.startswith("Cancelled") and slicer.mrmlScene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems() == n_maps
    # closing the scene clears the results; the module's selections come back from a new parameter node
    slicer.mrmlScene.Clear()
    assert w.resultNodes == [] and w.ui.legendLabel.text == ""


def test_bad_input_is_named_and_nothing_is_sent(widget, server, tmp_path):
    w, slicer, dialogs = widget
    url, _ = server
    w.ui.serverUrlEdit.text = url
    w.ui.connectButton.click()
    w.ui.taskCombo.setCurrentIndex(w.ui.taskCombo.findData("qsm"))
    # no input volume selected
    w.ui.runButton.click()
    assert w.job is None and "select the input" in dialogs.errors[-1]
    field, aff = _field_block(8)
    w.inputSelectors[0][1].setCurrentNode(w.logic.scene.add_volume(field, aff, "field"))
    # acquisition metadata from a JSON file, or filled from the volume's geometry (user keys kept)
    side = tmp_path / "acq.json"
    side.write_text(json.dumps({"B0_dir": [0.0, 0.1, 0.995]}))
    dialogs.open_file = str(side)
    w.ui.loadSidecarButton.click()
    assert json.loads(w.ui.sidecarEdit.plainText) == {"B0_dir": [0.0, 0.1, 0.995]}
    w.ui.sidecarEdit.plainText = json.dumps({"note": "mine"})
    w.ui.fillSidecarButton.click()
    filled = json.loads(w.ui.sidecarEdit.plainText)
    assert filled["note"] == "mine" and filled["B0_dir"] == pytest.approx([0.0, 0.0, 1.0], abs=1e-6)  # the sample grid is axial
    # acquisition metadata that is not JSON, or not an object
    w.ui.sidecarEdit.plainText = "{B0_dir: [0, 0, 1]"
    w.ui.runButton.click()
    assert w.job is None and "not valid JSON" in dialogs.errors[-1]
    w.ui.sidecarEdit.plainText = json.dumps([1, 2])
    w.ui.runButton.click()
    assert w.job is None and "JSON object" in dialogs.errors[-1]
    assert not dialogs.questions  # consent was never asked: nothing was about to leave
    # a value the server refuses comes back as its message, not a crash
    w.ui.sidecarEdit.plainText = json.dumps({"B0_dir": [0, 0, 0]})
    w.ui.runButton.click()
    _wait(w)
    assert "B0_dir" in dialogs.errors[-1] and "not a direction" in dialogs.errors[-1], dialogs.errors[-1]
    assert w.ui.runButton.enabled and not w.ui.cancelButton.enabled
    # an unreachable server: the message says so and nothing is enabled
    w.ui.serverUrlEdit.text = "http://127.0.0.1:9"
    w.ui.connectButton.click()
    assert "Could not connect" in dialogs.errors[-1] and not w.ui.runButton.enabled


def test_send_a_training_case_then_retrain_and_watch_it(widget, server, model_dir):
    """The retrain panel as a clinician uses it: a volume and its reference map are sent as a training
    case (after consent), Start training submits it, and the polled status fills the progress bar
    until DONE; the Train button is off for a task that has no trainer."""
    from conftest import served_weights_moved_aside

    w, slicer, dialogs = widget
    url, studies = server
    w.ui.serverUrlEdit.text = url
    w.ui.connectButton.click()
    trainers = w.logic.client.trainers()
    untrainable = sorted(set(w.logic.client.tasks()) - set(trainers))
    assert "qsm" in trainers and untrainable
    w.ui.taskCombo.setCurrentIndex(w.ui.taskCombo.findData(untrainable[0]))
    assert not w.ui.trainButton.enabled
    w.ui.taskCombo.setCurrentIndex(w.ui.taskCombo.findData("qsm"))
    assert w.ui.trainButton.enabled

    src = nib.load(SAMPLE / "studies" / "sub-1001_qsm.nii.gz")
    ref = nib.load(SAMPLE / "studies" / "labels" / "final" / "sub-1001_qsm.nii.gz")
    field = src.get_fdata(dtype=np.float32)
    field = field[..., 0] if field.ndim == 4 else field
    w.inputSelectors[0][1].setCurrentNode(w.logic.scene.add_volume(field, src.affine, "field"))
    w.ui.referenceSelector.setCurrentNode(w.logic.scene.add_volume(ref.get_fdata(dtype=np.float32), ref.affine, "reference chi"))
    w.ui.sidecarEdit.plainText = (SAMPLE / "studies" / "sub-1001_qsm.json").read_text()  # tilted B0
    w.ui.caseIdEdit.text = "widget case/1"  # sanitised to a safe study id
    dialogs.question_answer = "Yes"
    w.ui.sendCaseButton.click()
    _wait(w)
    assert not dialogs.errors, dialogs.errors
    assert w.ui.statusLabel.text.startswith("Training case stored"), w.ui.statusLabel.text
    stored = json.loads((studies / "widget_case_1.json").read_text())
    assert stored["B0_dir"] == json.loads((SAMPLE / "studies" / "sub-1001_qsm.json").read_text())["B0_dir"]
    got = nib.load(studies / "labels" / "final" / "widget_case_1.nii.gz").get_fdata()
    assert np.allclose(got, ref.get_fdata(), atol=1e-6)  # the reference map arrived unchanged

    w.ui.epochsSpinBox.value = 1
    with served_weights_moved_aside(model_dir / "qsmnet" / "qsmnet.pt") as weights:
        w.ui.trainButton.click()
        assert w.ui.trainStatusLabel.text == "Training qsm: submitted" and w.trainTimer.active
        bars, deadline = [], time.time() + 600
        while w.trainTimer.active and time.time() < deadline:
            w.onTrainPoll()  # what the QTimer does
            if w.ui.progressBar.visible:
                bars.append((w.ui.progressBar.minimum, w.ui.progressBar.maximum, w.ui.progressBar.value))
            time.sleep(0.3)
        assert not w.trainTimer.active, w.ui.trainStatusLabel.text
        assert "qsm: DONE" in w.ui.trainStatusLabel.text, w.ui.trainStatusLabel.text
        assert w.ui.statusLabel.text.startswith("Training finished"), w.ui.statusLabel.text
        assert not w.ui.progressBar.visible and not dialogs.errors, dialogs.errors
        assert bars and all(lo == 0 and hi in (0, 1000) and 0 <= v <= 1000 for lo, hi, v in bars), bars
        assert weights.exists()  # published: the next Run uses it
    stats = w.logic.client.info(refresh=True)["train_stats"]["qsm"]
    assert "widget_case_1" in stats["train_studies"] + stats["val_studies"]


def test_regional_oef_of_segments_from_the_widget(widget, server):
    """OEF task, the sample study's echoes and QSM as inputs, a segment over its shifted territory:
    'Regional OEF' sends them (after consent) and shows the segment's OEF, its mirror's and their
    difference as a table and a summary; without a segmentation nothing is sent."""
    from scipy.ndimage import label as connected

    from QuantitativeMapsLib.scene import affine_to_matrix, array_to_image
    from qmri.io.study import LABEL_DIR

    w, slicer, dialogs = widget
    url, _ = server
    w.ui.serverUrlEdit.text = url
    w.ui.connectButton.click()
    w.ui.taskCombo.setCurrentIndex(w.ui.taskCombo.findData("oef"))
    st = nib.load(SAMPLE / "studies" / "sub-1000_oef.nii.gz")
    d = st.get_fdata(dtype=np.float32)
    echoes = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "echoes")
    echoes.SetAndObserveImageData(array_to_image(d[..., :8]))
    echoes.SetIJKToRASMatrix(affine_to_matrix(st.affine))
    qsm = w.logic.scene.add_volume(d[..., 8], st.affine, "qsm")
    w.inputSelectors[0][1].setCurrentNode(echoes)
    w.inputSelectors[1][1].setCurrentNode(qsm)
    w.ui.sidecarEdit.plainText = (SAMPLE / "studies" / "sub-1000_oef.json").read_text()
    w.ui.roiSegmentationSelector.setCurrentNode(None)
    w.ui.roiRegionalButton.click()
    assert "select a segmentation" in dialogs.errors[-1] and w.job is None

    mask = d[..., 8] != 0
    oef_true = 100 * (1 - nib.load(SAMPLE / "studies" / LABEL_DIR / "sub-1000_oef.nii.gz").get_fdata(dtype=np.float32)[..., 2] / 0.98)
    lab, _ = connected(mask & (oef_true > 50))
    territory = lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:]))
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "rois")
    node.SetAndObserveImageData(array_to_image(territory.astype(np.int16)))
    node.SetIJKToRASMatrix(affine_to_matrix(st.affine))
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "ROIs")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(node, seg)
    seg.GetSegmentation().GetSegment(seg.GetSegmentation().GetNthSegmentID(0)).SetName("territory")
    w.ui.roiSegmentationSelector.setCurrentNode(seg)
    dialogs.question_answer = "Yes"
    dialogs.errors.clear()
    w.ui.roiRegionalButton.click()
    _wait(w, 300)
    assert not dialogs.errors, dialogs.errors
    assert w.ui.statusLabel.text.startswith("Regional OEF of 1 segment(s)"), w.ui.statusLabel.text
    assert w.ui.roiSummaryLabel.text.startswith("territory: OEF ") and "mirror" in w.ui.roiSummaryLabel.text, w.ui.roiSummaryLabel.text
    tables = [t for t in slicer.util.getNodesByClass("vtkMRMLTableNode") if t.GetName().startswith("qmri regional OEF")]
    (table,) = tables
    assert table.GetNumberOfRows() == 1 and table.GetCellText(0, 0) == "territory"
    est, sd = float(table.GetCellText(0, 2)), float(table.GetCellText(0, 3))
    assert abs(est - oef_true[territory].mean()) < 2 * sd, (est, sd)  # measured over REST: 54.0 (sd 3.2) against 53.4
