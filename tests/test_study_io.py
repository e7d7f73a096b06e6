"""Study layout and the shared float-map writer."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from qmri.io.maps import QuantMap, select_maps, write_maps
from qmri.io.study import LABEL_DIR, StudyError, image_id, read_sidecar, write_study

AFFINE = np.array([[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])


def test_write_study_layout(tmp_path):
    img = np.random.default_rng(0).normal(size=(6, 7, 5, 9)).astype(np.float32)
    tgt = np.ones((6, 7, 5, 5), np.float32)
    p = write_study(tmp_path, "sub-000_oef", img, AFFINE, {"task": "oef", "echo_times_ms": [4.5]}, target=tgt)
    assert p == tmp_path / "sub-000_oef.nii.gz" and image_id(p) == "sub-000_oef"
    meta = read_sidecar(p, required=("task", "echo_times_ms"))
    assert meta["voxel_size_mm"] == [2.0, 2.0, 2.0]
    lab = nib.load(tmp_path / LABEL_DIR / "sub-000_oef.nii.gz")
    assert lab.shape == tgt.shape and np.allclose(lab.affine, AFFINE)


def test_sidecar_errors_name_the_problem(tmp_path):
    p = write_study(tmp_path, "a", np.zeros((2, 2, 2), np.float32), AFFINE, {"task": "qsm"})
    with pytest.raises(StudyError, match="lacks required key.*B0_dir"):
        read_sidecar(p, required=("B0_dir",))
    (tmp_path / "a.json").unlink()
    with pytest.raises(StudyError, match="missing sidecar a.json"):
        read_sidecar(p)
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(StudyError, match="not valid JSON"):
        read_sidecar(p)


def test_single_map_float32_with_input_geometry(tmp_path):
    data = np.linspace(-0.1, 0.2, 4 * 5 * 6).reshape(4, 5, 6)
    f, info = write_maps([QuantMap("chi", data, "ppm", (-0.2, 0.2), "susceptibility")], AFFINE, (4, 5, 6), tmp_path / "s.nii.gz")
    img = nib.load(f)
    assert img.get_data_dtype() == np.float32 and img.shape == (4, 5, 6)
    assert np.allclose(img.affine, AFFINE)
    np.testing.assert_allclose(img.get_fdata(), data, rtol=1e-6)
    assert info["maps"][0]["units"] == "ppm" and info["maps"][0]["display_range"] == [-0.2, 0.2]
    json.dumps(info)  # serialisable for the REST response


def test_multi_map_4d_and_selection(tmp_path):
    shape = (3, 4, 5)
    maps = [QuantMap("OEF", np.full(shape, 35.0), "%", (0, 80)), QuantMap("R2", np.full(shape, 15.0), "1/s", (0, 40))]
    f, info = write_maps(maps, AFFINE, shape, tmp_path / "s.nii.gz")
    img = nib.load(f)
    assert img.shape == (*shape, 2) and np.allclose(img.affine, AFFINE)
    assert np.allclose(img.get_fdata()[..., 1], 15.0)
    assert [(m["name"], m["channel"]) for m in info["maps"]] == [("OEF", 0), ("R2", 1)]
    one, info1 = write_maps(select_maps(maps, "R2"), AFFINE, shape, tmp_path / "r2.nii.gz")
    assert nib.load(one).shape == shape and info1["maps"][0]["units"] == "1/s"
    assert [m.name for m in select_maps(maps, ["R2", "OEF"])] == ["R2", "OEF"]
    with pytest.raises(ValueError, match="unknown map.*T2"):
        select_maps(maps, "T2")


def test_writer_refuses_wrong_grid_and_nan(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        write_maps([QuantMap("x", np.zeros((2, 2, 2)), "HU", (0, 1))], AFFINE, (2, 2, 3), tmp_path / "s.nii.gz")
    bad = np.zeros((2, 2, 2))
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        write_maps([QuantMap("x", bad, "HU", (0, 1))], AFFINE, (2, 2, 2), tmp_path / "s.nii.gz")


def test_maps_carry_their_units_in_the_nifti_header(tmp_path):
    """A viewer that shows descrip / intent_name (Slicer, ITK-SNAP, fslhd) sees the units."""
    z = np.zeros((4, 5, 6), np.float32)
    p, _ = write_maps([QuantMap("chi", z, "ppm", (-0.1, 0.1), "susceptibility")], np.eye(4), z.shape, tmp_path / "chi.nii.gz")
    h = nib.load(p).header
    assert h["descrip"].tobytes().rstrip(b"\0") == b"qmri: chi [ppm]"
    assert h.get_intent() == ("estimate", (), "ppm")
    maps = [QuantMap(n, z, u, (0, 1), "") for n, u in (("OEF", "%"), ("R2", "1/s"), ("chi_nb", "ppm"))]
    p, _ = write_maps(maps, np.eye(4), z.shape, tmp_path / "oef.nii.gz")
    h = nib.load(p).header
    assert h["descrip"].tobytes().rstrip(b"\0") == b"qmri: OEF [%]; R2 [1/s]; chi_nb [ppm]"
    assert h.get_intent()[0] == "estimate"
