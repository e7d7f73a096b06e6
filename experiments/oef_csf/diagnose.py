"""Where the regional fit's bias on the OOD phantoms comes from: the same subjects as drawn (asis), without
CSF (nocsf: GM and WM renormalised, voxels with < 30 % tissue left out of the brain) and with pure
voxels (pure: each voxel all GM, all WM or all CSF). Usage: diagnose.py asis,nocsf,pure [subjects]."""

import sys

import numpy as np

import qmri.bench.oef_ood as M
from qmri.classical.qq_region import region_oef
from qmri.physics.qq import QQNET_TE_S, B0_DEFAULT

orig = M._templates


def variant(kind):
    def t():
        gm, wm, brain, aff = orig()
        gm = np.where(brain, np.clip(gm, 0, 1), 0)
        wm = np.where(brain, np.clip(wm, 0, 1), 0)
        tis = gm + wm
        if kind == "nocsf":
            b = brain & (tis > 0.3)
            s = np.maximum(tis, 1e-9)
            return np.where(b, gm / s, 0), np.where(b, wm / s, 0), b, aff
        if kind == "pure":
            g = (gm >= wm) & (tis >= 0.5)
            w = (wm > gm) & (tis >= 0.5)
            return g.astype(float), w.astype(float), brain, aff
        return gm, wm, brain, aff

    return t


te = np.asarray(QQNET_TE_S)
for kind in sys.argv[1].split(","):
    M._templates = variant(kind)
    for i in range(int(sys.argv[2]) if len(sys.argv) > 2 else 3):
        ph = M.make_phantom(M.SEED0 + i)
        fit = {x.name: x for x in region_oef(ph.image[..., :-1], ph.image[..., -1], ph.mask, te, ph.rois, B0=B0_DEFAULT)}
        s = " ".join(f"{n}:{fit[n].oef:.1f}/{ph.roi_truth[n]:.1f}({fit[n].oef - ph.roi_truth[n]:+.1f})" for n in ph.rois)
        print(kind, i, s, flush=True)
