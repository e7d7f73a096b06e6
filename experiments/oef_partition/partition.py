"""Rejected experiment (see results.md beside this file), kept so it can be re-run: OEF map from a data-driven partition of the brain: greedy region merging of the regional QQ likelihood.

Why: one voxel's echoes do not identify OEF (:mod:`qmri.physics.qq_crb`), a region of a few hundred
voxels does, provided every voxel's blood volume is tied to its tissue class
(:mod:`qq_region`; with v free per voxel the pooled likelihood is biased). A clinician's ROIs give
those regions in :mod:`qq_region`; here the regions are found from the data, as QQ-CAT pools voxels
by cluster analysis (Cho et al., MRM 2018), but spatially: the OEF map is piecewise constant on a
partition that minimises the piecewise-constant Mumford-Shah energy (Koepfler, Lopez and Morel,
SIAM J Numer Anal 1994)::

    E(P) = sum_{R in P} min_OEF nll_R(OEF) + LAMBDA * |boundary faces of P| + MU * |P|

where ``nll_R`` is :func:`qq_region.region_nll` of region R (its voxels' misfits on the OEF x v
grids, v tied within each tissue class to a class value shared by the region). Starting from
blocks of :data:`ATOM` voxels cubed, adjacent regions are merged cheapest first, in rounds
(:func:`merge`), while a merge lowers E. Merging two regions costs the rise of the pooled
minimum (a likelihood ratio: large when their OEFs differ) and saves the shared boundary and one
region's MU, so a boundary survives only where the echoes demand it.

Each final region's OEF, sd and ``informative`` come from :func:`qq_region.estimate_from_nll` (the
population prior and the model term included); the voxels of a region share them. S0, R2, v and
chi_nb of each voxel follow at the region's OEF: v the voxel's best tied v (or the no-blood value),
chi_nb from the QSM equation, S0 and R2 from the weighted log-linear fit.

No maintained library merges regions under a custom likelihood: scikit-image's
``graph.merge_hierarchical`` takes one scalar edge weight and merges in Python per edge without a
stopping energy of this form, hence the vectorised rounds here (a heap that re-scored every
neighbour after each merge grew to 10 GB on a 2 mm brain).

Units: OEF and sd in % / %-points, v as a fraction, chi_nb and QSM in ppm, R2 in 1/s, echo times in
s, B0 in T.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from qmri.classical.qq_region import NO_BLOOD_COST, OEF_GRID, V_GRID, V_TIE_SD, _sse_grid, estimate_from_nll, noise_variance, tissue_classes

log = logging.getLogger(__name__)
ATOM = 2  # voxels: the partition starts from ATOM^3 blocks (4 mm at 2 mm)
LAMBDA = 0.3  # nll units per boundary face between two regions
MU = 4.0  # nll units per region
MAX_ROUNDS = 500
N_CLASSES = 3  # k-means tissue classes (5 was tried: no better)
TIE_SD = V_TIE_SD  # sd of log v around the class v (0.6 tried: no better)
NB_COST = NO_BLOOD_COST  # nll units of the no-blood alternative (0.3 tried: no better)
CHUNK = 8000  # voxels per misfit evaluation (memory: CHUNK x 23 x 17 float64)


@dataclass
class Partition:
    """The result: ``labels`` (x, y, z) region index (-1 outside the brain) and, per region, OEF [%],
    sd [%-points], ``informative`` and the voxel count."""

    labels: np.ndarray
    oef: np.ndarray
    sd: np.ndarray
    informative: np.ndarray
    n_voxels: np.ndarray


def _tied(sse: np.ndarray, sigma2: float) -> np.ndarray:
    """(N, K, R) each voxel's nll at each grid OEF when its class's v is V_GRID[r]: the best of its
    own v (Gaussian tie on log v, sd V_TIE_SD) and the no-blood alternative (cost NO_BLOOD_COST)."""
    x = sse / (2.0 * sigma2)
    lv = np.log(np.asarray(V_GRID))
    tie = (lv[None, :] - lv[:, None]) ** 2 / (2.0 * TIE_SD**2)  # (class v r, voxel v j)
    tied = (x[:, :, None, 1:] + tie[None, None]).min(3)  # (N, K, R)
    return np.minimum(tied, x[:, :, :1] + NB_COST)


def _profile(a: np.ndarray) -> np.ndarray:
    """(K,) region nll from its class-summed array ``a`` (C, K, R): per class the best class v."""
    return a.min(2).sum(0)


def _atoms(mask: np.ndarray, atom: int) -> np.ndarray:
    """(x, y, z) atom index of each brain voxel (blocks of ``atom``^3 voxels), -1 outside; consecutive."""
    idx = np.indices(mask.shape) // atom
    nb = [(n + atom - 1) // atom for n in mask.shape]
    block = np.ravel_multi_index(tuple(idx), nb)
    lab = np.full(mask.shape, -1, np.int64)
    _, lab[mask] = np.unique(block[mask], return_inverse=True)
    return lab


def _adjacency(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(E, 2) pairs a < b of adjacent atoms and (E,) the number of voxel faces between them (face
    neighbours in the brain)."""
    pairs = []
    for ax in range(3):
        a = np.moveaxis(lab, ax, 0)
        u, w = a[:-1].ravel(), a[1:].ravel()
        keep = (u >= 0) & (w >= 0) & (u != w)
        pairs.append(np.stack([np.minimum(u[keep], w[keep]), np.maximum(u[keep], w[keep])], 1))
    return _merge_edges(np.concatenate(pairs), None)


def _merge_edges(pairs: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Unique (a < b) pairs without self-edges, their weights (default 1 each) summed."""
    pairs = np.sort(pairs, 1)
    w = np.ones(len(pairs)) if weights is None else weights
    keep = pairs[:, 0] != pairs[:, 1]
    uniq, inv = np.unique(pairs[keep], axis=0, return_inverse=True)
    return uniq, np.bincount(inv.ravel(), weights=w[keep], minlength=len(uniq))


def _merge_costs(acc: np.ndarray, best: np.ndarray, edges: np.ndarray, faces: np.ndarray, lam: float, mu: float) -> np.ndarray:
    """(E,) change of the energy if each edge's two regions were merged (negative: the merge pays)."""
    d = np.empty(len(edges))
    for s in range(0, len(edges), CHUNK):
        a, b = edges[s : s + CHUNK, 0], edges[s : s + CHUNK, 1]
        d[s : s + CHUNK] = (acc[a] + acc[b]).min(3).sum(1).min(1)
    return d - best[edges[:, 0]] - best[edges[:, 1]] - lam * faces - mu


def merge(arrays: np.ndarray, edges: np.ndarray, faces: np.ndarray, lam: float = LAMBDA, mu: float = MU, max_rounds: int = MAX_ROUNDS) -> np.ndarray:
    """Region merging (see the module doc) in rounds. Each round takes the energy-lowering merges
    cheapest first; the smaller region of a merge (fewer atoms) joins the larger and takes no other
    merge that round, the larger may take in several small ones (each merge's cost is evaluated
    against the larger region as it was at the round's start, which changes little when it is the
    larger). Rounds repeat until no merge lowers the energy.

    ``arrays`` (n, C, K, R) the atoms' class-summed nll arrays, ``edges`` (E, 2) and ``faces`` (E,)
    their adjacency; returns (n,) the final region (0..) of each atom."""
    acc = arrays.copy()
    n = len(acc)
    size = np.ones(n, np.int64)
    region = np.arange(n)  # atom -> current region index
    best = acc.min(3).sum(1).min(1)
    for rnd in range(max_rounds):
        if len(edges) == 0:
            break
        d = _merge_costs(acc, best, edges, faces, lam, mu)
        order = np.flatnonzero(d < 0)
        if len(order) == 0:
            break
        order = order[np.argsort(d[order], kind="stable")]
        m = len(acc)
        target = np.arange(m)
        absorbs = np.zeros(m, bool)
        for e in order:
            a, b = edges[e]
            if size[b] > size[a] or (size[b] == size[a] and b < a):
                a, b = b, a
            if target[a] != a or target[b] != b or absorbs[b]:
                continue  # a has joined another region, or b has joined or taken in one this round
            target[b] = a
            absorbs[a] = True
        keep = target == np.arange(m)
        new_index = np.cumsum(keep) - 1
        relabel = new_index[target]
        merged = np.zeros((int(keep.sum()),) + acc.shape[1:])
        np.add.at(merged, relabel, acc)
        acc = merged
        size = np.bincount(relabel, weights=size).astype(np.int64)
        best = acc.min(3).sum(1).min(1)
        region = relabel[region]
        edges, faces = _merge_edges(relabel[edges], faces)
        log.debug("qq_partition round %d: %d regions, %d edges", rnd, len(acc), len(edges))
    log.info("qq_partition: %d atoms merged into %d regions", n, len(acc))
    return region


def atom_arrays(mag: np.ndarray, chi: np.ndarray, mask: np.ndarray, te_s: Sequence[float], B0: float = 3.0, atom: int = ATOM) -> tuple[np.ndarray, np.ndarray]:
    """The atoms of :func:`partition_oef`: (x, y, z) atom index (-1 outside ``mask``) and (n, C, K, R)
    each atom's nll arrays summed over its voxels of each tissue class (inputs as :func:`partition_oef`)."""
    mask = np.asarray(mask, bool)
    m = np.asarray(mag, np.float64)[mask]
    c = np.asarray(chi, np.float64)[mask]
    sigma2 = noise_variance(m, c, te_s, B0)
    classes = tissue_classes(m, te_s, N_CLASSES)
    lab = _atoms(mask, atom)
    aid = lab[mask]
    C, K, R = N_CLASSES, len(OEF_GRID), len(V_GRID)
    flat = np.zeros(((int(lab.max()) + 1) * C, K * R))
    row = aid * C + classes
    for s in tqdm(range(0, len(m), CHUNK), desc="QQ misfits", unit="chunk", disable=None):
        h = _tied(_sse_grid(m[s : s + CHUNK], c[s : s + CHUNK], te_s, B0), sigma2).reshape(-1, K * R)
        r = row[s : s + CHUNK]
        order = np.argsort(r, kind="stable")
        uniq, start = np.unique(r[order], return_index=True)
        flat[uniq] += np.add.reduceat(h[order], start, axis=0)
    return lab, flat.reshape(-1, C, K, R)


def partition_from_atoms(lab: np.ndarray, arrays: np.ndarray, lam: float = LAMBDA, mu: float = MU) -> Partition:
    """:func:`partition_oef` from its atoms (:func:`atom_arrays`)."""
    mask = lab >= 0
    aid = lab[mask]
    region_of_atom = merge(arrays, *_adjacency(lab), lam, mu)
    acc = np.zeros((int(region_of_atom.max()) + 1,) + arrays.shape[1:])
    np.add.at(acc, region_of_atom, arrays)
    est = [estimate_from_nll(_profile(a)) for a in acc]
    labels = np.full(lab.shape, -1, np.int64)
    labels[mask] = region_of_atom[aid]
    return Partition(labels, np.array([e[0] for e in est]), np.array([e[1] for e in est]), np.array([e[3] for e in est]), np.bincount(labels[mask], minlength=len(acc)))


def partition_oef(mag: np.ndarray, chi: np.ndarray, mask: np.ndarray, te_s: Sequence[float], B0: float = 3.0, atom: int = ATOM, lam: float = LAMBDA, mu: float = MU) -> Partition:
    """Piecewise-constant OEF map of the brain (see the module doc).

    Args:
        mag: (x, y, z, E) echo magnitudes (any unit).
        chi: (x, y, z) QSM [ppm].
        mask: boolean brain mask.
        te_s: E echo times [s].
        B0: field strength [T].
        atom: edge of the starting blocks [voxels].
        lam: cost of a boundary face [nll units].
        mu: cost of a region [nll units].
    """
    return partition_from_atoms(*atom_arrays(mag, chi, mask, te_s, B0, atom), lam, mu)
