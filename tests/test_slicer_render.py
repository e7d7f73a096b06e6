"""Slicer's slice logic blends anatomy + an OEF map into a PNG (headless, slicer-core + VTK off-screen).

The OEF map is the sample study's ground truth, OEF = 100 (1 - Y / 0.98) with Y the venous
oxygenation (channel 2 of labels/final/sub-1000_oef), on the cropped OEF grid; the anatomy is the
full-FOV T1w. Both share world coordinates, so the slice logic places them by geometry.
The PNG is written to slicer_extension/docs/overlay.png (shown in the extension's README), with a
susceptibility (overlay_chi.png) and a PET (overlay_pet.png) overlay beside it.
"""

from __future__ import annotations

import sys

import nibabel as nib
import numpy as np
import pytest

from conftest import REPO, SAMPLE, server_maps

pytest.importorskip("slicer", reason="slicer-core (Slicer's MRML without Qt) is not installed")
sys.path.insert(0, str(REPO / "slicer_extension" / "QuantitativeMaps"))

from QuantitativeMapsLib.scene import MapSceneLogic  # noqa: E402

PNG = REPO / "slicer_extension" / "docs" / "overlay.png"


def _oef_truth():
    lab = nib.load(SAMPLE / "studies" / "labels" / "final" / "sub-1000_oef.nii.gz")
    brain = nib.load(SAMPLE / "studies" / "sub-1000_oef.nii.gz").dataobj[..., -1] != 0
    y = lab.get_fdata(dtype=np.float32)[..., 2]
    oef = np.where(brain, 100.0 * (1.0 - y / 0.98), 0.0).astype(np.float32)
    return nib.Nifti1Image(oef, lab.affine), brain


def test_overlay_png_has_colour_in_brain_and_grey_outside():
    oef_img, brain = _oef_truth()
    t1 = nib.load(SAMPLE / "anatomy" / "sub-1000" / "T1w.nii.gz")
    assert oef_img.shape != t1.shape  # cropped study on its own grid: placement must use geometry
    logic = MapSceneLogic()
    anat = logic.add_volume(t1.get_fdata(dtype=np.float32), t1.affine, "T1w")
    (oef,) = logic.load_result(oef_img, {"maps": server_maps("oef")[:1]}, "oef", "sub-1000")
    # an axial slice 6 mm above the OEF grid centre: basal ganglia and ventricles
    centre = oef_img.affine @ np.r_[(np.array(oef_img.shape) - 1) / 2.0, 1.0]
    out = logic.render_png(anat, oef, PNG, opacity=0.6, offset_mm=float(centre[2]) + 6.0, size=400)

    rgb = out["rgba"][..., :3].astype(int)
    sat = rgb.max(-1) - rgb.min(-1)  # 0 for grey pixels
    vals = out["values"]
    inside = np.isfinite(vals) & (vals > 1e-3)  # where the OEF map is shown (above its threshold)
    outside = ~inside
    assert inside.sum() > 0.15 * inside.size  # the brain fills a good part of the view
    assert np.mean(sat[inside] > 40) > 0.97, "map pixels should be coloured"
    assert np.mean(sat[outside] <= 2) > 0.99, "pixels outside the map should be grey anatomy or black"
    # the anatomy shows through: grey T1 under the map differs between tissues at the same OEF
    assert rgb[outside].max() <= 255 and np.ptp(rgb[inside].sum(-1)) > 100
    # the colours follow the value: low OEF bluer, high OEF redder (reversed rainbow)
    # (lowest and highest tenth of the shown values: the physiological phantom spans ~10 %-points here)
    q10, q90 = np.percentile(vals[inside], [10, 90])
    lo, hi = inside & (vals < q10), inside & (vals > q90)
    assert lo.sum() > 50 and hi.sum() > 50 and vals[hi].mean() - vals[lo].mean() > 5
    assert rgb[hi, 0].mean() > rgb[lo, 0].mean() + 10 and rgb[lo, 2].mean() > rgb[hi, 2].mean() + 10

    # the PNG: slice on the left, legend panel (drawn off-screen by VTK) on the right
    from PIL import Image

    png = np.asarray(Image.open(PNG).convert("RGB")).astype(int)
    assert png.shape[0] == 400 and png.shape[1] >= 400
    np.testing.assert_allclose(png[:, :400], rgb, atol=2)
    if out["legend"]:
        panel = png[:, 400:]
        assert (panel.max(-1) - panel.min(-1) > 100).sum() > 2000  # the colour bar


def _render(logic, anat, node, path, offset_mm, opacity=0.7):
    out = logic.render_png(anat, node, path, opacity=opacity, offset_mm=offset_mm, size=400)
    rgb = out["rgba"][..., :3].astype(int)
    return out, rgb


def test_chi_overlay_hides_the_zeros_outside_the_brain():
    """A signed map has no threshold: its colour table's transparent centre must keep the anatomy (and
    the black air) visible outside the brain instead of a white box over the head."""
    chi_img = nib.load(SAMPLE / "studies" / "labels" / "final" / "sub-1000_qsm.nii.gz")
    t1 = nib.load(SAMPLE / "anatomy" / "sub-1000" / "T1w.nii.gz")
    logic = MapSceneLogic()
    anat = logic.add_volume(t1.get_fdata(dtype=np.float32), t1.affine, "T1w")
    (chi,) = logic.load_result(chi_img, {"maps": server_maps("qsm"), "method": "truth"}, "qsm", "sub-1000")
    centre = chi_img.affine @ np.r_[(np.array(chi_img.shape) - 1) / 2.0, 1.0]
    out, rgb = _render(logic, anat, chi, PNG.with_name("overlay_chi.png"), float(centre[2]) + 4.0)
    vals = out["values"]
    alone = logic.blend_slice(anat, chi, opacity=0.0, offset_mm=float(centre[2]) + 4.0, size=400)[0][..., :3].astype(int)
    zero = np.isfinite(vals) & (vals == 0)
    assert zero.sum() > 0.1 * zero.size  # the map's box includes air and skull around the brain
    np.testing.assert_allclose(rgb[zero], alone[zero], atol=3)  # there, the anatomy alone
    strong = np.isfinite(vals) & (np.abs(vals) > 0.05)
    assert strong.sum() > 200
    sat = rgb.max(-1) - rgb.min(-1)
    assert np.mean(sat[strong] > 20) > 0.9  # coloured where |chi| is clearly above 0
    pos, neg = strong & (vals > 0), strong & (vals < 0)
    assert rgb[pos, 0].mean() > rgb[pos, 2].mean() and rgb[neg, 2].mean() > rgb[neg, 0].mean()  # red up, blue down


def test_pet_overlay_in_heat_colours_with_its_legend():
    pet_img = nib.load(SAMPLE / "studies" / "labels" / "final" / "sub-1000_pet.nii.gz")
    t1 = nib.load(SAMPLE / "anatomy" / "sub-1000" / "T1w.nii.gz")
    logic = MapSceneLogic()
    anat = logic.add_volume(t1.get_fdata(dtype=np.float32), t1.affine, "T1w")
    data = pet_img.get_fdata(dtype=np.float32)
    (m,) = server_maps("pvc", {"PVC": [0.0, float(np.percentile(data[data > 0.05], 99.5))]})
    (pet,) = logic.load_result(pet_img, {"maps": [m], "method": "truth"}, "pvc", "sub-1000")
    assert pet.GetDisplayNode().GetColorNodeID() == "vtkMRMLPETProceduralColorNodePET-Heat"
    centre = pet_img.affine @ np.r_[(np.array(pet_img.shape) - 1) / 2.0, 1.0]
    out, rgb = _render(logic, anat, pet, PNG.with_name("overlay_pet.png"), float(centre[2]) + 6.0)
    vals = out["values"]
    shown = np.isfinite(vals) & (vals > 0.05)
    assert shown.sum() > 0.1 * shown.size
    hot = shown & (vals > np.percentile(vals[shown], 80))
    cold = shown & (vals < np.percentile(vals[shown], 20))
    assert rgb[hot].sum(-1).mean() > rgb[cold].sum(-1).mean() + 60  # heat: brighter where uptake is higher
    if out["legend"]:
        from PIL import Image

        png = np.asarray(Image.open(PNG.with_name("overlay_pet.png")).convert("RGB")).astype(int)
        assert png.shape[1] > 400 and (png[:, 400:].max(-1) > 100).sum() > 2000  # the legend panel
