"""``qmri bench pvc``: the PVC networks against the input, the sharpen filter, IY, RBV and MG.

Two networks: ``PVCNet`` (seed 002's PET-only design, trained across FWHM 5-8 mm without being told
the FWHM) and ``PVCNet-FWHM`` (the same, conditioned on the sidecar's FWHM); their rows side by side
at FWHM 5, 6.5 and 8 mm show what the conditioning adds.

Held-out phantoms (seeds from :data:`BENCH_SEED` = 5400; training used 30000.., validation 31000..),
cropped to brain + 10 mm like the served PVC studies, each simulated amyloid-positive and -negative
(same anatomy) at PSF FWHM 5, 6.5 and 8 mm with 5 % noise. Errors are computed in the brain against
the RBV-corrected PET with the true PSF and tissue probabilities (the network's training target;
seed 002's table: Input / Sharpen / network) and against the true activity. SSIM: skimage, data
range = 99.5th percentile of the target in the brain, averaged over the brain (``SSIM``) and over the
whole cropped volume (``SSIM_volume``, the seed's whole-image convention). Regional composite SUVR:
the positive subject's amyloid cortex (lesion code 4) over the cerebellar GM reference, as in
:func:`qmri.bench.classical.bench_pvc`; its error is given relative to RBV's SUVR and to the truth.
MG corrects GM only, so it is judged in GM (probability > 0.5).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from skimage.metrics import structural_similarity

from ..networks.pvc_predict import load_pvcnet, predict_pvc
from ..paths import shipped
from ..physics.pet import cerebellar_gm_mask, suvr
from ..simulate.driver import task_rng
from ..tasks.pvc import run_pvc
from ..training.pvc_data import draw_example, make_volume
from .report import Timer, device_label, save_report

log = logging.getLogger(__name__)
BENCH_SEED = 5400
FWHMS = (5.0, 6.5, 8.0)
NETWORKS = ("pvcnet", "pvcnet_fwhm")
METHODS = ("input", "sharpen", "iterative_yang", "rbv", "muller_gartner") + NETWORKS
LABEL = {"input": "Input", "sharpen": "Sharpen", "iterative_yang": "IY", "rbv": "RBV", "muller_gartner": "MG", "pvcnet": "PVCNet", "pvcnet_fwhm": "PVCNet-FWHM"}


def shipped_weights() -> dict[str, Path]:
    """Network name -> the shipped checkpoint in the app's model folder (:mod:`qmri.paths`)."""
    return {m: shipped(m) for m in NETWORKS}


def ssim(a, b, mask, data_range) -> tuple[float, float]:
    """(mean SSIM over ``mask``, mean SSIM over the whole volume)."""
    _, full = structural_similarity(np.asarray(a, np.float64), np.asarray(b, np.float64), data_range=data_range, full=True)
    return float(full[mask].mean()), float(full.mean())


def _rmse(a, b, m) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - b)[m] ** 2)))


def run(out_dir: str, weights: dict | None = None, subjects: int = 2, resolution_mm: float = 2.0, fwhms=FWHMS, device=None):
    """``weights``: network name -> checkpoint (default: the shipped ``pvcnet`` and ``pvcnet_fwhm``)."""
    weights = {**shipped_weights(), **(weights or {})}
    nets = {m: load_pvcnet(weights[m], device or "cpu") for m in NETWORKS}
    rows, pictures = [], None
    for i in range(subjects):
        seed = BENCH_SEED + i
        v = make_volume(seed, resolution_mm)
        v.subject = f"bench-pvc-{i}"
        ref = cerebellar_gm_mask(v.labels, v.voxel_size_mm)
        cortex = (v.lesions == 4) & ~ref
        brain, gm = v.mask, v.seg[..., 0] > 0.5
        affine = np.diag([v.voxel_size_mm] * 3 + [1.0])
        for pos in (True, False):
            for k, fwhm in enumerate(fwhms):
                rng = task_rng("pvc-bench", seed * 10 + k + (0 if pos else 5))
                pet, target, _ = draw_example(v, rng, "rbv", fwhm_mm=fwhm, amyloid_positive=pos)
                act = draw_example(v, task_rng("pvc-bench", seed * 10 + k + (0 if pos else 5)), "activity", fwhm_mm=fwhm, amyloid_positive=pos)[1]
                image = np.concatenate([pet[..., None], v.seg], axis=-1)
                sidecar = {"psf_fwhm_mm": [fwhm] * 3, "units": "SUV"}
                drange = float(np.percentile(target[brain], 99.5))
                arange = float(np.percentile(act[brain], 99.5))
                suvr_rbv = suvr(target, cortex, ref)
                suvr_true = suvr(act, cortex, ref)
                outs = {}
                for m in METHODS:
                    with Timer() as t:
                        if m == "input":
                            out = pet
                        elif m in nets:
                            out = predict_pvc(nets[m][0], pet, fwhm_mm=fwhm)
                        else:
                            out = run_pvc(image, affine, sidecar, m)[0].data
                    outs[m] = out
                    judged = brain & gm if m == "muller_gartner" else brain
                    s_b, s_v = ssim(out, target, judged, drange)
                    est = suvr(out, cortex, ref)
                    rows.append({
                        "subject": v.subject, "amyloid": "pos" if pos else "neg", "FWHM_mm": fwhm, "method": LABEL[m],
                        "seconds": 0.0 if m == "input" else t.seconds,
                        "RMSE_vs_RBV": _rmse(out, target, judged), "SSIM_vs_RBV": s_b, "SSIM_volume_vs_RBV": s_v,
                        "RMSE_vs_truth": _rmse(out, act, judged), "SSIM_vs_truth": ssim(out, act, judged, arange)[0],
                        "composite_SUVR": est, "SUVR_RBV": suvr_rbv, "SUVR_true": suvr_true,
                        "SUVR_err_vs_RBV_%": 100 * (est - suvr_rbv) / suvr_rbv, "SUVR_err_vs_true_%": 100 * (est - suvr_true) / suvr_true,
                    })
                if pictures is None and pos and fwhm == fwhms[len(fwhms) // 2]:
                    pictures = (outs, target, act, brain, fwhm)
    summary, goals = _summaries(rows, fwhms)
    seed_table = _seed_table(rows)
    cols = ["FWHM_mm", "method", "seconds", "SSIM_vs_RBV", "SSIM_volume_vs_RBV", "RMSE_vs_RBV", "RMSE_ratio_to_input", "RMSE_vs_truth", "SSIM_vs_truth", "abs_SUVR_err_vs_RBV_%_pos", "abs_SUVR_err_vs_RBV_%_neg", "abs_SUVR_err_vs_true_%_pos", "abs_SUVR_err_vs_true_%_neg"]
    sections = {
        "seed 002 layout (mean over subjects, amyloid status and FWHM; against the RBV target)": (seed_table, ["metric"] + [LABEL[m] for m in METHODS]),
        "goals (issue 7), per network and FWHM": (goals, ["network", "FWHM_mm", "SSIM", "SSIM>=0.99", "RMSE_ratio", "ratio<=0.65", "beats_sharpen_SSIM", "beats_sharpen_RMSE", "max_abs_SUVR_err_vs_RBV_%", "SUVR_within_5%"]),
        "per FWHM (mean over subjects and amyloid status)": (summary, cols),
        "per subject": (rows, list(rows[0].keys())),
    }
    meta = {"device": device_label(), "weights": {m: str(w) for m, w in weights.items()}, "network_epochs": {m: n[1].get("epoch") for m, n in nets.items()}, "network_targets": {m: n[1].get("target") for m, n in nets.items()}, "subjects": subjects, "seed": BENCH_SEED, "fwhms_mm": list(fwhms),
            "note": f"Held-out phantoms (seeds {BENCH_SEED}..), each amyloid-positive and -negative, FWHM {', '.join(f'{f:g}' for f in fwhms)} mm, 5 % noise. Target = RBV with the true PSF and tissue probabilities; RBV itself is therefore exact by construction against it (its row is a check). MG judged in GM (it corrects GM only). Seconds per volume on this device."}
    md = save_report(out_dir, "bench_pvc", sections, meta)
    if pictures:
        _figure(Path(out_dir) / "bench_pvc.png", *pictures)
    return md


def _summaries(rows, fwhms):
    summary, goals = [], []
    for f in fwhms:
        inp = [r for r in rows if r["FWHM_mm"] == f and r["method"] == "Input"]
        rmse_in = np.mean([r["RMSE_vs_RBV"] for r in inp])
        by = {}
        for m in METHODS:
            sel = [r for r in rows if r["FWHM_mm"] == f and r["method"] == LABEL[m]]
            rec = {"FWHM_mm": f, "method": LABEL[m]}
            for k in ("seconds", "SSIM_vs_RBV", "SSIM_volume_vs_RBV", "RMSE_vs_RBV", "RMSE_vs_truth", "SSIM_vs_truth"):
                rec[k] = float(np.mean([r[k] for r in sel]))
            rec["RMSE_ratio_to_input"] = rec["RMSE_vs_RBV"] / rmse_in
            for st in ("pos", "neg"):
                rec[f"abs_SUVR_err_vs_RBV_%_{st}"] = float(np.mean([abs(r["SUVR_err_vs_RBV_%"]) for r in sel if r["amyloid"] == st]))
                rec[f"abs_SUVR_err_vs_true_%_{st}"] = float(np.mean([abs(r["SUVR_err_vs_true_%"]) for r in sel if r["amyloid"] == st]))
            by[m] = rec
            summary.append(rec)
        s = by["sharpen"]
        for net in NETWORKS:
            n = by[net]
            worst = max(abs(r["SUVR_err_vs_RBV_%"]) for r in rows if r["FWHM_mm"] == f and r["method"] == LABEL[net])
            goals.append({"network": LABEL[net], "FWHM_mm": f, "SSIM": n["SSIM_vs_RBV"], "SSIM>=0.99": n["SSIM_vs_RBV"] >= 0.99, "RMSE_ratio": n["RMSE_ratio_to_input"], "ratio<=0.65": n["RMSE_ratio_to_input"] <= 0.65,
                          "beats_sharpen_SSIM": n["SSIM_vs_RBV"] > s["SSIM_vs_RBV"], "beats_sharpen_RMSE": n["RMSE_vs_RBV"] < s["RMSE_vs_RBV"], "max_abs_SUVR_err_vs_RBV_%": worst, "SUVR_within_5%": worst <= 5.0})
    goals.sort(key=lambda g: (g["network"], g["FWHM_mm"]))
    return summary, goals


def _seed_table(rows):
    out = []
    for metric, key in (("average SSIM (brain)", "SSIM_vs_RBV"), ("average SSIM (whole volume)", "SSIM_volume_vs_RBV"), ("average RMSE (SUV)", "RMSE_vs_RBV"), ("seconds per volume", "seconds")):
        out.append({"metric": metric, **{LABEL[m]: float(np.mean([r[key] for r in rows if r["method"] == LABEL[m]])) for m in METHODS}})
    return out


def _figure(path: Path, outs, target, act, brain, fwhm):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = np.argwhere(brain).mean(0).astype(int)
    cols = [("input", outs["input"]), ("sharpen", outs["sharpen"]), ("RBV (target)", target), ("PVCNet", outs["pvcnet"]), ("PVCNet-FWHM", outs["pvcnet_fwhm"]), ("truth", act)]
    vmax = float(np.percentile(act[brain], 99.5))
    fig, axes = plt.subplots(2, len(cols), figsize=(2.6 * len(cols), 5.4), facecolor="black")
    for j, (name, vol) in enumerate(cols):
        for i, img in enumerate((np.rot90(vol[:, :, c[2]]), np.rot90(vol[:, c[1], :]))):
            ax = axes[i, j]
            ax.imshow(img, cmap="hot", vmin=0, vmax=vmax)
            ax.set_axis_off()
            if i == 0:
                ax.set_title(name, color="white", fontsize=10)
    fig.suptitle(f"Amyloid-positive held-out phantom, PSF FWHM {fwhm:g} mm, SUV 0..{vmax:.2f}", color="white")
    fig.tight_layout()
    fig.savefig(path, dpi=90, facecolor="black")
    plt.close(fig)
