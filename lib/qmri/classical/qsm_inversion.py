"""Dipole inversions of a local field (ppm) into susceptibility (ppm): TKD, closed-form L2, TV-ADMM
and the support-constrained CG, with the noise estimate that sets the CG's iteration count.

torch throughout (CPU or GPU, following the input tensor or ``device=``); numpy in gives numpy out.
Voxel sizes in mm. Why hand-written: see :mod:`qmri.classical.qsm`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch

from qmri.classical.bounding_box import mask_box
from qmri.physics.dipole import (
    crop_to,
    dipole_kernel,
    pad_to,
    padded_shape,
)

log = logging.getLogger(__name__)
_DIMS = (-3, -2, -1)


# ----------------------------------------------------------------------------- helpers
def _tensor(x, device=None, dtype=torch.float32) -> tuple[torch.Tensor, bool]:
    """(tensor, input_was_numpy). Tensors keep their device unless ``device`` is given."""
    if isinstance(x, torch.Tensor):
        return x.to(device=device if device is not None else x.device, dtype=dtype), False
    return torch.as_tensor(np.ascontiguousarray(np.asarray(x)), device=device).to(dtype), True


def _out(t: torch.Tensor, as_numpy: bool):
    return t.detach().cpu().numpy() if as_numpy else t


def _voxel(voxel_size) -> tuple[float, float, float]:
    return tuple(float(v) for v in np.broadcast_to(np.asarray(voxel_size, dtype=float), (3,)))  # type: ignore


def _grad_sq_symbol(shape, device, dtype=torch.float32) -> torch.Tensor:
    """sum_i |E_i(k)|^2 with E_i = 1 - exp(2 pi i k_i / N_i) on the rfftn half grid (unit spacing)."""
    out = 0.0
    for ax, n in enumerate(shape):
        m = n // 2 + 1 if ax == 2 else n
        k = torch.arange(m, device=device, dtype=torch.float64)
        e = (2.0 - 2.0 * torch.cos(2.0 * math.pi * k / n)).to(dtype)
        view = [1, 1, 1]
        view[ax] = m
        out = out + e.reshape(view)
    return out  # type: ignore[return-value]


def _grad(x: torch.Tensor) -> torch.Tensor:
    """Forward differences with periodic boundary, stacked on a new axis -4 (voxel units)."""
    return torch.stack([torch.roll(x, -1, d) - x for d in _DIMS], dim=-4)


def _grad_adj(g: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`_grad` (minus the backward-difference divergence)."""
    return sum(torch.roll(g[..., i, :, :, :], 1, d) - g[..., i, :, :, :] for i, d in enumerate(_DIMS))  # type: ignore


def _prep_inversion(field, mask, voxel_size, b0_dir, pad, device):
    f, was_np = _tensor(field, device)
    m, _ = _tensor(mask, f.device)
    shape = tuple(f.shape[-3:])
    grid = padded_shape(shape, pad)
    fp = pad_to(f * m, grid)
    d = dipole_kernel(grid, _voxel(voxel_size), b0_dir, device=f.device, dtype=torch.float32, half=True)
    return f, m, shape, grid, fp, d, was_np


# ----------------------------------------------------------------------------- inversions
def tkd(
    field,
    mask,
    voxel_size: float | Sequence[float],
    b0_dir: Sequence[float] = (0.0, 0.0, 1.0),
    threshold: float = 0.19,
    mode: str = "sign",
    pad: bool | int = True,
    device=None,
):
    """Truncated k-space division (Shmueli et al. 2009; Wharton et al. 2010).

    ``chi = IFFT(F(f) / D_t)`` with ``1/D_t = 1/D`` where ``|D| > threshold`` and, elsewhere,
    ``sign(D)/threshold`` (``mode="sign"``) or 0 (``mode="zero"``); ``D(0)`` maps to 0.

    Args:
        field: local field (ppm), (..., X, Y, Z); used inside ``mask`` only.
        mask: brain mask (bool/0-1), same spatial shape.
        voxel_size: mm per axis. b0_dir: B0 direction in array axes.
        threshold: truncation level of |D| (0.15-0.2 typical; default 0.19).
        pad: zero padding (see ``qmri.physics.dipole.padded_shape``; default 2x).
    Returns:
        chi (ppm) inside the mask, 0 outside; numpy in -> numpy out.
    """
    f, m, shape, grid, fp, d, was_np = _prep_inversion(field, mask, voxel_size, b0_dir, pad, device)
    big = d.abs() > threshold
    if mode == "sign":
        inv = torch.where(big, 1.0 / torch.where(big, d, torch.ones_like(d)), torch.sign(d) / threshold)
    elif mode == "zero":
        inv = torch.where(big, 1.0 / torch.where(big, d, torch.ones_like(d)), torch.zeros_like(d))
    else:
        raise ValueError("mode must be 'sign' or 'zero'")
    chi = torch.fft.irfftn(torch.fft.rfftn(fp, dim=_DIMS) * inv, s=grid, dim=_DIMS)
    return _out(crop_to(chi, shape) * m, was_np)


def closed_form_l2(
    field,
    mask,
    voxel_size: float | Sequence[float],
    b0_dir: Sequence[float] = (0.0, 0.0, 1.0),
    beta: float = 3e-3,
    pad: bool | int = True,
    device=None,
):
    """Closed-form L2 inversion with gradient regularisation (Bilgic et al. 2014; REFERENCE sec. 2).

    ``chi = IFFT( conj(D) F(f) / (|D|^2 + beta * sum_i |E_i|^2) )``, ``E_i(k) = 1 - exp(2 pi i k_i/N_i)``
    (finite differences in voxel units, as in the reference formula).

    Args:
        field: local field (ppm); mask: brain mask; voxel_size: mm; b0_dir: B0 in array axes.
        beta: regularisation weight (dimensionless; default 3e-3 tuned on the test phantoms).
        pad: zero padding (default 2x).
    Returns:
        chi (ppm) inside the mask.
    """
    f, m, shape, grid, fp, d, was_np = _prep_inversion(field, mask, voxel_size, b0_dir, pad, device)
    e2 = _grad_sq_symbol(grid, f.device)
    den = d * d + beta * e2
    den = torch.where(den == 0, torch.ones_like(den), den)
    chi = torch.fft.irfftn(torch.fft.rfftn(fp, dim=_DIMS) * d / den, s=grid, dim=_DIMS)
    return _out(crop_to(chi, shape) * m, was_np)


def magnitude_edge_weights(magnitude, mask, edge_fraction: float = 0.1) -> torch.Tensor | np.ndarray:
    """MEDI-like gradient mask: per direction, 0 at the ``edge_fraction`` largest magnitude gradients
    inside ``mask`` (anatomical edges left unpenalised), 1 elsewhere. Shape (3, X, Y, Z)."""
    mag, was_np = _tensor(magnitude)
    m, _ = _tensor(mask, mag.device)
    mag = mag / mag[m > 0].abs().max().clamp_min(1e-12)
    g = _grad(mag).abs()
    w = torch.ones_like(g)
    inside = m > 0
    for i in range(3):
        gi = g[i][inside]
        if gi.numel():
            t = torch.quantile(gi.float()[:: max(1, gi.numel() // 1_000_000)], 1.0 - edge_fraction)
            w[i] = torch.where(g[i] > t, torch.zeros_like(g[i]), w[i])
    return _out(w, was_np)


def tv_inversion(
    field,
    mask,
    voxel_size: float | Sequence[float],
    b0_dir: Sequence[float] = (0.0, 0.0, 1.0),
    lam: float = 3e-4,
    magnitude=None,
    n_iter: int = 100,
    mu_grad: float | None = None,
    mu_data: float = 1.0,
    data_weight=None,
    edge_fraction: float = 0.1,
    pad: bool | int = 12,
    tol: float = 1e-3,
    device=None,
    log_every: int = 25,
):
    """Total-variation regularised dipole inversion by ADMM (weighted-linear FANSI form).

    Solves ``min_chi 1/2 ||W (D chi - f)||_2^2 + lam ||M_G grad chi||_1`` with the splits
    ``z = grad chi`` and ``y = D chi`` (Bilgic et al. 2014 TV-ADMM; Milovic et al. 2018 FANSI);
    every chi update is a closed-form k-space division, z a soft threshold, y a voxel-wise blend.
    ``W`` is the brain mask (times ``data_weight`` if given), so the data term only acts inside the
    brain. With ``magnitude``, ``M_G`` is the MEDI-like edge mask of :func:`magnitude_edge_weights`
    (no TV penalty across magnitude edges); otherwise ``M_G = 1``.

    Args:
        field: local field (ppm); mask: brain mask; voxel_size: mm; b0_dir: B0 in array axes.
        lam: TV weight (ppm units of the field; default tuned on the test phantoms).
        magnitude: optional magnitude image for edge weighting.
        n_iter: maximum ADMM iterations. tol: stop when the relative chi update < tol.
        mu_grad, mu_data: ADMM penalties (default ``mu_grad = 100 * lam``, ``mu_data = 1``).
        pad: zero margin (voxels per side; default 12) of the periodic FFT grid.
        log_every: progress logging period (iterations) at INFO level.
    Returns:
        chi (ppm) inside the mask.
    """
    f, m, shape, grid, fp, d, was_np = _prep_inversion(field, mask, voxel_size, b0_dir, pad, device)
    mp = pad_to(m, grid)
    w2 = mp.clone()
    if data_weight is not None:
        dw, _ = _tensor(data_weight, f.device)
        w2 = pad_to(dw * m, grid) ** 2
    if magnitude is not None:
        mg = magnitude_edge_weights(_tensor(magnitude, f.device)[0], m, edge_fraction)
        wg = pad_to(mg, grid)
    else:
        wg = torch.ones((3,) + tuple(grid), device=f.device)
    mu1 = 100.0 * lam if mu_grad is None else mu_grad
    mu2 = mu_data
    e2 = _grad_sq_symbol(grid, f.device)
    den = mu2 * d * d + mu1 * e2
    den = torch.where(den == 0, torch.ones_like(den), den)
    thr = lam * wg / mu1

    chi = torch.zeros_like(fp)
    z = torch.zeros((3,) + tuple(grid), device=f.device)
    s1 = torch.zeros_like(z)
    y = fp.clone()  # start from the measured field: the first chi update is then a regularised L2 solve
    s2 = torch.zeros_like(fp)
    w2f = w2 * fp
    it = 0
    for it in range(1, n_iter + 1):
        rhs = mu2 * d * torch.fft.rfftn(y - s2, dim=_DIMS) + mu1 * torch.fft.rfftn(_grad_adj(z - s1), dim=_DIMS)
        chi_k = rhs / den
        chi_new = torch.fft.irfftn(chi_k, s=grid, dim=_DIMS)
        gx = _grad(chi_new)
        v = gx + s1
        z = torch.sign(v) * torch.clamp(v.abs() - thr, min=0.0)
        dchi = torch.fft.irfftn(d * chi_k, s=grid, dim=_DIMS)
        y = (w2f + mu2 * (dchi + s2)) / (w2 + mu2)
        s1 = s1 + gx - z
        s2 = s2 + dchi - y
        change = float(torch.linalg.vector_norm(chi_new - chi) / torch.linalg.vector_norm(chi_new).clamp_min(1e-12))
        chi = chi_new
        if log_every and (it % log_every == 0 or it == 1):
            log.info("tv_inversion: iteration %d/%d, relative update %.2e", it, n_iter, change)
        if it > 5 and change < tol:
            log.info("tv_inversion: converged at iteration %d/%d (relative update %.2e)", it, n_iter, change)
            break
    return _out(crop_to(chi, shape) * m, was_np)


def field_noise_ppm(field, mask) -> float:
    """Robust estimate of the noise sd (ppm) of a local field map.

    Median absolute deviation of the 7-point Laplacian (``scipy.ndimage.laplace``) inside the mask
    eroded by 2 voxels, divided by sqrt(42) (the Laplacian's gain on white noise). Edges of the
    susceptibility also reach the Laplacian, so on a noiseless 2 mm brain phantom this reads about
    0.0009 ppm: it is an upper estimate at low noise (0.0015 for 0.001 ppm, 0.0033 for 0.003). Fields
    with B0 oblique to the grid carry more high-frequency content (noiseless: 0.0024 ppm at 10 deg,
    0.0041 at 20 deg, 0.0062 at 45 deg), so there it over-reads and :func:`masked_cg` stops earlier:
    conservative, never over-fitting.
    """
    from scipy import ndimage

    f = np.asarray(field.detach().cpu() if isinstance(field, torch.Tensor) else field, dtype=np.float64)
    m = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask, dtype=bool)
    inner = ndimage.binary_erosion(m, iterations=2)
    if inner.sum() < 27:
        inner = m
    v = ndimage.laplace(np.where(m, f, 0.0))[inner]
    return float(1.4826 * np.median(np.abs(v - np.median(v))) / math.sqrt(42.0))


# Early-stopping rule of masked_cg: n_iter = k * field SNR, field SNR = sd of the field in the mask
# / field_noise_ppm. Measured NRMSE-optimal counts: held-out 2 mm brain phantoms at field noise
# 0.0005/0.001/0.003/0.006 ppm (field SNR 51/26/8.6/4.3) took about 200/100/30/12 iterations from
# zero and 80/40/10/5 from a QSMnet estimate; the 1 mm ball phantom of the tests (SNR 16/8/4) about
# 40/15/7 from zero. k = 3 and 1.5 sit within a factor 2 of all of these, where the error curve is flat.
CG_ITERATIONS_PER_SNR_FROM_ZERO = 3.0
CG_ITERATIONS_PER_SNR_FROM_PRIOR = 1.5
CG_MAX_ITER = 200


def masked_cg(
    field,
    mask,
    voxel_size: float | Sequence[float],
    b0_dir: Sequence[float] = (0.0, 0.0, 1.0),
    init=None,
    n_iter: int | None = None,
    pad: bool | int = True,
    device=None,
):
    """Support-constrained least-squares dipole inversion by conjugate gradients.

    Solves ``min_chi ||M (D (M chi) - f)||_2^2`` over chi that is zero outside the brain mask ``M``
    (the local-field model: after background removal every source of the field lies inside the
    mask), by CG on the normal equations ``M D M D M chi = M D M f``, starting from ``init``;
    the iteration count is the regulariser (early stopping, as in LSQR-based inversions such as
    iLSQR, Li et al. 2015). Unlike the k-space inversions, the known support also constrains the
    components in the magic cone that an unbounded grid leaves free. Started from a network
    estimate it is the data-consistency step of the QSM network
    (:func:`qmri.models.qsmnet.predict.predict_chi`).

    The solver is :func:`conjugate_gradient` over the mask voxels, on the field's device (the
    operator: two zero-padded FFT dipole convolutions on ``torch.fft``).

    Args:
        field: local field (ppm); mask: brain mask; voxel_size: mm; b0_dir: B0 in array axes.
        init: starting susceptibility (ppm), e.g. a network estimate; zeros if None.
        n_iter: CG iterations. CG on an ill-posed system first recovers the signal, then fits the
            noise, so the count must fall as the noise rises; None (default) sets it to
            ``CG_ITERATIONS_PER_SNR_* x`` the field's SNR (its sd in the mask over
            :func:`field_noise_ppm`), within 5..``CG_MAX_ITER``.
        pad: zero padding of the FFT grid (default 2x, as the forward model).
    Returns:
        chi (ppm) inside the mask, 0 outside; numpy in -> numpy out.
    """
    box = mask_box(mask, margin=2)
    if box is not None:  # sources and data lie in the mask: its bounding box is the whole problem
        cropped = masked_cg(field[box], mask[box], voxel_size, b0_dir, None if init is None else init[box], n_iter, pad, device)
        out = np.zeros(np.shape(mask), np.float32) if isinstance(cropped, np.ndarray) else torch.zeros(tuple(mask.shape), dtype=cropped.dtype, device=cropped.device)
        out[box] = cropped
        return out
    # on the box the problem is the same one (the FFT grid is padded to twice the box, so sources in
    # it do not wrap around, and the noise estimate's Laplacian reaches 1 voxel), but the sampled
    # k-space dipole kernel depends on the grid: on the test ball phantom the result differs from the
    # uncropped one by 0.3 % of the peak chi (tests/test_qsm_classical.py)
    f, m, shape, grid, _, d, was_np = _prep_inversion(field, mask, voxel_size, b0_dir, pad, device)
    local = f * m
    inside = m > 0
    n = int(inside.sum())
    if n == 0:
        raise ValueError("masked_cg: the brain mask is empty")

    def dipole(x: torch.Tensor) -> torch.Tensor:
        xp = pad_to(x, grid)
        return crop_to(torch.fft.irfftn(torch.fft.rfftn(xp, dim=_DIMS) * d, s=grid, dim=_DIMS), shape)

    def scatter(v: torch.Tensor) -> torch.Tensor:
        x = torch.zeros(shape, device=f.device)
        x[inside] = v.to(torch.float32)
        return x

    def normal(v: torch.Tensor) -> torch.Tensor:
        return dipole(dipole(scatter(v)) * m)[inside].double()

    rhs = dipole(local)[inside].double()
    x0 = _tensor(init, f.device)[0][inside].double() if init is not None else None
    if n_iter is None:
        sigma = field_noise_ppm(local, m)
        snr = float(local[inside].std()) / max(sigma, 1e-12)
        k = CG_ITERATIONS_PER_SNR_FROM_ZERO if init is None else CG_ITERATIONS_PER_SNR_FROM_PRIOR
        n_iter = int(np.clip(round(k * snr), 5, CG_MAX_ITER))
        log.info("masked_cg: field noise ~%.2g ppm, field SNR %.1f -> %d CG iterations", sigma, snr, n_iter)
    sol = conjugate_gradient(normal, rhs, x0, int(n_iter), rtol=1e-12)
    return _out(scatter(sol) * m, was_np)


def conjugate_gradient(op, b: torch.Tensor, x0: torch.Tensor | None, maxiter: int, rtol: float = 1e-12) -> torch.Tensor:
    """Conjugate gradients for a symmetric positive (semi-)definite ``op``, on ``b``'s device.

    scipy's ``cg`` (whose iteration this repeats step for step: no preconditioner, stop when the
    residual norm falls below ``rtol * ||b||`` or after ``maxiter`` iterations) works on host numpy
    arrays, so a GPU solve would copy every iterate to the host and back; torch has no CG. Written
    here so the data-consistency step stays on the device; tests check it against scipy.
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - op(x) if x0 is not None else b.clone()
    atol = rtol * float(torch.linalg.vector_norm(b))
    p = rho_prev = None
    for _ in range(maxiter):
        if float(torch.linalg.vector_norm(r)) < atol:
            break
        rho = torch.dot(r, r)
        p = r.clone() if p is None else r + (rho / rho_prev) * p
        q = op(p)
        alpha = rho / torch.dot(p, q)
        x += alpha * p
        r -= alpha * q
        rho_prev = rho
    return x


# ----------------------------------------------------------------------------- unwrapping
