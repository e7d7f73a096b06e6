"""Regional fit with and without the CSF compartment on OOD phantoms (seeds 5700..) and on the
project's held-out phantoms (seeds 5300.., exact ROIs, SNR 100). Usage: evaluate.py MODE [n_ood] [n_own]
with MODE base (the shipped fit) | csf (csf_model.py) | mix (csf_mixture.py); options from the
environment: PHI_COST, R2_CSF (comma list), N_CLASSES (tissue classes of the fit)."""

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import csf_model  # noqa: E402
import qmri.bench.oef_ood as O  # noqa: E402
import qmri.classical.qq_region as R  # noqa: E402
from qmri.physics.qq import QQNET_TE_S, B0_DEFAULT, YA  # noqa: E402

mode = sys.argv[1]
n_ood = int(sys.argv[2]) if len(sys.argv) > 2 else 3
n_own = int(sys.argv[3]) if len(sys.argv) > 3 else 4
csf_model.CFG["cost"] = float(os.environ.get("PHI_COST", "1.0"))
csf_model.CFG["r2_csf"] = tuple(float(x) for x in os.environ.get("R2_CSF", "2.5").split(","))
csf_model.install(mode == "csf")
if os.environ.get("N_CLASSES"):
    R.tissue_classes.__defaults__ = (int(os.environ["N_CLASSES"]),)
if mode == "mix":
    import csf_mixture

    R.region_oef = csf_mixture.region_oef_mixture
te = np.asarray(QQNET_TE_S)
for i in range(n_ood):
    ph = O.make_phantom(O.SEED0 + i)
    t0 = time.time()
    fit = {x.name: x for x in R.region_oef(ph.image[..., :-1], ph.image[..., -1], ph.mask, te, ph.rois, B0=B0_DEFAULT)}
    C = {n: (fit[n].oef - fit[n + "_ref"].oef) / (ph.roi_truth[n] - ph.roi_truth[n + "_ref"]) for n in ph.lesions}
    print(
        f"{mode} ood{i} {time.time() - t0:.0f}s "
        + " ".join(f"{n}:{fit[n].oef:.1f}/{ph.roi_truth[n]:.1f}({fit[n].oef - ph.roi_truth[n]:+.1f},{'i' if fit[n].informative else 'u'})" for n in ph.rois)
        + " C "
        + " ".join(f"{k}:{v:.2f}" for k, v in C.items()),
        flush=True,
    )
    if mode == "mix":
        print("  prior", {k: np.round(v, 2).tolist() for k, v in csf_mixture.LAST["prior"].items()}, flush=True)

if n_own:
    from qmri.anatomy.phantom import make_subject
    from qmri.bench.oef import SEED0
    from qmri.bench.oef_regions import _drawn
    from qmri.simulate.driver import task_rng
    from qmri.simulate.oef import simulate_oef_with_regions

    for i in range(n_own):
        seed = SEED0 + i
        s = make_subject(seed, 2.0, subject_id=f"bench-oef-{i}")
        st, regions = simulate_oef_with_regions(s, task_rng("oef", seed), snr=100.0)
        mask = st.image[..., -1] != 0
        truth = 100 * (1 - st.target[..., 2] / YA)
        rois = _drawn(regions, mask, 0)
        rois["brain"] = mask
        t0 = time.time()
        fit = {x.name: x for x in R.region_oef(st.image[..., :-1], st.image[..., -1], mask, np.asarray(st.sidecar["echo_times_ms"]) / 1000.0, rois, B0=st.sidecar["B0_T"])}
        tr = {k: float(truth[r & mask].mean()) for k, r in rois.items()}
        C = {n: (fit[n].oef - fit[n + "_ref"].oef) / (tr[n] - tr[n + "_ref"]) for n in ("infarct_core", "penumbra")}
        asym = (fit["territory"].oef - fit["territory_ref"].oef) - (tr["territory"] - tr["territory_ref"])
        print(
            f"{mode} own{i} {time.time() - t0:.0f}s "
            + " ".join(f"{n}:{fit[n].oef:.1f}/{tr[n]:.1f}({fit[n].oef - tr[n]:+.1f})" for n in rois)
            + " C "
            + " ".join(f"{k}:{v:.2f}({regions[k]['diameter_mm']:.0f}mm)" for k, v in C.items())
            + f" asym_err {asym:+.2f}",
            flush=True,
        )
