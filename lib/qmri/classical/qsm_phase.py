"""From wrapped multi-echo phase to the local field: Laplacian unwrapping, the multi-echo field fit
and V-SHARP background removal (fields in ppm of B0, echo times in ms, B0 in T, voxel sizes in mm).

torch throughout; numpy in gives numpy out. Why hand-written: see :mod:`qmri.classical.qsm`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch

from qmri.physics.dipole import (
    GAMMA_BAR_MHZ_PER_T,
    crop_to,
    pad_to,
    padded_shape,
)

from .qsm_inversion import _DIMS, _grad, _grad_adj, _out, _tensor, _voxel

log = logging.getLogger(__name__)


def _wrap(x: torch.Tensor) -> torch.Tensor:
    return torch.remainder(x + math.pi, 2.0 * math.pi) - math.pi


def _neumann_poisson_solver(shape, voxel_size, device):
    """Solver of the discrete Neumann Poisson problem ``-L x = r`` on a box via mirror extension + FFT
    (on the CPU: the equivalent type-II DCT).

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

    # on the CPU the same solve as a type-II DCT (scipy.fft; torch has none): the mirror extension is
    # the DCT's symmetry, so its eigenvalues are those of the extended FFT, without the 8x grid
    dct_sym = 0.0
    for ax, n in enumerate(shape):
        k = np.arange(n, dtype=np.float64)
        view = [1, 1, 1]
        view[ax] = n
        dct_sym = dct_sym + ((2.0 - 2.0 * np.cos(math.pi * k / n)) / vx[ax] ** 2).reshape(view)
    dct_sym = np.where(dct_sym == 0, 1.0, dct_sym)

    def solve(r: torch.Tensor) -> torch.Tensor:
        if r.device.type == "cpu":
            from scipy import fft as sfft

            workers = torch.get_num_threads()
            rk = sfft.dctn(r.numpy(), type=2, axes=(-3, -2, -1), norm="ortho", workers=workers)
            rk[..., 0, 0, 0] = 0
            return torch.from_numpy(sfft.idctn(rk / dct_sym, type=2, axes=(-3, -2, -1), norm="ortho", workers=workers).astype(r.numpy().dtype, copy=False))
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


#: Voxels per slab of :func:`echo_fit_total_field`'s voxelwise steps (memory, not results).
ECHO_FIT_SLAB_VOXELS = 2**20


def _slabs(shape, voxels: int) -> list[tuple[slice]]:
    """Slabs along the first axis of about ``voxels`` voxels each."""
    per = max(1, voxels // max(1, int(np.prod(shape[1:3]))))
    return [(slice(i, min(i + per, shape[0])),) for i in range(0, shape[0], per)]


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

    # stored in the input's precision (float32 inputs stay float32: a 1 mm head's echoes are GBs in
    # float64); each slab is computed in float64
    def keep(x):
        return torch.float64 if getattr(x, "dtype", None) in (np.float64, torch.float64) else torch.float32

    mag, was_np = _tensor(magnitude, device, keep(magnitude))
    ph, _ = _tensor(phase, mag.device, keep(phase))
    te = torch.as_tensor(np.asarray(te_ms, dtype=np.float64) * 1e-3, device=mag.device)  # s
    m = torch.ones(mag.shape[:3], device=mag.device) if mask is None else _tensor(mask, mag.device, torch.float64)[0]
    scale = 2.0 * math.pi * GAMMA_BAR_MHZ_PER_T * B0_T  # rad/s per ppm
    w_mag = mag[..., 0]
    if te.numel() == 1:
        u = laplacian_unwrap(ph[..., 0].double(), voxel_size, m, weight=w_mag.double())
        field = u / (scale * te[0]) * m
        if return_offset:
            return _out(field, was_np), _out(torch.zeros_like(field), was_np)
        return _out(field, was_np)
    dte_all = torch.diff(te)
    uniform = bool(torch.allclose(dte_all, dte_all[0].expand_as(dte_all), rtol=1e-3))
    dte = float(dte_all[0])
    # the voxelwise steps run slab by slab (ECHO_FIT_SLAB_VOXELS at a time): the complex echoes of a
    # whole 1 mm head in float64 would take several GB; only the spatial unwrap needs the whole grid
    slabs = _slabs(mag.shape, ECHO_FIT_SLAB_VOXELS)
    h = torch.empty(mag.shape[:3], dtype=torch.complex128, device=mag.device)
    for sl in slabs:
        s = mag[sl].double() * torch.exp(1j * ph[sl].double())
        h[sl] = (s[..., 1:] * torch.conj(s[..., :-1])).sum(-1) if uniform else s[..., 1] * torch.conj(s[..., 0])
    dphi = laplacian_unwrap(torch.angle(h), voxel_size, m, weight=h.abs() ** 0.5)
    inside = m > 0
    wd = (h.abs() * m)[inside]
    mean_d = float((dphi[inside] * wd).sum() / wd.sum().clamp_min(1e-30))
    dphi = (dphi - 2.0 * math.pi * round(mean_d / (2.0 * math.pi))) * m
    del h
    omega0 = dphi / dte  # rad/s
    omega = torch.empty(mag.shape[:3], dtype=torch.float64, device=mag.device)
    phi0 = torch.empty_like(omega)
    for sl in slabs:
        ms, ps = mag[sl].double(), ph[sl].double()
        s = ms * torch.exp(1j * ps)
        pred = omega0[sl][..., None] * te  # (x, Y, Z, E)
        p0 = torch.angle((s * torch.exp(-1j * pred)).sum(-1))
        model = p0[..., None] + pred
        unwrapped = model + _wrap(ps - model)
        # weighted linear fit phi = a + omega * te, weights |S|^2
        w = ms**2
        sw = w.sum(-1).clamp_min(1e-30)
        t_mean = (w * te).sum(-1) / sw
        p_mean = (w * unwrapped).sum(-1) / sw
        tc = te - t_mean[..., None]
        omega[sl] = (w * tc * (unwrapped - p_mean[..., None])).sum(-1) / (w * tc * tc).sum(-1).clamp_min(1e-30)
        phi0[sl] = p_mean - omega[sl] * t_mean
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
    # a relative tolerance: voxel sizes read from a float32 NIfTI affine differ from the nominal
    # ones by ~1e-7 relative, which must not move voxels at exactly the radius in or out of the sphere
    k = (r2 <= radius_mm**2 * (1.0 + 1e-5)).to(torch.float32)
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
