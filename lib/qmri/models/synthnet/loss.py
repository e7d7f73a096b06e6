"""Spatially-correlative structural-consistency loss (F-LSeSim, Zheng et al., CVPR 2021; seed 004).

The loss compares the *self-similarity* of an image with that of its translation: for a query
point, the vector of similarities between its feature and the features of every point in a
window around it says where the structure around the query is "like" the query, independently
of what the intensities are. A translation that keeps the anatomy in place keeps these maps even
when it changes every intensity (MR -> CT); a translation that moves, blurs or invents an edge
changes them (REFERENCE.md section 4).

Feature extractor (how it was obtained): the original uses an ImageNet VGG16, which cannot be
downloaded here. This module *defines* a fixed, parameter-free extractor instead: the feature of
a pixel is its 3x3 neighbourhood at two scales (the image itself and the image 2x2-average
pooled, bilinearly brought back to full size), each centred (patch mean removed) and
L2-normalised, concatenated and scaled by 1/sqrt(2). The cosine between two such features is
the mean of the two scales' normalised cross-correlations (NCC) of the patches, so the
self-similarity maps are invariant to any local affine intensity change, including a sign flip:
bone is dark on T2w and bright on CT, yet an edge between skull and CSF gives the same NCC pattern
in both. Nothing is trained, so the loss cannot drift or be fooled by a co-adapted extractor.

Loss (per image pair, source ``x`` and translation ``y``, same geometry):

1. ``n_queries`` (256) query points drawn uniformly at random (or given);
2. ``S_x(q)`` = cosines between the feature at q and the features in a ``window`` x ``window``
   (9 x 9) neighbourhood of q (zero-padded at the border), likewise ``S_y(q)``;
3. only the ``keep`` (25 %) of queries with the most structure in ``x`` (largest 3x3 intensity
   standard deviation) are kept: in flat regions (air, the inside of the ventricles) centred
   patches are noise and their cosines carry no structure;
4. loss = mean over kept queries of ``1 - cos(S_x(q), S_y(q))`` (an L1 distance of the maps'
   cosine from 1), zero when the maps agree.

Images are (B, 1, H, W) tensors in any units (the loss is invariant to affine intensity maps).
Written by hand: neither MONAI nor torch has a spatially-correlative loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

EPS = 1e-6


def patch_features(x: torch.Tensor, scales: tuple[int, ...] = (1, 2)) -> torch.Tensor:
    """(B, 9 * len(scales), H, W): centred, L2-normalised 3x3 patches at each scale, / sqrt(n_scales)."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected (B, 1, H, W) images, got shape {tuple(x.shape)}")
    b, _, h, w = x.shape
    feats = []
    for s in scales:
        xs = F.avg_pool2d(x, s) if s > 1 else x
        p = F.unfold(F.pad(xs, (1, 1, 1, 1), mode="replicate"), 3)  # (B, 9, h*w)
        p = p.view(b, 9, xs.shape[-2], xs.shape[-1])
        if s > 1:
            p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
        p = p - p.mean(1, keepdim=True)
        p = p / (p.norm(dim=1, keepdim=True) + EPS)
        feats.append(p)
    return torch.cat(feats, 1) / math.sqrt(len(scales))


def local_std(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) standard deviation of the 3x3 neighbourhood (x's units)."""
    m = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    m2 = F.avg_pool2d(F.pad(x * x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return (m2 - m * m).clamp_min(0).sqrt()


def self_similarity(feat: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, window: int) -> torch.Tensor:
    """(B, N, window**2) cosines between each query's feature and its window's features.

    rows, cols: (B, N) long query positions. Positions outside the image count as zero features.
    """
    b, c, h, w = feat.shape
    r = window // 2
    fp = F.pad(feat, (r, r, r, r))  # zero features outside the image
    wp = w + 2 * r
    off = torch.arange(-r, r + 1, device=feat.device)
    dr, dc = torch.meshgrid(off, off, indexing="ij")
    idx = (rows[..., None] + r + dr.reshape(1, 1, -1)) * wp + (cols[..., None] + r + dc.reshape(1, 1, -1))  # (B, N, K)
    flat = fp.reshape(b, c, -1)
    win = torch.gather(flat, 2, idx.reshape(b, 1, -1).expand(b, c, -1)).view(b, c, *idx.shape[1:])  # (B, C, N, K)
    q = torch.gather(feat.reshape(b, c, -1), 2, (rows * w + cols)[:, None].expand(b, c, -1))  # (B, C, N)
    return torch.einsum("bcn,bcnk->bnk", q, win)


def sample_queries(b: int, h: int, w: int, n: int, generator: torch.Generator | None = None, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols), each (B, n) long, uniform over the image."""
    flat = torch.randint(0, h * w, (b, n), generator=generator).to(device)
    return flat // w, flat % w


def spatially_correlative_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    n_queries: int = 256,
    window: int = 9,
    keep: float = 0.25,
    queries: tuple[torch.Tensor, torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Structural-consistency loss between a source ``x`` and its translation ``y`` (scalar tensor).

    x, y: (B, 1, H, W) in any units. ``queries``: optional (rows, cols) of shape (B, N); otherwise
    ``n_queries`` random ones (from ``generator``). 0 when the self-similarity maps agree.
    """
    if x.shape != y.shape:
        raise ValueError(f"x and y shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    b, _, h, w = x.shape
    rows, cols = queries if queries is not None else sample_queries(b, h, w, n_queries, generator, x.device)
    fx, fy = patch_features(x), patch_features(y)
    sx = self_similarity(fx, rows, cols, window)
    sy = self_similarity(fy, rows, cols, window)
    d = 1.0 - F.cosine_similarity(sx, sy, dim=-1, eps=EPS)  # (B, N)
    with torch.no_grad():
        structure = local_std(x).reshape(b, -1).gather(1, rows * w + cols)  # (B, N)
        k = max(1, int(round(keep * rows.shape[1])))
        top = structure.topk(k, dim=1).indices
    return d.gather(1, top).mean()
