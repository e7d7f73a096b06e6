"""Magnetic dipole kernel and the susceptibility -> field forward model (QSM).

Forward model (shared/REFERENCE.md section 2; Salomir et al. 2003, Marques & Bowtell 2005)::

    field = IFFT( D(k) * FFT(chi) ),    D(k) = 1/3 - (k . b0)^2 / |k|^2,   D(0) = 0

with ``b0`` the unit B0 direction expressed in the array axes and ``k`` the spatial frequency in
cycles/mm (``fftfreq(N_i, d=voxel_size_i)``), so anisotropic voxels give the physically correct
kernel. The field is the relative field shift in ppm of B0 when chi is in ppm (SI volume
susceptibility x 1e6), with the Lorentz sphere correction built in (a uniformly magnetised sphere
has zero field inside).

Note: the ``qsm-forward`` package swaps the voxel sizes of axes 0 and 1 in its kernel (REFERENCE
section 5); here axis i always uses ``voxel_size_mm[i]``.

Everything runs in torch (CPU or GPU, following the input tensor's device); numpy inputs give
numpy outputs. The FFT convolution is done with ``torch.fft.rfftn`` over the last three axes so
that leading batch dimensions are allowed. The kernel is written by hand because neither MONAI
nor scipy ships a dipole kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "GAMMA_BAR_MHZ_PER_T",
    "unit_vector",
    "kspace_grid",
    "dipole_kernel",
    "padded_shape",
    "pad_to",
    "crop_to",
    "forward_field",
    "field_ppm_to_phase",
    "phase_to_field_ppm",
]

#: Proton gyromagnetic ratio / (2 pi) in MHz/T (REFERENCE section 2).
GAMMA_BAR_MHZ_PER_T = 42.58


def unit_vector(b0_dir: Sequence[float]) -> tuple[float, float, float]:
    """Normalise a 3-vector (B0 direction in array axes) to unit length."""
    v = np.asarray(b0_dir, dtype=np.float64).reshape(3)
    n = float(np.linalg.norm(v))
    if n == 0.0:
        raise ValueError("b0_dir must be a non-zero 3-vector")
    return tuple(float(x) for x in v / n)  # type: ignore[return-value]


def _as_voxel(voxel_size_mm: float | Sequence[float]) -> tuple[float, float, float]:
    v = np.broadcast_to(np.asarray(voxel_size_mm, dtype=np.float64), (3,))
    if np.any(v <= 0):
        raise ValueError("voxel sizes must be positive (mm)")
    return tuple(float(x) for x in v)  # type: ignore[return-value]


def kspace_grid(
    shape: Sequence[int],
    voxel_size_mm: float | Sequence[float],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
    half: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Spatial-frequency grids (cycles/mm) of a 3D FFT, broadcastable to ``shape``.

    ``half=True`` gives the grid of ``torch.fft.rfftn`` (last axis ``N//2 + 1`` long).
    """
    vx = _as_voxel(voxel_size_mm)
    n0, n1, n2 = (int(s) for s in shape)
    k0 = torch.fft.fftfreq(n0, d=vx[0], dtype=dtype, device=device).reshape(-1, 1, 1)
    k1 = torch.fft.fftfreq(n1, d=vx[1], dtype=dtype, device=device).reshape(1, -1, 1)
    if half:
        k2 = torch.fft.rfftfreq(n2, d=vx[2], dtype=dtype, device=device).reshape(1, 1, -1)
    else:
        k2 = torch.fft.fftfreq(n2, d=vx[2], dtype=dtype, device=device).reshape(1, 1, -1)
    return k0, k1, k2


def dipole_kernel(
    shape: Sequence[int],
    voxel_size_mm: float | Sequence[float],
    b0_dir: Sequence[float] = (0.0, 0.0, 1.0),
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
    half: bool = False,
) -> torch.Tensor:
    """Unit dipole kernel in k-space, ``D(k) = 1/3 - (k.b0)^2/|k|^2`` with ``D(0) = 0``.

    Args:
        shape: FFT grid shape (3 ints).
        voxel_size_mm: voxel size per array axis in mm (scalar or 3 values).
        b0_dir: B0 direction in array axes (normalised here).
        device, dtype: torch placement of the returned real tensor.
        half: return the ``rfftn`` half-spectrum (last axis ``N//2 + 1``).

    Returns:
        Real tensor of ``shape`` (or the half-spectrum shape), dimensionless, values in [-2/3, 1/3].
    """
    b = unit_vector(b0_dir)
    k0, k1, k2 = kspace_grid(shape, voxel_size_mm, device=device, dtype=dtype, half=half)
    kb = k0 * b[0] + k1 * b[1] + k2 * b[2]
    k2sum = k0**2 + k1**2 + k2**2
    safe = torch.where(k2sum == 0, torch.ones_like(k2sum), k2sum)
    d = 1.0 / 3.0 - kb**2 / safe
    d = torch.where(k2sum == 0, torch.zeros_like(d), d)
    return d


def _next_fast_len(n: int) -> int:
    """Smallest 2-3-5-smooth integer >= n (fast FFT length)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def padded_shape(shape: Sequence[int], pad: bool | int | Sequence[int], fast: bool = True) -> tuple[int, int, int]:
    """FFT grid shape for a volume of ``shape``.

    ``pad=True``: at least twice the size on every axis; ``False``/``0``: no padding (exactly
    ``shape``); an int or 3 ints: at least that many zero voxels added on *each* side of every axis.
    With ``fast`` a padded axis is rounded up to a 2-3-5-smooth length (faster FFTs).
    """
    s = tuple(int(x) for x in shape[-3:])
    if pad is False or pad is None:
        return s  # type: ignore[return-value]
    if pad is True:
        out = tuple(2 * x for x in s)
    else:
        m = np.broadcast_to(np.asarray(pad, dtype=int), (3,))
        if np.any(m < 0):
            raise ValueError("pad margins must be >= 0")
        if not np.any(m):
            return s  # type: ignore[return-value]
        out = tuple(int(x + 2 * p) for x, p in zip(s, m))
    if fast:
        out = tuple(_next_fast_len(x) for x in out)
    return out  # type: ignore[return-value]


def pad_to(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Zero-pad the last three axes of ``x`` to ``shape``, the data centred."""
    pads: list[int] = []
    for n, N in zip(reversed(x.shape[-3:]), reversed(tuple(shape))):
        lo = (N - n) // 2
        pads += [lo, N - n - lo]
    if not any(pads):
        return x
    return torch.nn.functional.pad(x, pads)


def crop_to(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`pad_to`: central crop of the last three axes back to ``shape``."""
    sl = [slice(None)] * (x.ndim - 3)
    for N, n in zip(x.shape[-3:], tuple(shape)):
        lo = (N - n) // 2
        sl.append(slice(lo, lo + n))
    return x[tuple(sl)]


def _to_tensor(x, device=None) -> tuple[torch.Tensor, bool]:
    """Return a floating tensor and whether the input was numpy."""
    if isinstance(x, torch.Tensor):
        t = x if x.is_floating_point() else x.to(torch.float32)
        return (t.to(device) if device is not None else t), False
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    return torch.as_tensor(np.ascontiguousarray(a), device=device), True


def forward_field(
    chi_ppm,
    voxel_size_mm: float | Sequence[float],
    b0_dir: Sequence[float] = (0.0, 0.0, 1.0),
    pad: bool | int | Sequence[int] = True,
    device: torch.device | str | None = None,
):
    """Field perturbation (ppm of B0) produced by a susceptibility distribution (ppm).

    Args:
        chi_ppm: susceptibility in ppm, shape ``(..., X, Y, Z)``; torch tensor (any device) or numpy.
            Values are relative to the medium that surrounds the volume (outside the padded grid
            chi = 0), e.g. relative to air for a whole head, relative to water for a brain.
        voxel_size_mm: voxel size per axis (mm).
        b0_dir: B0 direction in array axes.
        pad: zero padding before the FFT (see :func:`padded_shape`; default 2x), cropped back.
        device: compute device for numpy inputs (tensors stay on their own device).

    Returns:
        Field in ppm, same shape/type (numpy in -> numpy out) and float dtype as the input.
    """
    x, was_numpy = _to_tensor(chi_ppm, device)
    shape = tuple(x.shape[-3:])
    grid = padded_shape(shape, pad)
    xp = pad_to(x, grid)
    d = dipole_kernel(grid, voxel_size_mm, b0_dir, device=x.device, dtype=x.dtype, half=True)
    f = torch.fft.irfftn(torch.fft.rfftn(xp, dim=(-3, -2, -1)) * d, s=grid, dim=(-3, -2, -1))
    f = crop_to(f, shape)
    return f.cpu().numpy() if was_numpy else f


def field_ppm_to_phase(field_ppm, te_ms, B0_T: float = 3.0):
    """Phase (rad) accrued at echo time ``te_ms`` (ms) by a field shift in ppm at ``B0_T`` tesla.

    ``phase = 2 pi * field[ppm] * 1e-6 * gamma_bar * B0 * TE`` with gamma_bar = 42.58 MHz/T
    (REFERENCE section 2). Not wrapped.
    """
    return 2.0 * np.pi * field_ppm * GAMMA_BAR_MHZ_PER_T * B0_T * (np.asarray(te_ms) * 1e-3)


def phase_to_field_ppm(phase_rad, te_ms, B0_T: float = 3.0):
    """Inverse of :func:`field_ppm_to_phase`: field (ppm) from an unwrapped phase (rad) at TE (ms)."""
    return phase_rad / (2.0 * np.pi * GAMMA_BAR_MHZ_PER_T * B0_T * (np.asarray(te_ms) * 1e-3))
