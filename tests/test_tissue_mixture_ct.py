"""Tests of the classical tissue-mixture synthetic CT (qmri.classical.tissue_mixture_ct)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from qmri.anatomy.labels import LABEL
from qmri.classical import bulk_density as bd
from qmri.classical.tissue_mixture_ct import inside_skull_mask, outside_skull, synthetic_ct_tissue_mixture
from qmri.physics import ct_mr
from qmri.metrics import synthrad as sm
from qmri.physics.ct_mr import TISSUE_PROPERTIES as TP
from qmri.physics.ct_mr import tissue_t2w_intensity as sig

_spec = importlib.util.spec_from_file_location("_ct_mr_phantom", Path(__file__).with_name("test_ct_mr.py"))
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)


def _shells(n: int = 48):
    """Concentric spheres: radius (voxels) of every voxel, head < 20, skull 14..17, brain < 14."""
    g = np.arange(n) - n / 2 + 0.5
    x, y, z = np.meshgrid(g, g, g, indexing="ij")
    return np.sqrt(x**2 + y**2 + z**2), x


def test_outside_skull_separates_scalp_from_brain_across_a_gap():
    r, x = _shells()
    head = r < 20
    skull = (r >= 14) & (r < 17) & ~((np.abs(x) < 2) & (x < 0))  # a 4-voxel-wide slit through one side
    out = outside_skull(head, skull, 2.0)
    scalp, brain = head & (r >= 17), r < 14
    assert out[scalp & (r >= 17.5) & (np.abs(x) >= 3)].all()
    # deep brain stays inside although the slit connects it to the scalp
    assert not out[r < 10].any()
    assert out[brain].mean() < 0.02
    assert not out[skull].any() and not out[~head].any()
    assert not outside_skull(head, np.zeros_like(head), 2.0).any()


def test_mixture_rules_closed_form():
    """Noise-free shells: each compartment's HU follows its two-compartment line exactly."""
    r, _ = _shells()
    head = r < 20
    floor = 5.0
    s = np.full(r.shape, floor, np.float32)
    s_dip = sig("diploe")
    s[head & (r >= 17)] = sig("fat")  # scalp: pure fat
    s[(r >= 14) & (r < 17)] = 0.5 * (floor + s_dip)  # skull: half cortical, half diploe
    s[r < 14] = 0.25 * sig("cortical_gm") + 0.75 * sig("csf")  # brain: GM/CSF mixture
    s[r < 8] = sig("wm")
    hu = synthetic_ct_tissue_mixture(s, head, floor=floor, skull_smooth_vox=0.0)
    skull = (r >= 14.5) & (r < 16.5)
    np.testing.assert_allclose(hu[skull], 0.5 * (TP["cortical_bone"].hu + TP["diploe"].hu), atol=1e-3)
    gm_csf = (r >= 9) & (r < 13)
    np.testing.assert_allclose(hu[gm_csf], 0.25 * TP["cortical_gm"].hu + 0.75 * TP["csf"].hu, atol=1e-3)
    np.testing.assert_allclose(hu[r < 7], TP["wm"].hu, atol=1e-3)
    deep_scalp = head & (r >= 19)  # beyond the 26-neighbourhood of the skull
    np.testing.assert_allclose(hu[deep_scalp], TP["fat"].hu, atol=1e-3)
    # the inside-the-skull mask is the region the brain rule (WM-GM-CSF lines) was applied to: the
    # brain, no skull, no deep scalp (a few surface voxels tie in depth and count as inside)
    inside = inside_skull_mask(s, head)
    assert inside[r < 13.5].all() and not inside[(r >= 14.5) & (r < 17)].any() and not inside[deep_scalp].any()
    si = s[inside]
    f_wm_gm = np.clip((si - sig("wm")) / (sig("cortical_gm") - sig("wm")), 0, 1)
    f_gm_csf = np.clip((si - sig("cortical_gm")) / (sig("csf") - sig("cortical_gm")), 0, 1)
    rule = np.where(si < sig("cortical_gm"), TP["wm"].hu + f_wm_gm * (TP["cortical_gm"].hu - TP["wm"].hu), TP["cortical_gm"].hu + f_gm_csf * (TP["csf"].hu - TP["cortical_gm"].hu))
    np.testing.assert_allclose(hu[inside], rule, atol=1e-3)
    assert np.all(hu[~head] == -1000.0)
    # the outer skull surface (scalp voxels touching bone) is a bone + scalp mixture between the two
    surf = head & (r >= 17) & (r < 17.8)
    assert np.all((hu[surf] > TP["fat"].hu) & (hu[surf] < TP["cortical_bone"].hu))
    # darker skull = more cortical bone = denser
    s2 = s.copy()
    s2[(r >= 14) & (r < 17)] = floor
    hu2 = synthetic_ct_tissue_mixture(s2, head, floor=floor, skull_smooth_vox=0.0)
    np.testing.assert_allclose(hu2[skull], TP["cortical_bone"].hu, atol=1e-3)


@pytest.fixture(scope="module")
def pair():
    labels, prob, les = _mod.make_head()
    ct = ct_mr.ct_hu(labels, prob, les, rng=1)
    mr = ct_mr.t2w_mr(labels, prob, les, rng=1, snr=30.0)
    return labels, ct, mr


def test_mixture_beats_bulk_density_on_the_phantom(pair):
    labels, ct, mr = pair
    head = labels != LABEL["air"]
    mix = sm.evaluate_sct(synthetic_ct_tissue_mixture(mr), ct, head)
    bulk = sm.evaluate_sct(bd.synthetic_ct_bulk_density(mr), ct, head)
    # measured: MAE 128 vs 191 HU, bone Dice 0.89 vs 0.84, SSIM 0.90 vs 0.85
    assert mix["mae"] < 0.8 * bulk["mae"], (mix, bulk)
    assert mix["bone_dice"] > bulk["bone_dice"] and mix["ssim"] > bulk["ssim"] and mix["psnr"] > bulk["psnr"]


def test_mixture_rejects_bad_input():
    with pytest.raises(ValueError, match="3D"):
        synthetic_ct_tissue_mixture(np.zeros((8, 8)))
    bad = np.ones((16, 16, 16), np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        synthetic_ct_tissue_mixture(bad)
    with pytest.raises(ValueError, match="empty"):
        synthetic_ct_tissue_mixture(np.ones((16, 16, 16), np.float32), np.zeros((16, 16, 16), bool))
