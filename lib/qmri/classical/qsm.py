"""Classical QSM: phase unwrapping, echo fitting, background removal and dipole inversion.

Pipeline (shared/REFERENCE.md section 2)::

    wrapped multi-echo phase --laplacian_unwrap / echo_fit_total_field--> total field (ppm)
        --vsharp--> local field (ppm) in an eroded brain mask
        --tkd | closed_form_l2 | tv_inversion | masked_cg--> susceptibility (ppm)

All heavy maths is torch (CPU or GPU, following the input tensor's device or ``device=``);
numpy in gives numpy out. Fields are in ppm of B0, susceptibility in ppm, voxel sizes in mm,
echo times in ms, B0 in tesla. A QSM map is defined up to a constant (D(0) = 0): compare maps
after referencing (:func:`nrmse` subtracts the mask mean by default).

Why hand-written: torch, MONAI and scipy ship no dipole inversion, no Laplacian/least-squares
phase unwrapping with a mask, no SMV/V-SHARP background removal and no QSM TV-ADMM; the
pieces are short and written on ``torch.fft`` so that they run on the GPU. (scikit-image's
``unwrap_phase`` is a CPU-only path-following unwrapper and not a declared dependency.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch

from ..metrics.maps import nrmse  # noqa: F401  (re-exported: the inversions' tests and benches use it)

from qmri.physics.dipole import (
    GAMMA_BAR_MHZ_PER_T,
    crop_to,
    dipole_kernel,
    pad_to,
    padded_shape,
)

__all__ = [
    "nrmse",
    "tkd",
    "closed_form_l2",
    "tv_inversion",
    "masked_cg",
    "field_noise_ppm",
    "magnitude_edge_weights",
    "laplacian_unwrap",
    "echo_fit_total_field",
    "sphere_kernel",
    "vsharp",
    "qsm_from_gre",
]

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
    (:func:`qmri.networks.qsm_predict.predict_chi`).

    The solver is scipy's ``cg`` on a ``LinearOperator`` over the mask voxels; only the operator
    (two zero-padded FFT dipole convolutions) is written here, on ``torch.fft``.

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
    from scipy.sparse.linalg import LinearOperator, cg

    f, m, shape, grid, _, d, was_np = _prep_inversion(field, mask, voxel_size, b0_dir, pad, device)
    local = f * m
    inside = m > 0
    n = int(inside.sum())
    if n == 0:
        raise ValueError("masked_cg: the brain mask is empty")

    def dipole(x: torch.Tensor) -> torch.Tensor:
        xp = pad_to(x, grid)
        return crop_to(torch.fft.irfftn(torch.fft.rfftn(xp, dim=_DIMS) * d, s=grid, dim=_DIMS), shape)

    def scatter(v: np.ndarray) -> torch.Tensor:
        x = torch.zeros(shape, device=f.device)
        x[inside] = torch.as_tensor(v, dtype=torch.float32, device=f.device)
        return x

    def normal(v: np.ndarray) -> np.ndarray:
        return dipole(dipole(scatter(v)) * m)[inside].double().cpu().numpy()

    op = LinearOperator((n, n), matvec=normal, dtype=np.float64)
    rhs = dipole(local)[inside].double().cpu().numpy()
    x0 = None
    if init is not None:
        x0 = _tensor(init, f.device)[0][inside].double().cpu().numpy()
    if n_iter is None:
        sigma = field_noise_ppm(local, m)
        snr = float(local[inside].std()) / max(sigma, 1e-12)
        k = CG_ITERATIONS_PER_SNR_FROM_ZERO if init is None else CG_ITERATIONS_PER_SNR_FROM_PRIOR
        n_iter = int(np.clip(round(k * snr), 5, CG_MAX_ITER))
        log.info("masked_cg: field noise ~%.2g ppm, field SNR %.1f -> %d CG iterations", sigma, snr, n_iter)
    sol, _ = cg(op, rhs, x0=x0, rtol=1e-12, atol=0.0, maxiter=int(n_iter))
    return _out(scatter(sol) * m, was_np)


# ----------------------------------------------------------------------------- unwrapping
def _wrap(x: torch.Tensor) -> torch.Tensor:
    return torch.remainder(x + math.pi, 2.0 * math.pi) - math.pi


def _neumann_poisson_solver(shape, voxel_size, device):
    """Solver of the discrete Neumann Poisson problem ``-L x = r`` on a box via mirror extension + FFT.

    Returns a function r -> x (zero-mean), L the 7-point Laplacian with voxel sizes (mm^-2).
    """
    vx = _voxel(voxel_size)
    big = tuple(2 * n for n in shape)
    sym = 0.0
    for ax, n in enumerate(big):
        m = n // 2 + 1 if ax == 2 else n
        k = torch.arange(m, device=device, dtype=torch.float64)
        e = ((2.0 - 2.0 * torch.cos(2.0 * math.pi * k / n)) / vx[ax] ** 2).to(torch.float32)
        view = [1, 1, 1]
        view[ax] = m
        sym = sym + e.reshape(view)
    sym = torch.where(sym == 0, torch.ones_like(sym), sym)  # type: ignore[arg-type]

    def solve(r: torch.Tensor) -> torch.Tensor:
        ext = torch.cat([r, torch.flip(r, dims=(-3,))], dim=-3)
        ext = torch.cat([ext, torch.flip(ext, dims=(-2,))], dim=-2)
        ext = torch.cat([ext, torch.flip(ext, dims=(-1,))], dim=-1)
        rk = torch.fft.rfftn(ext, dim=_DIMS)
        rk[..., 0, 0, 0] = 0
        x = torch.fft.irfftn(rk / sym, s=big, dim=_DIMS)
        return x[..., : shape[0], : shape[1], : shape[2]]

    return solve


def laplacian_unwrap(
    phase,
    voxel_size: float | Sequence[float] = 1.0,
    mask=None,
    weight=None,
    n_iter: int = 100,
    tol: float = 1e-5,
    congruent: bool = True,
    device=None,
):
    """Laplacian (least-squares) phase unwrapping in a mask.

    Schofield & Zhu (2003) recover the phase from its Laplacian, ``lap(phi) = cos(phi) lap(sin phi)
    - sin(phi) lap(cos phi)``, by an inverse Laplacian. In discrete form that identity is the sum
    over the 6 neighbours of ``sin(phi_j - phi_i)``; here the wrapped difference is used instead of
    its sine (exact wherever the true phase changes by less than pi per voxel; Ghiglia & Romero
    1994). Inside ``mask`` the resulting Poisson equation with Neumann conditions on the mask
    boundary is solved by conjugate gradients preconditioned with the box Neumann (mirror-FFT)
    solver, so noise outside the mask does not leak in. With ``congruent=True`` the smooth solution
    is then rounded to the wrapped data: ``phi = phi_w + 2 pi round((psi - phi_w)/2 pi)`` after a
    global constant has been fitted, giving the exactly unwrapped phase up to a 2 pi multiple.

    Args:
        phase: wrapped phase (rad), (X, Y, Z).
        voxel_size: mm per axis.
        mask: optional region (bool); None = whole array.
        weight: optional non-negative voxel weights (e.g. magnitude) for the least-squares fit;
            a difference counts with ``min(weight_i, weight_j)``.
        n_iter, tol: CG iteration limit and relative residual tolerance.
        congruent: round to the wrapped data (see above).
    Returns:
        Unwrapped phase (rad), 0 outside the mask; numpy in -> numpy out.
    """
    p, was_np = _tensor(phase, device)
    shape = tuple(p.shape)
    vx = _voxel(voxel_size)
    m = torch.ones_like(p) if mask is None else _tensor(mask, p.device)[0]
    wv = m if weight is None else _tensor(weight, p.device)[0].clamp_min(0) * m
    # edge weights between voxel i and its + neighbour on each axis (no wrap across the array border)
    wedge = []
    for ax, d in enumerate(_DIMS):
        we = torch.minimum(wv, torch.roll(wv, -1, d)) / vx[ax] ** 2
        idx = [slice(None)] * 3
        idx[ax] = slice(-1, None)
        we[tuple(idx)] = 0.0
        wedge.append(we)
    wedge_t = torch.stack(wedge)

    def A(x: torch.Tensor) -> torch.Tensor:  # G^T W G: weighted graph Laplacian (positive semi-definite)
        return _grad_adj(wedge_t * _grad(x))

    b = _grad_adj(wedge_t * torch.stack([_wrap(torch.roll(p, -1, d) - p) for d in _DIMS]))
    inside = m > 0
    precond = _neumann_poisson_solver(shape, vx, p.device)
    wmean = float(wv[inside].mean()) if inside.any() else 1.0

    def M(r: torch.Tensor) -> torch.Tensor:
        return precond(r) * m / max(wmean, 1e-12)

    x = torch.zeros_like(p)
    r = b.clone()
    z = M(r)
    q = z.clone()
    rz = float((r * z).sum())
    bnorm = float(torch.linalg.vector_norm(b)) or 1.0
    res, it = 1.0, 0
    for it in range(n_iter):
        aq = A(q)
        denom = float((q * aq).sum())
        if denom <= 0:
            break
        alpha = rz / denom
        x = x + alpha * q
        r = r - alpha * aq
        res = float(torch.linalg.vector_norm(r)) / bnorm
        if res < tol:
            break
        z = M(r)
        rz_new = float((r * z).sum())
        q = z + (rz_new / rz) * q
        rz = rz_new
    log.debug("laplacian_unwrap: CG stopped after %d iterations, relative residual %.1e", it + 1, res)
    x = x * m
    if congruent:
        # constant that best aligns psi with the wrapped data, then round to 2 pi multiples
        c = torch.angle((torch.exp(1j * (p - x).to(torch.float64)) * wv).sum())
        x = x + float(c)
        x = p + 2.0 * math.pi * torch.round((x - p) / (2.0 * math.pi))
        x = x * m
    return _out(x, was_np)


def echo_fit_total_field(
    magnitude,
    phase,
    te_ms: Sequence[float],
    B0_T: float = 3.0,
    mask=None,
    voxel_size: float | Sequence[float] = 1.0,
    return_offset: bool = False,
    device=None,
):
    """Total field (ppm) from multi-echo magnitude and wrapped phase.

    1. Spatially unwrap the inter-echo phase difference ``angle(sum_n S_{n+1} conj(S_n))`` (echo
       spacing dTE; small phase, few wraps) with :func:`laplacian_unwrap` -> a first frequency map;
       its global 2 pi ambiguity is fixed by putting the masked mean in (-pi, pi].
    2. Temporally unwrap every echo against the model ``p0 + omega * TE`` of that map.
    3. Weighted least-squares line fit of unwrapped phase vs TE with weights ``magnitude^2``
       (intercept = receiver phase phi0), ``field = omega / (2 pi gamma_bar B0)``.

    Args:
        magnitude, phase: (X, Y, Z, n_echo), phase in rad (wrapped).
        te_ms: echo times (ms), ascending, at least 2 (one echo: spatial unwrap of that echo, phi0
            then stays in the field).
        B0_T: field strength (T). mask: region to unwrap (None = all). voxel_size: mm.
        return_offset: also return the fitted phase offset phi0 (rad).
    Returns:
        field in ppm (X, Y, Z), 0 outside the mask [, phi0 in rad].
    """
    mag, was_np = _tensor(magnitude, device, torch.float64)
    ph, _ = _tensor(phase, mag.device, torch.float64)
    te = torch.as_tensor(np.asarray(te_ms, dtype=np.float64) * 1e-3, device=mag.device)  # s
    m = torch.ones(mag.shape[:3], device=mag.device) if mask is None else _tensor(mask, mag.device, torch.float64)[0]
    scale = 2.0 * math.pi * GAMMA_BAR_MHZ_PER_T * B0_T  # rad/s per ppm
    s = mag * torch.exp(1j * ph)
    w_mag = mag[..., 0]
    if te.numel() == 1:
        u = laplacian_unwrap(ph[..., 0], voxel_size, m, weight=w_mag)
        field = u / (scale * te[0]) * m
        if return_offset:
            return _out(field, was_np), _out(torch.zeros_like(field), was_np)
        return _out(field, was_np)
    dte_all = torch.diff(te)
    uniform = bool(torch.allclose(dte_all, dte_all[0].expand_as(dte_all), rtol=1e-3))
    if uniform:
        h = (s[..., 1:] * torch.conj(s[..., :-1])).sum(-1)
        dte = float(dte_all[0])
    else:
        h = s[..., 1] * torch.conj(s[..., 0])
        dte = float(dte_all[0])
    dphi = laplacian_unwrap(torch.angle(h), voxel_size, m, weight=h.abs() ** 0.5)
    inside = m > 0
    wd = (h.abs() * m)[inside]
    mean_d = float((dphi[inside] * wd).sum() / wd.sum().clamp_min(1e-30))
    dphi = (dphi - 2.0 * math.pi * round(mean_d / (2.0 * math.pi))) * m
    omega0 = dphi / dte  # rad/s
    pred = omega0[..., None] * te  # (X, Y, Z, E)
    p0 = torch.angle((s * torch.exp(-1j * pred)).sum(-1))
    model = p0[..., None] + pred
    unwrapped = model + _wrap(ph - model)
    # weighted linear fit phi = a + omega * te, weights |S|^2
    w = mag**2
    sw = w.sum(-1).clamp_min(1e-30)
    t_mean = (w * te).sum(-1) / sw
    p_mean = (w * unwrapped).sum(-1) / sw
    tc = te - t_mean[..., None]
    omega = (w * tc * (unwrapped - p_mean[..., None])).sum(-1) / (w * tc * tc).sum(-1).clamp_min(1e-30)
    phi0 = p_mean - omega * t_mean
    field = omega / scale * m
    if return_offset:
        return _out(field, was_np), _out(_wrap(phi0) * m, was_np)
    return _out(field, was_np)


# ----------------------------------------------------------------------------- background removal
def sphere_kernel(shape: Sequence[int], radius_mm: float, voxel_size: float | Sequence[float], device=None) -> torch.Tensor:
    """Normalised spherical mean-value kernel (sum 1) of ``radius_mm`` centred at index 0 (FFT
    layout) on a grid of ``shape``; anisotropic voxels give an ellipsoid in voxel units."""
    vx = _voxel(voxel_size)
    coords = []
    for ax, n in enumerate(shape):
        i = (torch.arange(n, device=device) + n // 2) % n - n // 2
        view = [1, 1, 1]
        view[ax] = n
        coords.append((i.to(torch.float32) * vx[ax]).reshape(view))
    r2 = coords[0] ** 2 + coords[1] ** 2 + coords[2] ** 2
    k = (r2 <= radius_mm**2 + 1e-6).to(torch.float32)
    return k / k.sum()


def vsharp(
    total_field,
    mask,
    voxel_size: float | Sequence[float],
    radii_mm: Sequence[float] = (12.0, 10.0, 8.0, 6.0, 4.0),
    threshold: float = 0.05,
    device=None,
):
    """V-SHARP background field removal (Schweser et al. 2011; Wu et al. 2012; Li et al. 2011).

    For each voxel the largest spherical mean value (SMV) radius whose sphere lies inside the mask
    is used for the high-pass ``f - S_r * f`` (a harmonic background field vanishes); the result is
    deconvolved with the largest kernel, ``F^-1[ F(f_hp) / (1 - S_rmax) ]`` where
    ``|1 - S_rmax| > threshold`` (0 elsewhere), and masked with the mask eroded by the smallest radius.

    Args:
        total_field: field (ppm), (X, Y, Z). mask: brain mask. voxel_size: mm.
        radii_mm: SMV radii in mm (any order). threshold: truncation of the deconvolution.
    Returns:
        (local field in ppm, eroded mask) ; numpy in -> numpy out (mask as bool).
    """
    f, was_np = _tensor(total_field, device)
    m, _ = _tensor(mask, f.device)
    vx = _voxel(voxel_size)
    radii = sorted((float(r) for r in radii_mm), reverse=True)
    shape = tuple(f.shape)
    margin = [int(math.ceil(radii[0] / v)) + 1 for v in vx]
    grid = padded_shape(shape, margin)
    fp = pad_to(f * m, grid)
    mp = pad_to(m, grid)
    fk = torch.fft.rfftn(fp, dim=_DIMS)
    mk = torch.fft.rfftn(mp, dim=_DIMS)
    hp = torch.zeros_like(fp)
    done = torch.zeros_like(mp, dtype=torch.bool)
    s_max = None
    for r in radii:
        sk = torch.fft.rfftn(sphere_kernel(grid, r, vx, f.device), dim=_DIMS)
        if s_max is None:
            s_max = sk
        inside = (torch.fft.irfftn(mk * sk, s=grid, dim=_DIMS) > 0.999) & (mp > 0)
        new = inside & ~done
        if new.any():
            hp_r = fp - torch.fft.irfftn(fk * sk, s=grid, dim=_DIMS)
            hp = torch.where(new, hp_r, hp)
            done = done | new
    emask = done
    kern = 1.0 - s_max.real  # type: ignore[union-attr]
    keep = kern.abs() > threshold
    inv = torch.where(keep, 1.0 / torch.where(keep, kern, torch.ones_like(kern)), torch.zeros_like(kern))
    local = torch.fft.irfftn(torch.fft.rfftn(hp * emask, dim=_DIMS) * inv, s=grid, dim=_DIMS) * emask
    local = crop_to(local, shape)
    emask = crop_to(emask, shape)
    if was_np:
        return local.cpu().numpy(), emask.cpu().numpy()
    return local, emask


# ----------------------------------------------------------------------------- pipeline
def qsm_from_gre(
    magnitude,
    phase,
    mask,
    te_ms: Sequence[float],
    voxel_size: float | Sequence[float],
    b0_dir: Sequence[float] = (0.0, 0.0, 1.0),
    B0_T: float = 3.0,
    method: str = "l2",
    radii_mm: Sequence[float] = (12.0, 10.0, 8.0, 6.0, 4.0),
    device=None,
    **inversion_kwargs,
) -> dict:
    """Raw multi-echo GRE -> QSM: echo fit (with unwrapping) -> V-SHARP -> dipole inversion.

    Args:
        magnitude, phase: (X, Y, Z, n_echo), phase wrapped (rad). mask: brain mask.
        te_ms: echo times (ms). voxel_size: mm. b0_dir: B0 in array axes. B0_T: tesla.
        method: "l2" (closed form), "tkd" or "tv" (magnitude-edge-weighted TV-ADMM).
        radii_mm: V-SHARP radii (mm). inversion_kwargs: passed to the inversion.
    Returns:
        dict with ``chi`` (ppm), ``local_field`` (ppm), ``total_field`` (ppm), ``mask`` (eroded).
    """
    total = echo_fit_total_field(magnitude, phase, te_ms, B0_T, mask=mask, voxel_size=voxel_size, device=device)
    local, emask = vsharp(total, mask, voxel_size, radii_mm=radii_mm, device=device)
    if method == "l2":
        chi = closed_form_l2(local, emask, voxel_size, b0_dir, device=device, **inversion_kwargs)
    elif method == "tkd":
        chi = tkd(local, emask, voxel_size, b0_dir, device=device, **inversion_kwargs)
    elif method == "tv":
        mag0 = magnitude[..., 0]
        chi = tv_inversion(local, emask, voxel_size, b0_dir, magnitude=mag0, device=device, **inversion_kwargs)
    else:
        raise ValueError("method must be 'l2', 'tkd' or 'tv'")
    return {"chi": chi, "local_field": local, "total_field": total, "mask": emask}
