"""Classical PET partial-volume correction following PETPVC's conventions.

Reference implementation: PETPVC (Thomas B.A. et al., "PETPVC: a toolbox for performing partial
volume correction techniques in positron emission tomography", Phys. Med. Biol. 61:7975, 2016;
github.com/UCL/PETPVC, ``lib/petpvc*ImageFilter.txx``) and REFERENCE.md section 3.

Conventions shared by every method
----------------------------------
* ``pet`` is a 3D (x, y, z) image (numpy or torch); the output has the same type (numpy in, numpy
  out; torch in, torch out on the input's device). Units are preserved (SUV, kBq/mL, ...).
* PSF: Gaussian, ``fwhm_mm`` scalar or per axis in mm, variance ``(FWHM/2.3548)^2`` mm^2 applied in
  physical units with ``voxel_size`` (mm); blurring is :func:`qmri.physics.pet.gaussian_psf` in torch
  (replicate boundary, like ITK's DiscreteGaussianImageFilter used by PETPVC).
* Region masks: 4D, one region per volume, probabilistic allowed, background included so the voxel
  sums are 1. Layout ``"last"`` = (x, y, z, R) as stored in a PETPVC 4D NIfTI, ``"first"`` =
  (R, x, y, z); ``"auto"`` (default) infers it from the PET shape and refuses ambiguous shapes.
* Computations run in float32 on ``device`` (default: the PET tensor's device, or CPU); region sums
  and the small R x R systems are accumulated/solved in float64.

Not every PETPVC detail is reproduced literally; departures are named where they occur
(Richardson-Lucy uses the textbook re-blurred ratio that REFERENCE.md gives, see there).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from qmri.physics.pet import gaussian_psf

_MASK_SUM_TOL = 1e-2


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


def _as_tensor(x, name: str, device=None) -> tuple[torch.Tensor, bool, torch.device | None]:
    """Return (float32 tensor, was_numpy, original device)."""
    if isinstance(x, torch.Tensor):
        orig = x.device
        t = x.detach().to(device=device or x.device, dtype=torch.float32)
        return t, False, orig
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric numpy array or torch tensor") from exc
    return torch.as_tensor(arr, device=device), True, None


def _prepare_pet(pet, device=None):
    g, was_numpy, orig = _as_tensor(pet, "pet", device)
    if g.ndim != 3:
        raise ValueError(f"pet must be a 3D image (x,y,z), got shape {tuple(g.shape)}")
    if not torch.isfinite(g).all():
        raise ValueError("pet contains NaN or infinite values")
    return g, was_numpy, orig


def _output(f: torch.Tensor, was_numpy: bool, orig):
    return f.cpu().numpy() if was_numpy else f.to(orig)


def _prepare_masks(masks, shape: tuple[int, ...], device, layout: str = "auto", sum_tol: float = _MASK_SUM_TOL) -> torch.Tensor:
    """Validate a 4D region mask and return it channel-first (R, x, y, z), float32."""
    m, _, _ = _as_tensor(masks, "masks", device)
    if m.ndim != 4:
        raise ValueError(f"masks must be 4D (x,y,z,R) or (R,x,y,z), got shape {tuple(m.shape)}; PETPVC needs one region per volume")
    last_ok = tuple(m.shape[:3]) == tuple(shape)
    first_ok = tuple(m.shape[1:]) == tuple(shape)
    if layout == "auto":
        if last_ok and first_ok:
            raise ValueError(f"masks shape {tuple(m.shape)} is ambiguous for pet shape {tuple(shape)}: pass mask_layout='last' or 'first'")
        if not (last_ok or first_ok):
            raise ValueError(f"masks shape {tuple(m.shape)} does not match pet shape {tuple(shape)} as (x,y,z,R) or (R,x,y,z)")
        layout = "last" if last_ok else "first"
    if layout == "last":
        if not last_ok:
            raise ValueError(f"masks shape {tuple(m.shape)} is not (x,y,z,R) for pet shape {tuple(shape)}")
        m = m.permute(3, 0, 1, 2)
    elif layout == "first":
        if not first_ok:
            raise ValueError(f"masks shape {tuple(m.shape)} is not (R,x,y,z) for pet shape {tuple(shape)}")
    else:
        raise ValueError(f"mask_layout must be 'auto', 'last' or 'first', got {layout!r}")
    m = m.contiguous()
    if m.shape[0] < 2:
        raise ValueError(f"masks need at least 2 regions (background included), got {m.shape[0]}")
    if not torch.isfinite(m).all():
        raise ValueError("masks contain NaN or infinite values")
    lo, hi = float(m.min()), float(m.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"mask values must lie in [0, 1] (probabilities), got range [{lo:.4g}, {hi:.4g}]")
    dev = (m.sum(0) - 1).abs()
    worst = float(dev.max())
    if worst > sum_tol:
        n_bad = int((dev > sum_tol).sum())
        raise ValueError(f"masks must sum to 1 in every voxel (background region included, PETPVC convention); {n_bad} voxels deviate, max |sum - 1| = {worst:.4g}")
    sizes = m.sum(dim=(1, 2, 3))
    empty = [i for i, s in enumerate(sizes.tolist()) if s <= 0]
    if empty:
        raise ValueError(f"mask regions {empty} are empty; remove them (the GTM would be singular)")
    return m.clamp(0, 1)


def _prepare_3d_mask(mask, shape, device, name: str) -> torch.Tensor:
    m, _, _ = _as_tensor(mask, name, device)
    if tuple(m.shape) != tuple(shape):
        raise ValueError(f"{name} shape {tuple(m.shape)} does not match pet shape {tuple(shape)}")
    if not torch.isfinite(m).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = float(m.min()), float(m.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"{name} values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return m.clamp(0, 1)


def _check_n_iter(n_iter: int) -> int:
    if int(n_iter) != n_iter or n_iter < 1:
        raise ValueError(f"n_iter must be a positive integer, got {n_iter}")
    return int(n_iter)


def _safe_div(num: torch.Tensor, den: torch.Tensor, rel_eps: float = 1e-6) -> torch.Tensor:
    """num / den, 0 where |den| < rel_eps * max|den| (no activity anywhere near: nothing to correct)."""
    eps = rel_eps * float(den.abs().max()) + 1e-30
    ok = den.abs() > eps
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


# --------------------------------------------------------------------------------------------
# Region-based methods
# --------------------------------------------------------------------------------------------


class GTMResult(NamedTuple):
    """Output of :func:`gtm`. ``values[i]`` is the PV-corrected mean of region i (PET units)."""

    values: np.ndarray  # (R,) corrected regional values t = W^-1 obs
    matrix: np.ndarray  # (R, R) W[i, j] = sum(h*m_i . m_j) / sum(h*m_i)
    observed: np.ndarray  # (R,) obs_i = sum(g . m_i) / sum(h*m_i)
    region_size: np.ndarray  # (R,) sum(h*m_i) in voxels


def _gtm_from(g: torch.Tensor, m: torch.Tensor, fwhm_mm, voxel_size) -> GTMResult:
    hm = gaussian_psf(m, fwhm_mm, voxel_size)  # (R, x, y, z): h * m_i
    R = m.shape[0]
    flat_hm = hm.reshape(R, -1).double()
    flat_m = m.reshape(R, -1).double()
    size = flat_hm.sum(1)  # sum(h*m_i)
    W = (flat_hm @ flat_m.T) / size[:, None]  # W[i, j] = sum(h*m_i . m_j) / sum(h*m_i)
    obs = (flat_m @ g.reshape(-1).double()) / size  # sum(g . m_i) / sum(h*m_i)
    W_np, obs_np = W.cpu().numpy(), obs.cpu().numpy()
    try:
        t = np.linalg.solve(W_np, obs_np)
    except np.linalg.LinAlgError as exc:
        raise ValueError("GTM matrix is singular: two regions are identical or a region is empty") from exc
    return GTMResult(values=t, matrix=W_np, observed=obs_np, region_size=size.cpu().numpy())


def gtm(pet, masks, fwhm_mm, voxel_size, mask_layout: str = "auto", device=None) -> GTMResult:
    """Geometric transfer matrix (Rousset 1998) regional correction, PETPVC formulation.

    ``W[i][j] = sum(h*m_i . m_j) / sum(h*m_i)``, ``obs_i = sum(g . m_i) / sum(h*m_i)``,
    ``t = W^-1 obs`` (solved, not inverted). With ``g = h * sum_j t_j m_j`` and a symmetric PSF this
    recovers the region values exactly. ``fwhm_mm``/``voxel_size`` in mm. Returns a :class:`GTMResult`
    (``values``: one corrected value per mask region, in PET units; ``matrix``: the GTM).
    """
    g, _, _ = _prepare_pet(pet, device)
    m = _prepare_masks(masks, tuple(g.shape), g.device, mask_layout)
    return _gtm_from(g, m, fwhm_mm, voxel_size)


def _region_image(values, m: torch.Tensor) -> torch.Tensor:
    v = torch.as_tensor(np.asarray(values, dtype=np.float32), device=m.device)
    return torch.einsum("r,rxyz->xyz", v, m)


def rbv(pet, masks, fwhm_mm, voxel_size, mask_layout: str = "auto", device=None):
    """Region-based voxel-wise correction (Thomas et al. 2011), PETPVC formulation.

    GTM values ``t`` (:func:`gtm`), synthetic image ``s = sum_i t_i m_i``, corrected image
    ``f = g . s / (h * s)`` (0 where ``h*s`` vanishes). Same type/shape/units as ``pet``.
    """
    g, was_numpy, orig = _prepare_pet(pet, device)
    m = _prepare_masks(masks, tuple(g.shape), g.device, mask_layout)
    t = _gtm_from(g, m, fwhm_mm, voxel_size).values
    s = _region_image(t, m)
    f = g * _safe_div(s, gaussian_psf(s, fwhm_mm, voxel_size))
    return _output(f, was_numpy, orig)


def iterative_yang(pet, masks, fwhm_mm, voxel_size, n_iter: int = 10, mask_layout: str = "auto", device=None):
    """Iterative Yang correction (Erlandsson et al. 2012), PETPVC formulation.

    ``f_0 = g``; each iteration: ``mu_i = max(sum(f . m_i) / sum(m_i), 0)``; PETPVC's fuzziness
    correction ``mu <- F^-1 mu`` with ``F[i][j] = sum(m_i . m_j) / sum(m_i)`` (identity for binary
    masks); ``s = sum_i mu_i m_i``; ``f = g . s / (h * s)``. 10 iterations by default (PETPVC).
    Same type/shape/units as ``pet``.
    """
    n_iter = _check_n_iter(n_iter)
    g, was_numpy, orig = _prepare_pet(pet, device)
    m = _prepare_masks(masks, tuple(g.shape), g.device, mask_layout)
    R = m.shape[0]
    flat_m = m.reshape(R, -1).double()
    size = flat_m.sum(1)
    fuzzy = ((flat_m @ flat_m.T) / size[:, None]).cpu().numpy()
    f = g
    for _ in range(n_iter):
        mu = np.maximum((flat_m @ f.reshape(-1).double() / size).cpu().numpy(), 0.0)
        mu = np.linalg.solve(fuzzy, mu)
        s = _region_image(mu, m)
        f = g * _safe_div(s, gaussian_psf(s, fwhm_mm, voxel_size))
    return _output(f, was_numpy, orig)


def petpvc_wm_erosion_radius_voxels(voxel_size) -> int:
    """PETPVC's MG white-matter erosion ball radius (voxels) from the mean voxel size (mm).

    6 for <= 1 mm, 3 for >= 2.5 mm, else ``round(8 - 2 * mean_voxel_mm)`` (4 at 2 mm).
    """
    avg = float(np.mean(np.broadcast_to(np.asarray(voxel_size, dtype=float), (3,))))
    if avg <= 1.0:
        return 6
    if avg >= 2.5:
        return 3
    return int(np.floor(avg * -2.0 + 8.0 + 0.5))


def eroded_wm_mask(wm, voxel_size, wm_erosion_mm=None, threshold: float = 0.99) -> np.ndarray:
    """Boolean core-WM mask used to estimate the WM activity in Muller-Gartner.

    Voxels with WM probability >= ``threshold`` (PETPVC erodes the voxels whose WM value is 1) are
    eroded with a ball: radius ``wm_erosion_mm`` in mm (ellipsoid in voxels for anisotropic grids), or
    PETPVC's voxel radius rule (:func:`petpvc_wm_erosion_radius_voxels`) when None. Implemented as a
    Euclidean distance transform threshold (a voxel survives if no non-WM voxel centre lies within
    the radius), which equals binary erosion with a ball structuring element.
    """
    wm = np.asarray(wm.detach().cpu() if isinstance(wm, torch.Tensor) else wm, dtype=np.float32)
    core = wm >= threshold
    if wm_erosion_mm is None:
        dist = ndimage.distance_transform_edt(core)
        return dist > petpvc_wm_erosion_radius_voxels(voxel_size)
    if wm_erosion_mm < 0:
        raise ValueError(f"wm_erosion_mm must be >= 0 mm, got {wm_erosion_mm}")
    sampling = np.broadcast_to(np.asarray(voxel_size, dtype=float), (3,))
    dist = ndimage.distance_transform_edt(core, sampling=sampling)
    return dist > wm_erosion_mm


def muller_gartner(pet, gm, wm, fwhm_mm, voxel_size, wm_erosion_mm=None, c_wm: float | None = None, concentration: bool = False, device=None):
    """Muller-Gartner (1992) grey-matter correction, PETPVC formulation.

    ``C_WM`` = mean of ``g`` over the eroded WM mask (:func:`eroded_wm_mask`; or the given ``c_wm``,
    PETPVC's ``-x`` option); ``f = (g - h*(C_WM . WM)) . GM / (h*GM)``; values outside
    ``[0, 10 C_WM]`` (including the division's blow-ups outside GM) are set to 0. CSF activity is
    assumed to be zero. ``gm``/``wm`` are 3D probability maps in [0, 1]; ``fwhm_mm``, ``voxel_size``,
    ``wm_erosion_mm`` in mm.

    Returns, in PET units, PETPVC's output: the GM activity *times the GM fraction* (the product with
    ``GM`` masks the image; for binary GM it is the GM concentration inside GM and 0 outside). With
    ``concentration=True`` the GM concentration itself, ``(g - h*(C_WM . WM)) / (h*GM)`` where
    ``GM > 0`` (0 elsewhere), with the same ``[0, 10 C_WM]`` clipping.
    """
    g, was_numpy, orig = _prepare_pet(pet, device)
    gm_t = _prepare_3d_mask(gm, tuple(g.shape), g.device, "gm")
    wm_t = _prepare_3d_mask(wm, tuple(g.shape), g.device, "wm")
    over = float((gm_t + wm_t).max())
    if over > 1 + _MASK_SUM_TOL:
        raise ValueError(f"gm + wm must not exceed 1 (partial volumes), max is {over:.4g}")
    if c_wm is None:
        core = eroded_wm_mask(wm_t, voxel_size, wm_erosion_mm)
        if not core.any():
            raise ValueError("the eroded WM mask is empty: reduce wm_erosion_mm or pass c_wm")
        c_wm = float(g.cpu().numpy()[core].astype(np.float64).mean())
    c_wm = float(c_wm)
    num = g - gaussian_psf(c_wm * wm_t, fwhm_mm, voxel_size)
    num = torch.where(gm_t > 0, num, torch.zeros_like(num)) if concentration else num * gm_t
    den = gaussian_psf(gm_t, fwhm_mm, voxel_size)
    f = _safe_div(num, den)
    f = torch.where((f >= 0) & (f <= 10.0 * c_wm), f, torch.zeros_like(f))
    return _output(f, was_numpy, orig)


# --------------------------------------------------------------------------------------------
# Deconvolution (no anatomy)
# --------------------------------------------------------------------------------------------


def richardson_lucy(pet, fwhm_mm, voxel_size, n_iter: int = 10, device=None):
    """Richardson-Lucy deconvolution: ``f_0 = max(g, 0)``, ``f <- f . h*( g / (h*f) )``.

    REFERENCE.md's textbook update (the ratio is re-blurred by the adjoint of the symmetric PSF).
    PETPVC's filter omits that re-blur (``f <- f . g/(h*f)``) - not reproduced here. Negative input
    values are clipped to 0, like PETPVC. 10 iterations by default (PETPVC). Same type as ``pet``.
    """
    n_iter = _check_n_iter(n_iter)
    g, was_numpy, orig = _prepare_pet(pet, device)
    g = g.clamp(min=0)
    f = g.clone()
    for _ in range(n_iter):
        f = f * gaussian_psf(_safe_div(g, gaussian_psf(f, fwhm_mm, voxel_size), 1e-9), fwhm_mm, voxel_size)
    return _output(f, was_numpy, orig)


def reblurred_van_cittert(pet, fwhm_mm, voxel_size, n_iter: int = 30, alpha: float = 1.5, stop_criterion: float | None = 0.01, device=None):
    """Re-blurred Van Cittert deconvolution, PETPVC formulation.

    ``f_0 = g``; ``f <- max(0, f + alpha h*(g - h*f))``, step ``alpha = 1.5``; up to ``n_iter`` = 30
    iterations, stopping early when ``||f_k - f_{k-1}|| / ||g|| < stop_criterion`` (0.01; None
    disables). These are PETPVC's defaults. Same type/shape/units as ``pet``.
    """
    n_iter = _check_n_iter(n_iter)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    g, was_numpy, orig = _prepare_pet(pet, device)
    norm_g = float(torch.linalg.vector_norm(g)) + 1e-30
    f = g.clone()
    for _ in range(n_iter):
        prev = f
        f = (f + alpha * gaussian_psf(g - gaussian_psf(f, fwhm_mm, voxel_size), fwhm_mm, voxel_size)).clamp(min=0)
        if stop_criterion is not None and float(torch.linalg.vector_norm(f - prev)) / norm_g < stop_criterion:
            break
    return _output(f, was_numpy, orig)


def sharpen(pet, method: str = "laplacian", amount: float = 1.0, sigma_voxels: float = 1.0, device=None):
    """Sharpen-filter baseline of seed 002 (not a PVC: it knows neither the PSF nor the anatomy).

    Seed 002 compared its network against "SciPy's sharpen filter" without giving the kernel; SciPy
    has no function of that name, so the two standard SciPy-style recipes are offered:

    * ``"laplacian"`` (default): ``f = g - amount * L(g)`` with ``L`` the 7-point discrete Laplacian.
      For ``amount=1`` this is convolution with the classic 3x3x3 sharpen kernel - centre +7, the six
      face neighbours -1, edges/corners 0 - the 3D form of the 2D kernel [[0,-1,0],[-1,5,-1],[0,-1,0]]
      that ``scipy.ndimage.convolve`` users apply. Kernel sum is 1, so flat regions are unchanged.
    * ``"unsharp"``: unsharp mask from the SciPy lecture notes,
      ``f = g + amount * (g - G_sigma * g)``, ``G_sigma`` a Gaussian of ``sigma_voxels`` voxels.

    Both amplify every edge and the noise, which is the point the seed makes against them. Edges use
    replicate padding. Same type/shape/units as ``pet``.
    """
    g, was_numpy, orig = _prepare_pet(pet, device)
    if method == "laplacian":
        k = torch.zeros((3, 3, 3), dtype=g.dtype, device=g.device)
        k[1, 1, 1] = 6.0
        for idx in ((0, 1, 1), (2, 1, 1), (1, 0, 1), (1, 2, 1), (1, 1, 0), (1, 1, 2)):
            k[idx] = -1.0
        lap_neg = F.conv3d(F.pad(g[None, None], (1, 1, 1, 1, 1, 1), mode="replicate"), k[None, None])[0, 0]
        f = g + amount * lap_neg  # -L(g) = 6 g - sum of face neighbours
    elif method == "unsharp":
        if sigma_voxels <= 0:
            raise ValueError(f"sigma_voxels must be > 0, got {sigma_voxels}")
        blurred = gaussian_psf(g, 2.3548200450309493 * sigma_voxels, 1.0)
        f = g + amount * (g - blurred)
    else:
        raise ValueError(f"method must be 'laplacian' or 'unsharp', got {method!r}")
    return _output(f, was_numpy, orig)


__all__ = [
    "GTMResult",
    "gtm",
    "rbv",
    "iterative_yang",
    "muller_gartner",
    "eroded_wm_mask",
    "petpvc_wm_erosion_radius_voxels",
    "richardson_lucy",
    "reblurred_van_cittert",
    "sharpen",
]
