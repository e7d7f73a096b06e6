"""Dipole kernel / forward field against closed forms, and the phantom susceptibility map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qmri.anatomy.labels import LABEL, LESION_CODE, N_CLASSES
from qmri.physics.dipole import (
    dipole_kernel,
    field_ppm_to_phase,
    forward_field,
    padded_shape,
    phase_to_field_ppm,
)
from qmri.physics.qsm_phantom import CHI_PPM, subject_chi_table, susceptibility_map


def sphere(shape, vox, a_mm, b0=(0, 0, 1), ss=3):
    """Partial-volume sphere (radius a_mm, chi = 1 ppm, supersampled ss^3) and the analytic
    Lorentz-corrected field chi/3 (a/r)^3 (3 cos^2 theta - 1) outside, 0 inside."""
    vox = np.asarray(vox, float)
    g = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * vox[i] for i, n in enumerate(shape)], indexing="ij")
    chi = np.zeros(shape)
    offs = (np.arange(ss) + 0.5) / ss - 0.5
    for o0 in offs:
        for o1 in offs:
            for o2 in offs:
                r2 = (g[0] + o0 * vox[0]) ** 2 + (g[1] + o1 * vox[1]) ** 2 + (g[2] + o2 * vox[2]) ** 2
                chi += r2 <= a_mm**2
    chi /= ss**3
    b = np.asarray(b0, float) / np.linalg.norm(b0)
    r = np.sqrt(g[0] ** 2 + g[1] ** 2 + g[2] ** 2)
    cos = (g[0] * b[0] + g[1] * b[1] + g[2] * b[2]) / np.maximum(r, 1e-9)
    ana = np.where(r > a_mm, (a_mm / np.maximum(r, 1e-9)) ** 3 / 3 * (3 * cos**2 - 1), 0.0)
    return chi, ana, r, cos


def test_kernel_values_and_voxel_axes():
    vox = (1.0, 2.0, 3.0)
    d = dipole_kernel((8, 10, 12), vox, (0, 0, 1)).numpy()
    assert d[0, 0, 0] == 0.0
    assert d.min() >= -2 / 3 - 1e-12 and d.max() <= 1 / 3 + 1e-12
    assert d[0, 0, 3] == pytest.approx(-2 / 3)  # k along B0
    assert d[3, 0, 0] == pytest.approx(1 / 3) and d[0, 2, 0] == pytest.approx(1 / 3)
    # k = (1/(8*1), 1/(10*2), 1/(12*3)) cycles/mm: each axis uses its own voxel size (no 0/1 swap)
    k = np.array([1 / 8, 1 / 20, 1 / 36])
    assert d[1, 1, 1] == pytest.approx(1 / 3 - k[2] ** 2 / (k**2).sum(), rel=1e-10)
    # tilted B0 along axis 1 equals the axis-2 kernel with axes 1 and 2 swapped
    d1 = dipole_kernel((8, 12, 10), (1.0, 3.0, 2.0), (0, 1, 0)).numpy()
    np.testing.assert_allclose(d1, d.transpose(0, 2, 1), atol=1e-12)
    # half spectrum agrees with the full one
    dh = dipole_kernel((8, 10, 12), vox, (0.3, 0.2, 0.9), half=True).numpy()
    df = dipole_kernel((8, 10, 12), vox, (0.3, 0.2, 0.9)).numpy()
    np.testing.assert_allclose(dh[..., :6], df[..., :6], atol=1e-12)  # Nyquist column: sign convention


def _pole_equator(f, ana, r, cos, radii):
    for R in radii:
        for sel in (np.abs(cos) > 0.97, np.abs(cos) < 0.1):
            m = (np.abs(r - R) < 0.6) & sel
            if m.sum() == 0:
                continue
            got, want = f[m].mean(), ana[m].mean()
            assert abs(got - want) < 0.05 * abs(want), (R, got, want)


def test_sphere_isotropic():
    a = 7.0
    chi, ana, r, cos = sphere((64, 64, 64), (1, 1, 1), a)
    f = forward_field(chi, 1.0)
    assert abs(f[r < a - 2].mean()) < 0.05 / 3  # inside ~ 0 (Lorentz-corrected)
    # pole +2/3 chi (a/r)^3 and equator -1/3 chi (a/r)^3
    m = (np.abs(r - 12) < 0.6) & (np.abs(cos) > 0.97)
    assert f[m].mean() == pytest.approx(2 / 3 * (a / 12) ** 3, rel=0.05)
    m = (np.abs(r - 12) < 0.6) & (np.abs(cos) < 0.1)
    assert f[m].mean() == pytest.approx(-1 / 3 * (a / 12) ** 3, rel=0.05)
    _pole_equator(f, ana, r, cos, (10, 14, 18))
    shell = (r > 10) & (r < 20)
    assert np.linalg.norm(f[shell] - ana[shell]) / np.linalg.norm(ana[shell]) < 0.02


def test_sphere_anisotropic_voxels():
    chi, ana, r, cos = sphere((64, 64, 32), (1, 1, 2), 7.0)
    f = forward_field(chi, (1, 1, 2))
    assert abs(f[r < 5].mean()) < 0.05 / 3
    _pole_equator(f, ana, r, cos, (12, 16))
    shell = (r > 10) & (r < 20)
    assert np.linalg.norm(f[shell] - ana[shell]) / np.linalg.norm(ana[shell]) < 0.04
    # voxels anisotropic along axis 0 instead: the same physics, a different array
    chi0, ana0, r0, cos0 = sphere((32, 64, 64), (2, 1, 1), 7.0)
    f0 = forward_field(chi0, (2, 1, 1))
    shell0 = (r0 > 10) & (r0 < 20)
    assert np.linalg.norm(f0[shell0] - ana0[shell0]) / np.linalg.norm(ana0[shell0]) < 0.04


def test_sphere_tilted_b0():
    b0 = (0.0, np.sin(np.radians(30)), np.cos(np.radians(30)))
    chi, ana, r, cos = sphere((64, 64, 64), (1, 1, 1), 7.0, b0=b0)
    f = forward_field(chi, 1.0, b0)
    _pole_equator(f, ana, r, cos, (12, 16))
    shell = (r > 10) & (r < 20)
    assert np.linalg.norm(f[shell] - ana[shell]) / np.linalg.norm(ana[shell]) < 0.03
    # the untilted kernel would be clearly wrong here
    f_z = forward_field(chi, 1.0, (0, 0, 1))
    assert np.linalg.norm(f_z[shell] - ana[shell]) / np.linalg.norm(ana[shell]) > 0.5


def test_padding_reduces_wraparound():
    chi, ana, r, cos = sphere((40, 40, 40), (1, 1, 1), 10.0)
    out = r > 11
    e_pad = np.linalg.norm(forward_field(chi, 1.0, pad=True)[out] - ana[out])
    e_none = np.linalg.norm(forward_field(chi, 1.0, pad=False)[out] - ana[out])
    assert e_pad < 0.5 * e_none
    assert padded_shape((96, 112, 96), True) == (192, 225, 192)
    assert padded_shape((10, 10, 10), False) == (10, 10, 10)


def test_torch_batched_and_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 16, 18, 20)).astype(np.float32)
    fb = forward_field(torch.from_numpy(x), (1, 1.5, 2), (0.2, 0.1, 1.0))
    assert isinstance(fb, torch.Tensor) and fb.dtype == torch.float32 and fb.shape == x.shape
    f0 = forward_field(x[0], (1, 1.5, 2), (0.2, 0.1, 1.0))
    assert isinstance(f0, np.ndarray)
    np.testing.assert_allclose(fb[0].numpy(), f0, atol=1e-5)
    # linearity and phase conversion
    np.testing.assert_allclose(forward_field(2 * x[1], 1.0), 2 * forward_field(x[1], 1.0), atol=1e-5)
    ph = field_ppm_to_phase(1.0, 10.0, 3.0)
    assert ph == pytest.approx(2 * np.pi * 42.58 * 3.0 * 0.01)
    assert phase_to_field_ppm(ph, 10.0, 3.0) == pytest.approx(1.0)


def test_susceptibility_map_values_lesions_probseg():
    labels = np.zeros((6, 6, 6), np.int64)
    labels[1:5, 1:5, 1:5] = LABEL["wm"]
    labels[2:4, 2:4, 2:4] = LABEL["globus_pallidus"]
    labels[0] = LABEL["bone"]
    table = np.zeros(N_CLASSES)
    for name, v in CHI_PPM.items():
        table[LABEL[name]] = v
    chi = susceptibility_map(labels, None, np.random.default_rng(0), table=table)
    assert chi[2, 2, 2] == pytest.approx(0.1305) and chi[1, 1, 1] == pytest.approx(-0.030)
    assert chi[0, 3, 3] == pytest.approx(-2.1) and chi[5, 5, 5] == pytest.approx(9.2)
    # lesions: haemorrhage +0.6..1.4, calcification -1.4..-0.6, infarct near tissue
    les = np.zeros_like(labels)
    les[1, 1, 1] = LESION_CODE["haemorrhage"]
    les[4, 4, 4] = LESION_CODE["calcification"]
    les[1, 4, 1] = LESION_CODE["infarct"]
    chi_l = susceptibility_map(labels, les, np.random.default_rng(1), table=table)
    assert 0.6 <= chi_l[1, 1, 1] <= 1.4 and -1.4 <= chi_l[4, 4, 4] <= -0.6
    assert abs(chi_l[1, 4, 1] - (-0.030)) < 0.03
    # probseg: chi = sum_c p_c chi_c
    p = np.zeros(labels.shape + (N_CLASSES,))
    p[..., LABEL["wm"]] = 0.25
    p[..., LABEL["cortical_gm"]] = 0.75
    chi_p = susceptibility_map(labels, None, np.random.default_rng(0), probseg=p, table=table)
    np.testing.assert_allclose(chi_p, 0.25 * -0.030 + 0.75 * 0.020, atol=1e-7)
    # per-subject draws: venous blood in range, small variation of brain tissues
    tabs = np.array([subject_chi_table(np.random.default_rng(s)) for s in range(50)])
    vb = tabs[:, LABEL["venous_blood"]]
    assert vb.min() >= 0.19 and vb.max() <= 0.35 and vb.std() > 0.02
    gp = tabs[:, LABEL["globus_pallidus"]]
    assert abs(gp.mean() - 0.1305) < 0.01 and 0.005 < gp.std() < 0.03
    assert np.all(tabs[:, LABEL["air"]] == 9.2)
