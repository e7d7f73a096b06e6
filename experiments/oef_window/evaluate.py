"""Window maps of pickled training phantoms (experiments/oef_partition/make_phantoms.py):
python experiments/oef_window/evaluate.py SEEDS SIGMAS (atoms; run from the repository root, PYTHONPATH=lib)."""

import pickle
import sys
import time

import numpy as np

sys.path.insert(0, "experiments/oef_window")
import window as qw  # noqa: E402
from qmri.metrics import oef as om  # noqa: E402
from qmri.physics.qq import YA  # noqa: E402

seeds = [int(x) for x in sys.argv[1].split(",")]
sigmas = [float(x) for x in sys.argv[2].split(",")]
for seed in seeds:
    st, regions, vs = pickle.load(open(f"/tmp/oef_partition/{seed}.pkl", "rb"))
    mask = st.image[..., -1] != 0
    truth = np.where(mask, 100 * (1 - st.target[..., 2] / YA), 0.0)
    te = np.asarray(st.sidecar["echo_times_ms"]) / 1000
    t0 = time.time()
    lab, arr = qw.qp.atom_arrays(st.image[..., :-1], st.image[..., -1], mask, te, st.sidecar["B0_T"])
    t_arr = time.time() - t0
    for sg in sigmas:
        t0 = time.time()
        est, sd, inf = qw.window_map(lab, arr, sg)
        t_win = time.time() - t0
        r = om.oef_map_metrics(est, truth, mask, regions, vs, sd=sd)
        low = np.mean(est[mask] < 10)
        print(
            f"seed {seed} sigma {sg} ({t_arr:.0f}+{t_win:.0f} s): <10%: {low:.2f} informative {inf[mask].mean():.2f} | "
            + " ".join(f"{k}={r[k]:.2f}" for k in ["rmse", "mean_error", "r", "r_smooth", "coverage_2sd"])
            + " | "
            + " ".join(f"{n[:4]}: C={r.get(n + '_C', np.nan):.2f} err={r.get(n + '_roi_error', np.nan):.1f} d={r.get(n + '_diameter_mm', np.nan):.0f} v={int(r.get(n + '_v_changed'))}" for n in ["infarct_core", "penumbra"])
            + f" | asym {r.get('territory_asym', np.nan):.1f}/{r.get('territory_asym_true', np.nan):.1f}",
            flush=True,
        )
        np.save(f"/tmp/oef_partition/win_{seed}_{sg}.npy", est.astype(np.float32))
