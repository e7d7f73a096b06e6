"""Device and thread settings (qmri.networks.compute) and the device-resident CG of the QSM solvers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qmri.classical.qsm_inversion import conjugate_gradient, masked_cg
from qmri.networks import compute
from qmri.physics.dipole import forward_field

CUDA = torch.cuda.is_available()


def test_device_choices_and_refusals():
    assert compute.resolve("cpu") == torch.device("cpu")
    assert compute.resolve("auto") == torch.device("cuda:0" if CUDA else "cpu")
    for bad in ("gpu", "cuda:x", "tpu", ""):
        with pytest.raises(ValueError, match="choose auto, cpu, cuda or cuda:N"):
            compute.resolve(bad)
    with pytest.raises(ValueError, match="is not available here"):
        compute.resolve(f"cuda:{torch.cuda.device_count() if CUDA else 0}")


def test_threads_are_set_for_torch_and_blas():
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads()
    try:
        assert compute.set_threads(1) == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
    finally:
        compute.set_threads(before)


def test_cg_repeats_scipy_step_for_step():
    """The torch CG is scipy's cg (no preconditioner, same stopping rule): same iterates."""
    from scipy.sparse.linalg import cg

    rng = np.random.default_rng(0)
    q = rng.standard_normal((60, 60))
    a = q @ q.T + 0.1 * np.eye(60)  # symmetric positive definite, ill-conditioned
    b, x0 = rng.standard_normal(60), rng.standard_normal(60)
    for n in (1, 5, 20):
        ref, _ = cg(a, b, x0=x0, rtol=1e-12, atol=0.0, maxiter=n)
        got = conjugate_gradient(lambda v: torch.from_numpy(a) @ v, torch.from_numpy(b), torch.from_numpy(x0), n).numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)
    ref0, _ = cg(a, b, rtol=1e-12, atol=0.0, maxiter=7)
    np.testing.assert_allclose(conjugate_gradient(lambda v: torch.from_numpy(a) @ v, torch.from_numpy(b), None, 7).numpy(), ref0, rtol=1e-9, atol=1e-9)


def _sphere_field(n=24):
    g = np.indices((n,) * 3) - (n - 1) / 2
    mask = (g**2).sum(0) < (0.4 * n) ** 2
    chi = np.where((g**2).sum(0) < (0.15 * n) ** 2, 0.1, 0.0).astype(np.float32)
    return forward_field(chi, (1.0, 1.0, 1.0)).astype(np.float32) * mask, mask, chi


def test_masked_cg_recovers_a_source_inside_the_mask():
    field, mask, chi = _sphere_field()
    out = masked_cg(field, mask, 1.0, n_iter=60)
    assert np.corrcoef(out[mask], chi[mask])[0, 1] > 0.97


@pytest.mark.skipif(not CUDA, reason="no CUDA device on this machine")
def test_masked_cg_on_cuda_matches_cpu():
    field, mask, _ = _sphere_field()
    cpu = masked_cg(field, mask, 1.0, n_iter=30, device="cpu")
    gpu = masked_cg(field, mask, 1.0, n_iter=30, device="cuda")
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)


def test_neumann_solver_dct_equals_the_mirror_fft():
    """The CPU's type-II DCT solve is the mirror-extended FFT solve (GPU path) without the 8x grid."""
    import math

    from qmri.classical.qsm_phase import _neumann_poisson_solver

    r = torch.randn(11, 14, 9, dtype=torch.float64)
    r -= r.mean()
    vx = (1.0, 1.2, 2.0)
    got = _neumann_poisson_solver(r.shape, vx, "cpu")(r)
    big = tuple(2 * n for n in r.shape)
    ext = torch.cat([r, torch.flip(r, dims=(0,))], 0)
    ext = torch.cat([ext, torch.flip(ext, dims=(1,))], 1)
    ext = torch.cat([ext, torch.flip(ext, dims=(2,))], 2)
    sym = 0.0
    for ax, n in enumerate(big):
        m = n // 2 + 1 if ax == 2 else n
        e = (2 - 2 * torch.cos(2 * math.pi * torch.arange(m, dtype=torch.float64) / n)) / vx[ax] ** 2
        view = [1, 1, 1]
        view[ax] = m
        sym = sym + e.reshape(view)
    rk = torch.fft.rfftn(ext)
    rk[0, 0, 0] = 0
    ref = torch.fft.irfftn(rk / torch.where(sym == 0, torch.ones_like(sym), sym), s=big)[:11, :14, :9]
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=0)


def test_raw_qsm_on_a_padded_matrix_equals_the_brain_box():
    """A clinical matrix (brain plus air) maps as its brain's box does: the raw path crops to the mask."""
    import json

    import nibabel as nib

    from conftest import SAMPLE
    from qmri.tasks.registry import task_spec

    img = nib.load(SAMPLE / "studies" / "sub-1000_qsmraw.nii.gz")
    x = np.asarray(img.dataobj, np.float32)
    side = json.loads((SAMPLE / "studies" / "sub-1000_qsmraw.json").read_text())
    spec = task_spec("qsm_raw")
    ref = spec.run(x, img.affine, side, "tkd")[0].data
    pad = ((12, 7), (9, 10), (6, 11), (0, 0))
    big = spec.run(np.pad(x, pad), img.affine, side, "tkd")[0].data
    inner = big[12:-7, 9:-10, 6:-11]
    assert big.shape == tuple(n + a + b for n, (a, b) in zip(x.shape[:3], pad[:3]))
    outside = big.copy()
    outside[12:-7, 9:-10, 6:-11] = 0
    assert not outside.any()  # nothing outside the brain's box
    assert np.linalg.norm(inner - ref) / np.linalg.norm(ref) < 0.05  # only the FFT border conditions differ


def test_memory_admission_per_method_and_brain_extent():
    """The server's admission uses each method's measured model: QSMnet on a 1 mm clinical matrix
    fits a 9 GiB budget (it crops to the brain and runs in windows), TV on the same does not; a
    'brain mask' filling a 256 mm field of view is refused before any work."""
    from qmri.tasks.registry import task_spec
    from qmri.tasks.spec import check_brain_extent

    qsm = task_spec("qsm")
    voxels = 256 * 256 * 200
    assert 3000 < qsm.estimate_mb("qsmnet", voxels) < 6000
    assert qsm.estimate_mb("tv", voxels) > 12000
    assert task_spec("oef").estimate_mb("best", voxels) < task_spec("oef").estimate_mb("qq_fit", voxels) / 5
    full = np.ones((256, 256, 200), bool)
    with pytest.raises(ValueError, match="spans 256 x 256 x 200 mm, more than a brain"):
        check_brain_extent(full, (1.0, 1.0, 1.0), "the mask")
    brain = np.zeros((256, 256, 200), bool)
    brain[60:200, 40:210, 30:160] = True
    check_brain_extent(brain, (1.0, 1.0, 1.0), "the mask")
