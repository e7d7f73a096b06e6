"""Slicer's slice logic blends anatomy + an OEF map into a PNG (headless, slicer-core + VTK off-screen).

The OEF map is the sample study's ground truth, OEF = 100 (1 - Y / 0.98) with Y the venous
oxygenation (channel 2 of labels/final/sub-1000_oef), on the cropped OEF grid; the anatomy is the
full-FOV T1w. Both share world coordinates, so the slice logic places them by geometry.
The PNG is written to slicer_extension/docs/overlay.png (shown in the extension's README).
"""

from __future__ import annotations

import sys

import nibabel as nib
import numpy as np
import pytest

from conftest import REPO, SAMPLE

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
    (oef,) = logic.load_result(oef_img, {"maps": [{"name": "OEF", "units": "%", "display_range": [0, 80]}]}, "oef", "sub-1000")
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
