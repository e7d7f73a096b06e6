"""Experiment: the regional QQ fit with a CSF compartment whose per-voxel fraction phi is
marginalised under a per-tissue-class prior p_c(phi) estimated from the brain (empirical Bayes, EM).

Model of a voxel: ``s(t) = S0 exp(-R2 t - v f_s(dw t)) + phi s(t1) exp(-R2_CSF (t - t1))``.
``region_oef_mixture`` mirrors ``qq_region.region_oef``; only the voxel likelihood differs.
"""

import numpy as np
from scipy.special import logsumexp

import qmri.classical.qq_region as R
from csf_model import sse_by_phi

CFG = {"phi": (0.0, 0.1, 0.2, 0.35, 0.5, 0.7), "r2_csf": 2.5, "em_iter": 100, "prior_floor": 1e-3}
LAST = {}


def sse4(mag, chi, te_s, B0):
    """(N, K, 1 + V, P) echo misfit for each OEF, v (no-blood first) and CSF fraction phi."""
    return sse_by_phi(mag, chi, te_s, B0, CFG["phi"], (CFG["r2_csf"],))[0]


def phi_prior(nll4: np.ndarray, classes: np.ndarray) -> dict:
    """class -> p(phi) by EM over the class's voxels, OEF and v marginalised uniformly on the grids."""
    # per voxel and phi: log sum over (OEF, v) of exp(-nll)
    ll = logsumexp(-nll4.reshape(nll4.shape[0], -1, nll4.shape[-1]), axis=1)  # (N, P)
    out = {}
    for cl in np.unique(classes):
        x = ll[classes == cl]
        p = np.full(x.shape[1], 1.0 / x.shape[1])
        for _ in range(CFG["em_iter"]):
            w = x + np.log(p)[None]
            w = np.exp(w - w.max(1, keepdims=True))
            w /= w.sum(1, keepdims=True)
            p = np.maximum(w.mean(0), CFG["prior_floor"])
            p /= p.sum()
        out[int(cl)] = p
    return out


def region_oef_mixture(mag, chi, mask, te_s, regions, B0=3.0):
    mask = np.asarray(mask, bool)
    sel = {name: (np.asarray(r, bool) & mask)[mask] for name, r in regions.items()}
    m = np.asarray(mag, np.float64)[mask]
    c = np.asarray(chi, np.float64)[mask]
    sigma2 = R.noise_variance(m, c, te_s, B0)
    classes = R.tissue_classes(m, te_s)
    idx0 = np.random.default_rng(0).permutation(len(m))[: R.NOISE_VOXELS]
    prior = phi_prior(sse4(m[idx0], c[idx0], te_s, B0) / (2 * sigma2), classes[idx0])
    LAST["prior"] = prior
    logp = np.stack([np.log(prior[int(k)]) if int(k) in prior else np.log(np.full(len(CFG["phi"]), 1 / len(CFG["phi"]))) for k in range(classes.max() + 1)])
    out = []
    for name, s in sel.items():
        idx = np.flatnonzero(s)
        scale = 1.0
        if len(idx) > R.FIT_VOXELS:
            scale = len(idx) / R.FIT_VOXELS
            idx = np.sort(np.random.default_rng(1).choice(idx, R.FIT_VOXELS, replace=False))
        nll4 = sse4(m[idx], c[idx], te_s, B0) / (2 * sigma2)
        marg = -logsumexp(-nll4 + logp[classes[idx]][:, None, None, :], axis=-1)  # (N, K, 1 + V) nll units
        est, sd, ci, informative = R.estimate_from_nll(scale * R.region_nll(2 * sigma2 * marg, classes[idx], sigma2))
        out.append(R.RegionOEF(name, est, sd, ci, int(s.sum()), informative))
    return out
