"""Separable Gaussian blurs of a brain-masked volume at several scales (the context networks' features),
the largest scales on a 2x coarser grid. Sigmas in voxels.

Why hand-written: the blurs are masked, separable, on a coarse-to-fine plan and batched as matrix
products so that training banks and inference compute identical features; MONAI's GaussianFilter
does none of the masking or the coarse grid.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CONTEXT_COARSE_FROM = 4.0  # sigmas (voxels) at or above this (8, 16, 32 mm at 2 mm) are blurred on a 2x coarser grid


def gauss1d(sigma: float) -> torch.Tensor:
    r = int(math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()


def pyramid_plan(sigmas, coarse_from: float = CONTEXT_COARSE_FROM) -> list[tuple[str, float]]:
    """How each Gaussian of ``sigmas`` (ascending, voxels) is computed: ``("fine", sigma)`` directly
    on the voxel grid, or ``("coarse", s)``: on the grid of 2x2x2 means (a 2-tap box per axis,
    variance 1/4 voxel^2) blurred directly by ``s`` coarse voxels, so that the variances add up to
    ``sigma^2 = 1/4 + (2 s)^2``, and interpolated back trilinearly. Coarse scales need sigma >= 4
    voxels (s >= 2 coarse voxels: the Gaussian's response at the coarse Nyquist frequency is
    exp(-2 pi^2 s^2 / 4) < 1e-4, so the subsampling does not alias)."""
    sig = [float(x) for x in sigmas]
    if sig != sorted(sig) or len(set(sig)) != len(sig):
        raise ValueError(f"context sigmas must be strictly ascending, got {sigmas}")
    plan = []
    for s in sig:
        if s < coarse_from:
            plan.append(("fine", s))
        elif s < 4.0:
            raise ValueError(f"sigma {s} is too small for the coarse grid: coarse scales need >= 4 voxels (got coarse_from={coarse_from})")
        else:
            plan.append(("coarse", math.sqrt(s * s - 0.25) / 2.0))
    return plan


def axis_operator(n: int, kind: str, g: torch.Tensor) -> torch.Tensor:
    """One scale's linear operator along an axis of ``n`` voxels, as a float32 matrix.

    ``kind`` of :func:`pyramid_plan`: ``"fine"``: (n, n), zero-padded correlation with the kernel
    ``g``; ``"coarse"``: (n, ceil(n/2)), from the grid of 2-voxel means (the odd end padded by a
    zero): zero-padded correlation with ``g`` on it, then linear interpolation back (coarse voxel i
    centred at fine 2i + 0.5, edge values held, as ``F.interpolate(..., align_corners=False)``)
    cropped to ``n``. Zero padding, 2x2x2 means and trilinear interpolation all factor over the
    three axes, so a 3D scale is exactly these matrices applied along each axis (:func:`separable`).
    Built from torch's own 1D operators on the identity, in float64."""
    r = g.numel() // 2
    k = g.detach().to("cpu", torch.float64).view(1, 1, -1)
    m = n if kind == "fine" else (n + 1) // 2
    basis = torch.eye(m, dtype=torch.float64)[:, None, :]  # m unit signals of length m
    out = F.conv1d(basis, k, padding=r)
    if kind == "coarse":
        out = F.interpolate(out, size=2 * m, mode="linear", align_corners=False)[..., :n]
    elif kind != "fine":
        raise ValueError(f"unknown scale kind {kind!r}")
    return out[:, 0, :].T.contiguous().to(device=g.device, dtype=torch.float32)  # column j: the response to unit j


def separable(v: torch.Tensor, ops) -> torch.Tensor:
    """(C, D, H, W) -> (C, D', H', W'): the matrices ``ops`` = (along D, along H, along W), each
    (n_out, n_in), applied along their axis. Channel-first, every step is one (batched) matrix
    product without a transposed copy (measured on an 80x97x84 brain box, 9 channels, the five
    scales: 0.17 s on 2 threads, against 0.40 s for scipy's correlate1d and trilinear upsampling)."""
    c, d, h, w = v.shape
    t = (v.reshape(-1, w) @ ops[2].T).view(c, d, h, -1)  # along W
    t = torch.matmul(ops[1], t)  # along H, batched over (C, D)
    return torch.matmul(ops[0], t.reshape(c, d, -1)).view(c, -1, t.shape[2], t.shape[3])  # along D, batched over C


def mean_pool2(v: torch.Tensor) -> torch.Tensor:
    """(C, D, H, W) -> the grid of 2x2x2 means (odd sizes padded by a zero slice at the end)."""
    even = []
    for n in reversed(v.shape[1:]):  # F.pad lists the last axis first
        even += [0, int(n) % 2]
    return F.avg_pool3d(F.pad(v, even)[None], 2)[0]
