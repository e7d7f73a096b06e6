"""Partition maps of pickled training phantoms: python evaluate.py SEEDS LAM:MU,... TIE_SD NB_COST N_CLASSES (run from the repository root)."""

import sys, pickle, numpy as np

sys.path.insert(0, "experiments/oef_partition")
import partition as qp
from qmri.physics.qq import YA
from qmri.metrics import oef as om

seeds = [int(x) for x in sys.argv[1].split(",")]
combos = [tuple(map(float, c.split(":"))) for c in sys.argv[2].split(",")]
qp.TIE_SD = float(sys.argv[3])
qp.NB_COST = float(sys.argv[4])
qp.N_CLASSES = int(sys.argv[5])
for seed in seeds:
    st, regions, vs = pickle.load(open(f"/tmp/oef_partition/{seed}.pkl", "rb"))
    mask = st.image[..., -1] != 0
    truth = np.where(mask, 100 * (1 - st.target[..., 2] / YA), 0.0)
    te = np.asarray(st.sidecar["echo_times_ms"]) / 1000
    lab, arr = qp.atom_arrays(st.image[..., :-1], st.image[..., -1], mask, te, st.sidecar["B0_T"])
    for lam, mu in combos:
        P = qp.partition_from_atoms(lab, arr, lam, mu)
        est = np.where(mask, P.oef[np.maximum(P.labels, 0)], 0.0)
        sd = np.where(mask, P.sd[np.maximum(P.labels, 0)], 1.0)
        r = om.oef_map_metrics(est, truth, mask, regions, vs, sd=sd)
        low = np.mean(est[mask] < 10)
        print(
            f"seed {seed} tie {qp.TIE_SD} nb {qp.NB_COST} K {qp.N_CLASSES} lam {lam} mu {mu}: reg {len(P.oef)} <10%: {low:.2f} | "
            + " ".join(f"{k}={r[k]:.2f}" for k in ["rmse", "mean_error", "r", "r_smooth", "coverage_2sd"])
            + " | "
            + " ".join(f"{n[:4]}: C={r.get(n + '_C', np.nan):.2f} err={r.get(n + '_roi_error', np.nan):.1f} d={r.get(n + '_diameter_mm', np.nan):.0f} v={int(r.get(n + '_v_changed'))}" for n in ["infarct_core", "penumbra"])
            + f" | asym {r.get('territory_asym', np.nan):.1f}/{r.get('territory_asym_true', np.nan):.1f}",
            flush=True,
        )
        np.save(f"/tmp/oef_partition/est_{seed}_{lam}_{mu}.npy", est.astype(np.float32))
