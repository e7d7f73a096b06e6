"""ROI statistics per segment on quantitative maps (the module's table and CSV), headless with slicer-core."""

from __future__ import annotations

import csv
import sys

import nibabel as nib
import numpy as np
import pytest

from conftest import REPO

pytest.importorskip("slicer", reason="slicer-core (Slicer's MRML without Qt) is not installed")
sys.path.insert(0, str(REPO / "slicer_extension" / "QuantitativeMaps"))

from QuantitativeMapsLib.roi_statistics import segment_statistics, statistics_table, write_csv  # noqa: E402
from QuantitativeMapsLib.scene import MapSceneLogic, affine_to_matrix, array_to_image  # noqa: E402


def _segmentation(logic, labels, affine, names):
    import slicer

    lab = logic.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "rois")
    lab.SetAndObserveImageData(array_to_image(labels.astype(np.int16)))
    lab.SetIJKToRASMatrix(affine_to_matrix(affine))
    seg = logic.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "ROIs")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(lab, seg)
    s = seg.GetSegmentation()
    for i, name in enumerate(names):
        s.GetSegment(s.GetNthSegmentID(i)).SetName(name)
    return seg


def test_lesion_and_contralateral_roi_on_an_oef_phantom(tmp_path):
    """A 2 mm OEF map: 37 % tissue with a 12 % noise sd, an 18 % infarct-like sphere; ROIs drawn on a
    1 mm grid (as Segment Editor would on a finer anatomy) are resampled onto the map."""
    rng = np.random.default_rng(3)
    shape = (40, 40, 30)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = [-40, -40, -30]
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    lesion = np.linalg.norm(ijk - [12, 20, 15], axis=-1) <= 5  # 515 voxels, 4.1 ml
    oef = np.where(lesion, 18.0, 37.0) + rng.normal(0, 1.2, shape)
    logic = MapSceneLogic()
    (node,) = logic.load_result(nib.Nifti1Image(oef.astype(np.float32), aff), {"maps": [{"name": "OEF", "units": "%", "channel": 0}]}, "oef", "phantom")
    fine = np.diag([1.0, 1.0, 1.0, 1.0])
    fine[:3, 3] = aff[:3, 3] - 0.5  # 1 mm voxels covering the same box
    fijk = np.stack(np.meshgrid(*[np.arange(2 * n) for n in shape], indexing="ij"), -1)
    world = fijk + fine[:3, 3]
    labels = np.zeros(fijk.shape[:3], np.int16)
    labels[np.linalg.norm(world - (aff[:3, :3] @ [12, 20, 15] + aff[:3, 3]), axis=-1) <= 7.5] = 1  # drawn inside the 10 mm lesion
    mirror = aff[:3, :3] @ [28, 20, 15] + aff[:3, 3]
    labels[np.all(np.abs(world - mirror) <= 6, axis=-1)] = 2
    seg = _segmentation(logic, labels, fine, ["infarct", "contralateral"])

    rows = segment_statistics(seg, [node])
    by = {r["segment"]: r for r in rows}
    assert set(by) == {"infarct", "contralateral"} and all(r["units"] == "%" and r["map"] == "phantom OEF" for r in rows)
    inf, con = by["infarct"], by["contralateral"]
    assert inf["volume_ml"] == pytest.approx(4 / 3 * np.pi * 7.5**3 / 1000, rel=0.1)  # the sphere resampled onto 2 mm voxels
    assert abs(inf["mean"] - 18.0) < 1.5 and abs(inf["median"] - 18.0) < 1.5
    assert abs(con["mean"] - 37.0) < 0.3 and abs(con["sd"] - 1.2) < 0.2 and con["min"] < 37 < con["max"]
    assert con["volume_ml"] == pytest.approx(13**3 / 1000, rel=0.1)  # a 13 mm cube

    table = statistics_table(logic.scene, rows)
    assert table.GetNumberOfRows() == 2 and table.GetColumnName(5) == "Mean"
    assert table.GetColumnUnitLabel("Volume") == "ml"
    assert float(table.GetCellText(0, 5)) == pytest.approx(rows[0]["mean"], rel=1e-5)
    out = write_csv(rows, tmp_path / "rois.csv")
    lines = list(csv.reader(out.open()))
    assert lines[0][:5] == ["Segment", "Map", "Units", "Voxels", "Volume [ml]"] and len(lines) == 3
    assert lines[1][2] == "%" and float(lines[1][5]) == pytest.approx(rows[0]["mean"])


def test_empty_segment_and_bad_selection():
    logic = MapSceneLogic()
    aff = np.eye(4)
    node = logic.add_volume(np.ones((6, 6, 6), np.float32), aff, "m")
    labels = np.zeros((6, 6, 6), np.int16)
    labels[0, 0, 0] = 1
    seg = _segmentation(logic, labels, aff, ["dot"])
    far = aff.copy()
    far[:3, 3] = [100, 100, 100]
    node_far = logic.add_volume(np.ones((6, 6, 6), np.float32), far, "far")
    rows = segment_statistics(seg, [node, node_far])
    assert rows[0]["voxels"] == 1 and rows[0]["mean"] == 1.0 and rows[0]["sd"] == 0.0
    assert rows[1]["voxels"] == 0 and rows[1]["mean"] is None  # the segment lies outside that map
    with pytest.raises(ValueError, match="select a segmentation"):
        segment_statistics(None, [node])
    with pytest.raises(ValueError, match="not in"):
        segment_statistics(seg, [node], ["nope"])


def test_segments_become_the_label_map_the_regional_analysis_takes(tmp_path):
    """Segments drawn on a 1 mm grid are written as one integer label map on the OEF input's 2 mm grid
    (its affine), and the server's regional answer becomes a table named by segment."""
    from QuantitativeMapsLib.roi_statistics import REGION_COLUMNS, regional_rows, regional_table, segments_label_map

    shape = (20, 20, 16)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = [-20, -20, -16]
    logic = MapSceneLogic()
    echo1 = logic.add_volume(np.ones(shape, np.float32), aff, "echo 1")
    fine = np.diag([1.0, 1.0, 1.0, 1.0])
    fine[:3, 3] = aff[:3, 3] - 0.5
    labels = np.zeros((40, 40, 32), np.int16)
    labels[4:12, 4:12, 4:12] = 1  # an 8 mm cube: 4 x 4 x 4 voxels at 2 mm
    labels[24:36, 10:20, 6:14] = 2
    seg = _segmentation(logic, labels, fine, ["core", "penumbra"])
    names = segments_label_map(seg, echo1, tmp_path / "labels.nii.gz")
    assert names == {1: "core", 2: "penumbra"}
    img = nib.load(tmp_path / "labels.nii.gz")
    out = np.asarray(img.dataobj)
    assert out.shape == shape and np.allclose(img.affine, aff) and out.dtype == np.int16
    assert (out == 1).sum() == 64 and (out == 2).sum() == 6 * 5 * 4 and set(np.unique(out)) == {0, 1, 2}
    regions = [
        {"label": 1, "OEF": 14.0, "OEF_sd": 4.0, "ci95": [6.2, 21.8], "n_voxels": 64, "informative": True, "mirror": {"OEF": 40.0}, "difference": {"OEF": -26.0, "OEF_sd": 5.0, "ci95": [-35.8, -16.2]}},
        {"label": 2, "OEF": 40.0, "OEF_sd": 14.0, "ci95": [12.6, 67.4], "n_voxels": 120, "informative": False, "mirror": None},
    ]
    rows = regional_rows(regions, names)
    assert [r["segment"] for r in rows] == ["core", "penumbra"] and rows[1]["mirror"] is None
    table = regional_table(logic.scene, rows)
    assert table.GetNumberOfRows() == 2 and table.GetColumnName(2) == "OEF" and table.GetColumnUnitLabel("OEF") == "%"
    assert table.GetCellText(0, len(REGION_COLUMNS) - 1) == "-35.8 to -16.2" and table.GetCellText(1, 6) == ""
    empty = _segmentation(logic, np.zeros((40, 40, 32), np.int16) + np.pad(np.ones((1, 1, 1), np.int16), ((0, 39), (0, 39), (0, 31))), fine, ["dot"])
    far = logic.add_volume(np.ones((4, 4, 4), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]) + np.array([[0, 0, 0, 500]] * 3 + [[0, 0, 0, 0]]), "far away")
    with pytest.raises(ValueError, match="covers no voxel|no segment"):
        segments_label_map(empty, far, tmp_path / "none.nii.gz")
