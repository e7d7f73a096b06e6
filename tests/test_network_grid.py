"""Networks on other voxel sizes: resample to the network's grid and back, or refuse naming the range."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from conftest import REPO, SAMPLE
from qmri.networks.grid import NetworkGrid


def test_identity_within_tolerance_and_shapes_otherwise():
    g = NetworkGrid((50, 60, 40), (2.04, 1.98, 2.0), 2.0)
    assert g.identity and g.net_shape == (50, 60, 40)
    g = NetworkGrid((100, 120, 80), (1.0, 1.0, 1.0), 2.0)
    assert not g.identity and g.net_shape == (50, 60, 40) and g.net_voxel_mm == (2.0, 2.0, 2.0)
    g = NetworkGrid((64, 64, 20), (1.0, 1.0, 3.0), 1.0)
    assert g.net_shape == (64, 64, 60)


@pytest.mark.parametrize("voxel, match", [((0.3, 0.3, 0.3), "supports voxel sizes 0.5-4 mm"), ((5.0, 1.0, 1.0), "supports voxel sizes"), ((0.5, 0.5, 2.5), "resamples by at most 4x")])
def test_voxel_sizes_outside_the_range_are_refused_naming_it(voxel, match):
    with pytest.raises(ValueError, match=match):
        NetworkGrid((10, 10, 10), voxel, (2.0, 2.0, 0.5) if voxel[2] == 2.5 else 2.0, "the test network")


def test_box_average_down_and_back_keeps_smooth_maps_and_means():
    x = np.indices((40, 40, 40), dtype=np.float32)
    vol = np.sin(x[0] / 7.0) + 0.02 * x[1]
    g = NetworkGrid(vol.shape, (1.0, 1.0, 1.0), 2.0)
    down = g.to_network(vol)
    assert down.shape == (20, 20, 20)
    assert down[3, 4, 5] == pytest.approx(vol[6:8, 8:10, 10:12].mean(), abs=1e-5)  # area = box average
    back = g.to_input(down)
    assert back.shape == vol.shape and np.abs(back - vol)[4:-4, 4:-4, 4:-4].max() < 0.05


def test_masked_resampling_does_not_blend_the_zeros_outside_the_mask():
    mask = ((np.indices((30, 30, 30)) - 14.6) ** 2).sum(0) <= 10.3**2
    vol = np.where(mask, 0.3, 0.0)
    g = NetworkGrid(mask.shape, (1.0,) * 3, 2.0)
    m = g.mask_to_network(mask)
    down = g.masked_to_network(vol, mask, m)
    assert np.allclose(down[m], 0.3) and np.all(down[~m] == 0)
    back = g.masked_to_input(down, m, mask)
    assert np.allclose(back[mask], 0.3, atol=1e-6) and np.all(back[~mask] == 0)
    assert g.to_network(vol)[m].min() < 0.2  # plain averaging would have blended the border


def _oef_study():
    img = nib.load(SAMPLE / "studies" / "sub-1000_oef.nii.gz")
    meta = json.loads((SAMPLE / "studies" / "sub-1000_oef.json").read_text())
    return np.asarray(img.dataobj, np.float32), img.affine, meta


def test_oef_network_at_1mm_runs_on_its_2mm_grid_and_returns_the_input_grid():
    """A 1 mm study made from the 2 mm sample (each voxel split in 8) gives, through the resampling,
    the 2 mm network's maps on the 1 mm grid; before, the network ran on 1 mm voxels unchanged."""
    from qmri.tasks.oef import oef_spec

    d, aff, meta = _oef_study()
    c = [n // 2 for n in d.shape[:3]]
    block = d[c[0] - 12 : c[0] + 12, c[1] - 12 : c[1] + 12, c[2] - 8 : c[2] + 8]
    spec = oef_spec({"best": REPO / "apps" / "qmri" / "model" / "oefnet" / "best.pt"})
    ref = {m.name: m.data for m in spec.run(block, aff, meta, "best")}
    fine = np.repeat(np.repeat(np.repeat(block, 2, 0), 2, 1), 2, 2)
    aff1 = aff.copy()
    aff1[:3, :3] = aff[:3, :3] / 2
    out = {m.name: m.data for m in spec.run(fine, aff1, meta, "best")}
    assert out["OEF"].shape == fine.shape[:3] and set(out) == set(ref)
    mask = fine[..., -1] != 0
    up = np.repeat(np.repeat(np.repeat(ref["OEF"], 2, 0), 2, 1), 2, 2)
    assert np.corrcoef(out["OEF"][mask], up[mask])[0, 1] > 0.9
    assert abs(out["OEF"][mask].mean() - up[mask].mean()) < 1.0  # %-points
    with pytest.raises(ValueError, match="supports voxel sizes 0.5-4 mm"):
        aff5 = aff.copy()
        aff5[:3, :3] = aff[:3, :3] * 2.5
        spec.run(block, aff5, meta, "best")


def test_qsmnet_on_thick_slices_resamples_to_isotropic():
    """1 x 1 x 3 mm: the network runs on 1 mm isotropic voxels; its map (network alone) is closer to
    the truth than the same network applied to the anisotropic grid as if it were isotropic."""
    from qmri.classical.qsm import nrmse
    from qmri.models.qsmnet.predict import _network_chi, load_qsmnet, predict_chi
    from qmri.physics.dipole import forward_field

    n = 48
    x = np.indices((n, n, n)) - n / 2
    mask = (x[0] ** 2 + x[1] ** 2 + (x[2] * 0.8) ** 2) <= 21**2
    chi = np.where(mask, 0.02 * np.sin(x[0] / 5.0), 0.0)
    for c, v in (((8, 0, 0), 0.3), ((-6, 8, 4), -0.2), ((0, -9, -6), 0.15)):
        chi[((x - np.array(c)[:, None, None, None]) ** 2).sum(0) <= 16] = v
    field = forward_field(chi, (1.0, 1.0, 1.0), (0, 0, 1), pad=True)
    k = 3
    thick = lambda a: a.reshape(n, n, n // k, k).mean(-1)  # noqa: E731
    f3, c3, m3 = thick(np.where(mask, field, 0.0)), thick(chi), thick(mask.astype(float)) > 0.5
    net, _ = load_qsmnet(REPO / "apps" / "qmri" / "model" / "qsmnet" / "qsmnet.pt")
    resampled = predict_chi(net, f3, m3, (1.0, 1.0, 3.0), refine_iterations=0)
    naive = _network_chi(net, f3, m3, (1.0, 1.0, 3.0), (0, 0, 1), "cpu")
    assert resampled.shape == f3.shape
    assert nrmse(resampled, c3, m3) < 0.9 * nrmse(naive, c3, m3)


def test_synthesis_networks_at_1mm_refuse_and_resample_thick_slices():
    """sCT: the generator's 2 mm map loses the bone detail of a 1 mm T2w (155 HU MAE), so 1 mm is
    refused with a pointer to tissue_mixture. sMR: at 1 mm its 2 mm map scores SSIM 0.75 (goal 0.85),
    so 1 mm is refused with the advice to resample. A 2 x 2 x 4 mm CT (slice pairs averaged) goes
    through the 2 mm grid and gives the 2 mm sMR with its slice pairs averaged, within a few percent,
    and says so."""
    from qmri.tasks.synthesis import synthesis_specs

    sct_task, smr_task = synthesis_specs(REPO / "apps" / "qmri" / "model" / "synthnet" / "synthnet.pt")
    mr = nib.load(SAMPLE / "studies" / "sub-1000_t2w.nii.gz")
    aff1 = mr.affine.copy()
    aff1[:3, :3] /= 2
    with pytest.raises(ValueError, match="use method 'tissue_mixture'"):
        sct_task.run(np.asarray(mr.dataobj, np.float32)[:, :, :8], aff1, {}, "sccyclegan")
    img = nib.load(SAMPLE / "studies" / "sub-1000_ct.nii.gz")
    ct = np.asarray(img.dataobj, np.float32)
    c = ct.shape[2] // 2
    ct = ct[:, :, c - 8 : c + 8]  # 16 axial slices
    aff1 = img.affine.copy()
    aff1[:3, :3] /= 2
    with pytest.raises(ValueError, match="resample the CT to 2 mm"):
        smr_task.run(np.repeat(np.repeat(np.repeat(ct[:, :, :4], 2, 0), 2, 1), 2, 2), aff1, {}, "sccyclegan")
    assert smr_task.run(ct[:, :, :4], aff1, {}, "bulk_density")[0].data.shape == ct[:, :, :4].shape  # classical: any grid
    ref = smr_task.run(ct, img.affine, {}, "sccyclegan")[0].data
    thick = ct.reshape(*ct.shape[:2], -1, 2).mean(-1)
    aff4 = img.affine.copy()
    aff4[:3, 2] *= 2
    (out,) = smr_task.run(thick, aff4, {}, "sccyclegan")
    assert out.data.shape == thick.shape and "2 mm grid" in out.description
    ref_thick = ref.reshape(*ref.shape[:2], -1, 2).mean(-1)
    head = thick > -500
    assert np.median(np.abs(out.data - ref_thick)[head]) < 0.05 * np.percentile(ref_thick[head], 99)
