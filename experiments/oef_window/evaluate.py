"""Window maps of pickled training phantoms (experiments/oef_partition/make_phantoms.py):
python experiments/oef_window/evaluate.py SEEDS SIGMAS (atoms; run from the repository root, PYTHONPATH=lib)."""

import json
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
        keys = ["rmse", "mean_error", "r", "r_smooth", "coverage_2sd", "territory_asym", "territory_asym_true"]
        keys += [f"{n}_{k}" for n in ("infarct_core", "penumbra") for k in ("C", "roi_error", "diameter_mm")]
        row = {"seed": seed, "sigma_atoms": sg, "seconds": round(t_arr + t_win), "below_10": round(float(np.mean(est[mask] < 10)), 3), "informative": round(float(inf[mask].mean()), 3)}
        print(json.dumps({**row, **{k: round(float(r[k]), 3) for k in keys if k in r}}), flush=True)
        np.save(f"/tmp/oef_partition/win_{seed}_{sg}.npy", est.astype(np.float32))
