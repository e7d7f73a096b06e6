"""The module's state on its parameter node: kept per task, saved with the scene and restored."""

from __future__ import annotations

import sys

import pytest

from conftest import REPO

pytest.importorskip("slicer", reason="slicer-core (Slicer's MRML without Qt) is not installed")
sys.path.insert(0, str(REPO / "slicer_extension" / "QuantitativeMaps"))

from QuantitativeMapsLib.parameters import ModuleState, parameter_node  # noqa: E402


def test_selections_survive_saving_and_loading_the_scene(tmp_path):
    import slicer

    scene = slicer.vtkMRMLScene()
    echoes = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "mGRE")
    qsm = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "QSM")
    t1 = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "T1w")
    rois = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "ROIs")
    state = ModuleState(parameter_node(scene))
    assert parameter_node(scene) is state.node  # a singleton
    state.set("server", "http://127.0.0.1:8000")
    state.set("task", "oef")
    state.set("method", "qq_fit")
    state.set("sidecar", '{"echo_times_ms": [4.5, 9.5], "note": "a;b:c"}')
    state.set_inputs("oef", [echoes, qsm])
    state.set_inputs("pvc", [qsm, None])
    state.set_node("anatomy", t1)
    state.set_node("segmentation", rois)
    scene.SetURL(str(tmp_path / "study.mrml"))
    assert scene.Commit()

    again = slicer.vtkMRMLScene()
    again.SetURL(str(tmp_path / "study.mrml"))
    assert again.Import()
    restored = ModuleState(parameter_node(again))
    assert restored.get("task") == "oef" and restored.get("method") == "qq_fit"
    assert restored.get("sidecar") == '{"echo_times_ms": [4.5, 9.5], "note": "a;b:c"}'
    assert [n.GetName() for n in restored.inputs("oef", 2)] == ["mGRE", "QSM"]
    assert restored.inputs("pvc", 2)[0].GetName() == "QSM" and restored.inputs("pvc", 2)[1] is None
    assert restored.get_node("anatomy").GetName() == "T1w" and restored.get_node("segmentation").GetName() == "ROIs"
    assert restored.get("map", "all") == "all"  # unset: the default

    restored.set_inputs("oef", [qsm])  # fewer slots than before: the old second one is cleared
    assert restored.inputs("oef", 2)[1] is None
    with pytest.raises(KeyError, match="unknown parameter"):
        restored.set("password", "x")
