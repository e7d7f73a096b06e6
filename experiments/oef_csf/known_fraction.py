"""Experiment: the regional QQ fit when each voxel's CSF fraction is known from outside the echoes
(see results.md, section 5). Usage: known_fraction.py MODE [n_ood], MODE one of

* ``base``: the shipped fit on the OOD subjects (seeds 5700..);
* ``oracle``: the true CSF compartment's signal ``f S0_csf exp(-R2_csf t)`` subtracted from the echoes;
* ``seg``: the same with a segmentation's CSF fraction (the true one shifted up to ``SHIFT`` voxels
  in each axis, blurred by ``BLUR`` voxels, plus Gaussian noise of sd ``NOISE``, from the
  environment) and the CSF S0 and R2 [1/s] fitted to the voxels it calls pure CSF (f > 0.95);

with suffix ``x``: voxels of f >= 0.8 left out; ``n``: the same, and the remaining tissue signal
divided by 1 - f (so the fit's tissue classes see tissue, not CSF fraction).
"""

import os
import sys
import time

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.ndimage import shift as nd_shift

import qmri.bench.oef_ood as O
import qmri.classical.qq_region as R
from qmri.physics.qq import B0_DEFAULT, QQNET_TE_S

SHIFT, NOISE, BLUR = (float(os.environ.get(k, d)) for k, d in (("SHIFT", "0.75"), ("NOISE", "0.05"), ("BLUR", "0.5")))
te = np.asarray(QQNET_TE_S)
mode = sys.argv[1]
n_ood = int(sys.argv[2]) if len(sys.argv) > 2 else 3


def true_csf(seed):
    """The subject's true CSF volume fraction and compartment parameters, drawn as O.make_phantom draws them."""
    rng = np.random.default_rng(seed)
    gm, wm, brain, _ = O._templates()
    gm, wm = np.where(brain, np.clip(gm, 0, 1), 0.0), np.where(brain, np.clip(wm, 0, 1), 0.0)
    par = {c: {k: rng.uniform(*r) for k, r in ranges.items()} for c, ranges in O.RANGES.items()}
    return np.where(brain, 1.0 - np.minimum(gm + wm, 1.0), 0.0), par["csf"]


for i in range(n_ood):
    ph = O.make_phantom(O.SEED0 + i)
    fcsf, csf_par = true_csf(O.SEED0 + i)
    mag, chi, mask, f = ph.image[..., :-1].astype(np.float64), ph.image[..., -1], ph.mask.copy(), fcsf
    if mode.startswith("oracle"):
        mag = mag - fcsf[..., None] * csf_par["S0"] * np.exp(-csf_par["R2"] * te)
    elif mode.startswith("seg"):
        rng = np.random.default_rng(100 + i)
        f = gaussian_filter(nd_shift(fcsf, rng.uniform(-SHIFT, SHIFT, 3), order=1), BLUR) + rng.normal(0, NOISE, fcsf.shape)
        f = np.clip(np.where(ph.mask, f, 0.0), 0.0, 1.0)
        pure = (f > 0.95) & ph.mask
        log_s0, r2 = np.linalg.lstsq(np.stack([np.ones_like(te), -te], 1), np.median(np.log(np.maximum(mag[pure], 1e-6)), 0), rcond=None)[0]
        print(f"  segmentation: {pure.sum()} pure CSF voxels, CSF S0 {np.exp(log_s0):.3f} (true {csf_par['S0']:.3f}), R2 {r2:.2f} 1/s (true {csf_par['R2']:.2f})")
        mag = mag - f[..., None] * np.exp(log_s0) * np.exp(-r2 * te)
    if mode != "base":
        if mode[-1] == "n":
            mag = mag / np.maximum(1.0 - f, 0.2)[..., None]
        if mode[-1] in "xn":
            mask &= f < 0.8
        mag = np.where(mask[..., None], np.maximum(mag, 1e-3 * mag[..., 0][mask].mean()), 0.0)
    rois = {k: r & mask for k, r in ph.rois.items()}
    t0 = time.time()
    fit = {x.name: x for x in R.region_oef(mag, chi, mask, te, rois, B0=B0_DEFAULT)}
    C = {n: (fit[n].oef - fit[n + "_ref"].oef) / (ph.roi_truth[n] - ph.roi_truth[n + "_ref"]) for n in ph.lesions}
    print(
        f"{mode} ood{i} {time.time() - t0:.0f}s " + " ".join(f"{k}:{fit[k].oef:.1f}/{ph.roi_truth[k]:.1f}({fit[k].oef - ph.roi_truth[k]:+.1f})" for k in ph.rois) + " C " + " ".join(f"{k}:{v:.2f}" for k, v in C.items()),
        flush=True,
    )
