"""The Slicer extension's MRML scene logic, headless with slicer-core: volumes, display, slice views."""

from __future__ import annotations

import sys

import nibabel as nib
import numpy as np
import pytest

from conftest import REPO, SAMPLE, server_maps

pytest.importorskip("slicer", reason="slicer-core (Slicer's MRML without Qt) is not installed")
sys.path.insert(0, str(REPO / "slicer_extension" / "QuantitativeMaps"))

from QuantitativeMapsLib import presets  # noqa: E402
from QuantitativeMapsLib.scene import MapSceneLogic, matrix_to_affine  # noqa: E402


OEF_MAPS = server_maps("oef")


def _oblique_affine():
    """2 mm voxels, rotated 10 deg about S and shifted: catches transposed or LPS-flipped geometry."""
    c, s = np.cos(np.radians(10)), np.sin(np.radians(10))
    aff = np.eye(4)
    aff[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([2.0, 2.5, 3.0])
    aff[:3, 3] = [-40.0, 12.5, -7.0]
    return aff


def _voxel_value_at_ras(node, ras):
    import vtk

    r2i = vtk.vtkMatrix4x4()
    node.GetRASToIJKMatrix(r2i)
    ijk = np.rint(matrix_to_affine(r2i) @ np.r_[ras, 1.0])[:3].astype(int)
    return node.GetImageData().GetScalarComponentAsDouble(*ijk, 0), ijk


def test_result_becomes_float_volume_with_nifti_geometry_and_values():
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 80, (7, 9, 11)).astype(np.float32)
    aff = _oblique_affine()
    logic = MapSceneLogic()
    (node,) = logic.load_result(nib.Nifti1Image(data, aff), {"maps": [OEF_MAPS[0]]}, "oef", "study")
    assert node.GetClassName() == "vtkMRMLScalarVolumeNode" and node.GetName() == "study OEF"
    assert node.GetImageData().GetScalarTypeAsString() == "float"
    assert node.GetImageData().GetDimensions() == (7, 9, 11)
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    np.testing.assert_allclose(matrix_to_affine(m), aff, atol=1e-9)
    np.testing.assert_allclose(node.GetSpacing(), [2.0, 2.5, 3.0], atol=1e-9)
    # the value at a world point is the NIfTI's value at the voxel nibabel maps there
    for ijk in [(0, 0, 0), (6, 8, 10), (3, 1, 7)]:
        ras = (aff @ np.r_[ijk, 1.0])[:3]
        v, back = _voxel_value_at_ras(node, ras)
        assert tuple(back) == ijk and v == pytest.approx(float(data[ijk]), rel=1e-6)
    arr, aff2 = logic.volume_array(node)
    np.testing.assert_array_equal(arr, data)
    np.testing.assert_allclose(aff2, aff, atol=1e-9)
    assert node.GetAttribute("qmri.units") == "%" and node.GetVoxelValueUnits().GetCodeMeaning() == "%"


def test_seven_oef_maps_become_seven_named_volumes_with_presets():
    data = np.zeros((6, 6, 6, 7), np.float32)
    data[1:5, 1:5, 1:5] = [35.0, 0.8, 18.0, 0.62, 0.03, -0.02, 4.5]
    logic = MapSceneLogic()
    nodes = logic.load_result(nib.Nifti1Image(data, np.eye(4)), {"maps": OEF_MAPS, "method": "qq"}, "oef", "sub-1000")
    assert [n.GetName() for n in nodes] == [f"sub-1000 {m['name']} [qq]" for m in OEF_MAPS]  # method in the name: two methods can be compared
    for i, n in enumerate(nodes):
        assert logic.volume_array(n)[0][2, 2, 2] == pytest.approx(float(data[2, 2, 2, i]), rel=1e-6)
        assert n.GetAttribute("qmri.map") == OEF_MAPS[i]["name"]
    oef, s0, chi = nodes[0].GetDisplayNode(), nodes[1].GetDisplayNode(), nodes[5].GetDisplayNode()
    assert oef.GetColorNode().GetName() == "qmri RainbowReversed"
    assert (oef.GetWindowLevelMin(), oef.GetWindowLevelMax()) == pytest.approx((0.0, 80.0))
    assert oef.GetWindow() == pytest.approx(80.0) and oef.GetLevel() == pytest.approx(40.0)
    assert oef.GetApplyThreshold() and oef.GetLowerThreshold() == pytest.approx(1e-3)
    assert not oef.GetAutoWindowLevel() and not oef.GetInterpolate()
    # S0's range is a percentile of the data: 0..0.8 here
    assert s0.GetWindowLevelMax() == pytest.approx(0.8, rel=1e-5)
    # chi: diverging, symmetric, no threshold (0 is a value inside the brain)
    assert chi.GetColorNode().GetName() == "qmri DivergingBlueRed"
    assert (chi.GetWindowLevelMin(), chi.GetWindowLevelMax()) == pytest.approx((-0.2, 0.2))
    assert not chi.GetApplyThreshold()
    # the uncertainty: a heat map of %-points over 0..20, transparent outside the brain
    sd = nodes[6].GetDisplayNode()
    assert sd.GetColorNode().GetID() == "vtkMRMLPETProceduralColorNodePET-Heat"
    assert (sd.GetWindowLevelMin(), sd.GetWindowLevelMax()) == pytest.approx((0.0, 20.0))
    assert sd.GetApplyThreshold() and nodes[6].GetAttribute("qmri.units") == "%"


@pytest.mark.parametrize(
    "task, name, colour_id, window",
    [
        ("pvc", "PVC", "vtkMRMLPETProceduralColorNodePET-Heat", None),
        ("synthetic_ct", "sCT", "vtkMRMLColorTableNodeGrey", (-160.0, 240.0)),
        ("synthetic_mr", "sMR", "vtkMRMLColorTableNodeGrey", None),
        ("qsm", "chi", None, (-0.2, 0.2)),
    ],
)
def test_presets_follow_the_servers_display_hints(task, name, colour_id, window):
    logic = MapSceneLogic()
    data = np.linspace(0, 3, 4 * 4 * 4, dtype=np.float32).reshape(4, 4, 4)
    (m,) = [m for m in server_maps(task) if m["name"] == name]
    (node,) = logic.load_result(nib.Nifti1Image(data, np.eye(4)), {"maps": [{**m, "channel": 0}]}, task, "x")
    dn = node.GetDisplayNode()
    if colour_id:
        assert dn.GetColorNodeID() == colour_id
    if window:
        assert (dn.GetWindowLevelMin(), dn.GetWindowLevelMax()) == pytest.approx(window)
    else:  # percentile range of the data
        p = presets.preset_for(m)
        assert dn.GetWindowLevelMax() == pytest.approx(float(np.percentile(data[data > p.threshold], p.percentile)), rel=1e-5)
    assert node.GetAttribute("qmri.units") == m["units"] and node.GetAttribute("qmri.legend_title") == m["display"]["legend"]
    assert node.GetAttribute("qmri.blend") == ("0" if task.startswith("synthetic") else "1")


def test_a_map_without_a_display_hint_is_grey_over_its_range():
    """A foreign or older server: grey over the stated display range, no threshold."""
    logic = MapSceneLogic()
    data = np.linspace(0, 3, 64, dtype=np.float32).reshape(4, 4, 4)
    (node,) = logic.load_result(nib.Nifti1Image(data, np.eye(4)), {"maps": [{"name": "T1", "units": "ms", "display_range": [100, 2000]}]}, "brand_new_task", "x")
    dn = node.GetDisplayNode()
    assert dn.GetColorNodeID() == "vtkMRMLColorTableNodeGrey" and not dn.GetApplyThreshold()
    assert (dn.GetWindowLevelMin(), dn.GetWindowLevelMax()) == pytest.approx((100.0, 2000.0))
    assert node.GetAttribute("qmri.legend_title") == "T1 (ms)"
    assert presets.input_slots({"inputs": {"image": "3D T1 map"}})[0].label == "3D T1 map"


def test_synthetic_ct_brain_and_bone_windows_and_default():
    logic = MapSceneLogic()
    (m,) = server_maps("synthetic_ct")
    (node,) = logic.load_result(nib.Nifti1Image(np.full((3, 3, 3), 40, np.float32), np.eye(4)), {"maps": [m]}, "synthetic_ct", "ct")
    p = logic.node_preset(node)
    assert set(p.windows) == {"brain", "bone"}
    logic.apply_preset(node, p, "bone")
    dn = node.GetDisplayNode()
    assert (dn.GetWindow(), dn.GetLevel()) == pytest.approx((2000.0, 400.0))
    logic.apply_preset(node, p, "brain")
    assert (dn.GetWindow(), dn.GetLevel()) == pytest.approx((80.0, 40.0))
    logic.apply_preset(node, p, "default")  # back to the load-time window
    assert (dn.GetWindowLevelMin(), dn.GetWindowLevelMax()) == pytest.approx((-160.0, 240.0))


def test_slice_composite_nodes_show_anatomy_under_map_at_opacity():
    t1 = nib.load(SAMPLE / "anatomy" / "sub-1000" / "T1w.nii.gz")
    logic = MapSceneLogic()
    bg = logic.add_volume(t1.get_fdata(dtype=np.float32)[::2, ::2, ::2], t1.affine @ np.diag([2, 2, 2, 1]), "T1w")
    (fg,) = logic.load_result(nib.Nifti1Image(np.full((5, 5, 5), 30, np.float32), t1.affine), {"maps": [OEF_MAPS[0]]}, "oef", "s")
    comps = logic.show_overlay(bg, fg, opacity=0.4)
    assert sorted(c.GetLayoutName() for c in comps) == ["Green", "Red", "Yellow"]
    for c in comps:
        assert c.GetBackgroundVolumeID() == bg.GetID() and c.GetForegroundVolumeID() == fg.GetID()
        assert c.GetForegroundOpacity() == pytest.approx(0.4)
    logic.set_opacity(0.75)
    assert all(c.GetForegroundOpacity() == pytest.approx(0.75) for c in comps)
    legend = logic.add_colour_legend(fg)
    assert legend.GetTitleText() == "OEF (%)" and legend.GetDisplayableNode() is fg
    with pytest.raises(ValueError, match="opacity"):
        logic.show_overlay(bg, fg, opacity=1.5)


def test_inputs_are_stacked_on_one_grid():
    logic = MapSceneLogic()
    aff = _oblique_affine()
    a = logic.add_volume(np.ones((4, 5, 6), np.float32), aff, "echo1")
    b = logic.add_volume(2 * np.ones((4, 5, 6), np.float32), aff, "qsm")
    stacked, aff2 = logic.stack_volumes([a, b])
    assert stacked.shape == (4, 5, 6, 2) and np.all(stacked[..., 1] == 2)
    np.testing.assert_allclose(aff2, aff)
    c = logic.add_volume(np.ones((4, 5, 7), np.float32), aff, "other")
    with pytest.raises(ValueError, match="not on the grid"):
        logic.stack_volumes([a, c])
    shifted = aff.copy()
    shifted[:3, 3] += [0.0, 0.0, 4.0]  # same shape, 4 mm away: a reference map on another grid
    d = logic.add_volume(np.ones((4, 5, 6), np.float32), shifted, "reference")
    with pytest.raises(ValueError, match="not on the grid"):
        logic.stack_volumes([a, d])


def test_fit_slice_works_with_the_slicer_5_6_signature():
    """Slicer 5.6's FitSliceToBackground(int width, int height) has no defaults (5.8+ does): the
    module's call falls back to the view size instead of failing on the first Run."""
    from QuantitativeMapsLib.scene import fit_slice

    calls = []

    class Slicer56SliceLogic:  # the 5.6 signatures, as wrapped by VTK's Python layer
        def FitSliceToBackground(self, width, height):
            calls.append(("background", width, height))

        def FitSliceToAll(self, width, height):
            calls.append(("all", width, height))

        def GetSliceNode(self):
            class Node:
                def GetDimensions(self):
                    return (512, 384, 1)

            return Node()

    fit_slice(Slicer56SliceLogic(), True)
    fit_slice(Slicer56SliceLogic(), False)
    assert calls == [("background", 512, 384), ("all", 512, 384)]
    # and this machine's slicer-core (the current signature) through the real slice logic
    logic = MapSceneLogic()
    t1 = nib.load(SAMPLE / "anatomy" / "sub-1000" / "T1w.nii.gz")
    bg = logic.add_volume(t1.get_fdata(dtype=np.float32)[::4, ::4, ::4], t1.affine @ np.diag([4, 4, 4, 1]), "T1w")
    sl = logic.slice_logics()["Red"]
    sl.GetSliceCompositeNode().SetBackgroundVolumeID(bg.GetID())
    fit_slice(sl, True)
    fov = sl.GetSliceNode().GetFieldOfView()
    assert fov[0] > 100 and fov[1] > 100  # fitted to a head (mm), not the default view


def test_probe_reads_each_map_with_its_units_at_a_world_point():
    logic = MapSceneLogic()
    aff = _oblique_affine()
    data = np.zeros((7, 9, 11, 7), np.float32)
    data[3, 4, 5] = [41.5, 0.8, 18.0, 0.62, 0.03, -0.021, 4.5]
    nodes = logic.load_result(nib.Nifti1Image(data, aff), {"maps": OEF_MAPS, "method": "best"}, "oef", "s")
    ras = (aff @ np.r_[3, 4, 5, 1.0])[:3]
    got = logic.probe(nodes, ras)
    assert [g[2] for g in got] == [m["units"] for m in OEF_MAPS]
    assert got[0][0] == "s OEF [best]" and got[0][1] == pytest.approx(41.5) and got[5][1] == pytest.approx(-0.021)
    text = logic.probe_text(got)
    assert text.splitlines()[0] == "s OEF [best]: 41.5 %" and "s chi_nb [best]: -0.021 ppm" in text
    far = logic.probe(nodes[:1], ras + 500.0)
    assert far[0][1] is None and logic.probe_text(far) == "s OEF [best]: --"


def test_difference_of_two_methods_on_one_grid():
    """The same task with two methods: a - b in the maps' units, diverging about 0, method names kept."""
    logic = MapSceneLogic()
    aff = _oblique_affine()
    truth = np.zeros((7, 9, 11), np.float32)
    truth[2:5, 3:7, 3:8] = 0.1
    (m,) = server_maps("qsm")
    (tkd,) = logic.load_result(nib.Nifti1Image(truth * 0.8, aff), {"maps": [m], "method": "tkd"}, "qsm", "s")
    (l2,) = logic.load_result(nib.Nifti1Image(truth, aff), {"maps": [m], "method": "l2"}, "qsm", "s")
    d = logic.difference(tkd, l2)
    assert d.GetName() == "s chi [tkd] - s chi [l2]" and d.GetAttribute("qmri.units") == "ppm"
    values = logic.volume_array(d)[0]
    assert values[3, 4, 5] == pytest.approx(-0.02) and values[0, 0, 0] == 0
    dn = d.GetDisplayNode()
    assert dn.GetColorNode().GetName() == "qmri DivergingBlueRed" and dn.GetWindowLevelMax() == pytest.approx(0.02, rel=1e-5)
    assert d.GetAttribute("qmri.legend_title") == "diff chi (ppm)"
    (oef,) = logic.load_result(nib.Nifti1Image(truth, aff), {"maps": server_maps("oef")[:1]}, "oef", "s")
    with pytest.raises(ValueError, match="one quantity"):
        logic.difference(tkd, oef)
    (other,) = logic.load_result(nib.Nifti1Image(truth[:6], aff), {"maps": [m], "method": "tv"}, "qsm", "s")
    with pytest.raises(ValueError, match="not on the grid"):
        logic.difference(tkd, other)
