"""Experiment (issue 24): an OEF map from the regional QQ likelihood pooled in a sliding Gaussian window.

The regional fit (:mod:`qmri.classical.qq_region`) is unbiased for a region because every voxel's
blood volume is tied to its tissue class's v, shared by the region. Here every 4 mm atom (2^3 voxels
at 2 mm) gets its own "region": the Gaussian-weighted neighbourhood of atoms around it. For each
tissue class c, grid OEF k and class v r, the atoms' summed tied nll ``A[atom, c, k, r]``
(``experiments/oef_partition/partition.atom_arrays``) is Gaussian-smoothed over the atom grid; the
window's nll at k is ``sum_c min_r`` of the smoothed arrays, scaled to the window's effective voxel
count; the map is :func:`qq_region.estimate_from_nll` of each atom's window nll.

Units: OEF and sd in % / %-points; sigma in atoms (4 mm at 2 mm).
"""

from __future__ import annotations

import sys

import numpy as np
from scipy.ndimage import gaussian_filter

sys.path.insert(0, "experiments/oef_partition")
import partition as qp  # noqa: E402

from qmri.classical.qq_region import OEF_GRID, PRIOR_OEF, MODEL_SD  # noqa: E402


def window_nll(lab: np.ndarray, arrays: np.ndarray, sigma_atoms: float) -> tuple[np.ndarray, np.ndarray]:
    """(n_atoms, K) window nll of each atom, and (n_atoms,) the window's effective atom weight sum."""
    n, C, K, R = arrays.shape
    # the atom grid: each atom's block position
    shape = tuple((s + qp.ATOM - 1) // qp.ATOM for s in lab.shape)
    pos = np.full(n, -1, np.int64)
    idx = np.indices(lab.shape) // qp.ATOM
    flat_block = np.ravel_multi_index(tuple(idx), shape)
    m = lab >= 0
    pos[lab[m]] = flat_block[m]
    occ = np.zeros(int(np.prod(shape)))
    occ[pos] = 1.0
    w = gaussian_filter(occ.reshape(shape), sigma_atoms, mode="constant").reshape(-1)[pos]
    out = np.zeros((n, K))
    vol = np.zeros(int(np.prod(shape)))
    for c in range(C):
        for k in range(K):
            best = np.full(n, np.inf)
            for r in range(R):
                vol[:] = 0.0
                vol[pos] = arrays[:, c, k, r]
                sm = gaussian_filter(vol.reshape(shape), sigma_atoms, mode="constant").reshape(-1)[pos]
                best = np.minimum(best, sm)
            out[:, k] += best
    # gaussian_filter normalises the kernel to sum 1: scale back to a sum over the window's atoms
    eff = (2.0 * np.sqrt(np.pi) * sigma_atoms) ** 3
    return out * eff, w * eff


def estimates(nll: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised :func:`qq_region.estimate_from_nll` (MAP with parabola refinement, posterior sd)."""
    grid = np.asarray(OEF_GRID)
    h = grid[1] - grid[0]
    post = nll + 0.5 * ((grid - PRIOR_OEF[0]) / PRIOR_OEF[1]) ** 2
    j = np.clip(post.argmin(1), 1, len(grid) - 2)
    rows = np.arange(len(post))
    a, b, c = post[rows, j - 1], post[rows, j], post[rows, j + 1]
    den = a - 2 * b + c
    off = np.where(den > 0, np.clip(0.5 * (a - c) / np.where(den > 0, den, 1.0), -1, 1), 0.0)
    est = grid[j] + off * h
    wts = np.exp(-(post - post.min(1, keepdims=True)))
    wts /= wts.sum(1, keepdims=True)
    mu = (wts * grid).sum(1)
    sd_post = np.sqrt((wts * (grid - mu[:, None]) ** 2).sum(1) + h**2 / 12)
    sd = np.hypot(100 * sd_post, MODEL_SD)
    return 100 * est, sd, sd_post < 0.5 * PRIOR_OEF[1]


def window_map(lab: np.ndarray, arrays: np.ndarray, sigma_atoms: float):
    nll, _ = window_nll(lab, arrays, sigma_atoms)
    est, sd, inf = estimates(nll)
    m = lab >= 0
    e = np.zeros(lab.shape)
    s = np.ones(lab.shape)
    i = np.zeros(lab.shape, bool)
    e[m], s[m], i[m] = est[lab[m]], sd[lab[m]], inf[lab[m]]
    return e, s, i
