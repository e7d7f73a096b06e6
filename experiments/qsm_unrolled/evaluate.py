"""The unrolled network on `qmri bench qsm --ood`'s cases (qsm-forward fields; never used in training
or selection), beside that bench's stored rows for tuned L2, TV and the served qsmnet.
Usage: evaluate.py WEIGHTS [resolutions, default 2,1]. Prints a markdown table."""

import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from net import UnrolledQSM  # noqa: E402
from qmri.bench.qsm_ood import _roi_error, cases  # noqa: E402
from qmri.metrics.maps import qsm_metrics  # noqa: E402

net = UnrolledQSM()
ckpt = torch.load(sys.argv[1], weights_only=True)
net.load_state_dict(ckpt["state_dict"])
net.eval()
res = tuple(float(x) for x in (sys.argv[2] if len(sys.argv) > 2 else "2,1").split(","))
stored = json.load(open("bench-results/bench_qsm_ood.json"))
rows = [r for sec in stored["sections"].values() for r in sec] if "sections" in stored else stored["rows"]
ref = {(r["case"], r["method"]): r for r in rows if isinstance(r, dict) and "method" in r}


def infer(field, mask, vs, b0):
    shape = field.shape
    pad = [(0, (-n) % 4) for n in shape]
    f = torch.from_numpy(np.pad(np.where(mask, field, 0.0), pad).astype(np.float32))[None, None]
    m = torch.from_numpy(np.pad(mask, pad).astype(np.float32))[None, None]
    with torch.no_grad():
        y = net(f, m, vs, b0)[0, 0].numpy()
    return y[: shape[0], : shape[1], : shape[2]]


print(f"weights {sys.argv[1]} (step {ckpt['step']}, val NRMSE {ckpt['val_nrmse']:.3f})")
print("| case | unrolled NRMSE | HFEN | SSIM | worst ROI ppm | lesion slope | s | tuned L2 | TV | qsmnet served | qsmnet direct | unrolled / L2 | / TV |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for name, field, chi, mask, rois, les, vs, b0 in cases(1, 20.0, res):
    t = time.time()
    est = np.where(mask, infer(field, mask, vs, b0), 0.0)
    sec = time.time() - t
    mt = qsm_metrics(est, chi, mask)
    e, r = est[les] - est[mask].mean(), chi[les] - chi[mask].mean()
    slope = float(np.polyfit(r, e, 1)[0]) if les.sum() > 3 else float("nan")
    g = {m: ref.get((name, m), {}).get("NRMSE", float("nan")) for m in ("l2_tuned", "tv", "qsmnet", "qsmnet_direct")}
    print(
        f"| {name} | {mt['NRMSE']:.3f} | {mt['HFEN']:.3f} | {mt['SSIM']:.3f} | {_roi_error(est, chi, rois, mask):.4f} | {slope:.2f} | {sec:.1f} | {g['l2_tuned']:.3f} | {g['tv']:.3f} | {g['qsmnet']:.3f} | {g['qsmnet_direct']:.3f} | {mt['NRMSE'] / g['l2_tuned']:.2f} | {mt['NRMSE'] / g['tv']:.2f} |",
        flush=True,
    )
