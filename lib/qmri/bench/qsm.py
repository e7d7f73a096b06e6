"""``qmri bench qsm``: QSMnet against TKD, closed-form L2, TV and masked CG on held-out phantoms,
with a constant map as the trivial row.

``qsmnet`` is the served method: the network followed by the support-constrained data-consistency
step (:func:`qmri.classical.qsm.masked_cg`, iterations set from the field's noise);
``qsmnet_direct`` is the network output alone and ``cg`` the same CG solver started from zero, so
the table shows what the network and the physics step each contribute.

Held-out subjects (seeds from 5200) were never used for training (20000..) or validation (21000..).
Each is inverted with B0 along z and with B0 tilted 20 degrees. Errors are computed after removing
each map's brain mean (QSM is defined up to a constant): NRMSE, HFEN, SSIM, pSNR, deep-grey-nucleus
ROI mean errors and the regression slope of estimated on true chi in lesion voxels.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..anatomy.labels import DEEP_GM_LABELS, LESION_CODE, NAMES
from ..anatomy.phantom import make_subject
from ..classical import qsm as cq
from ..models.qsmnet.predict import load_qsmnet, predict_chi
from ..models import shipped
from ..physics.qsm_phantom import susceptibility_map
from ..physics.rotation import rotation_about
from ..simulate.driver import crop_box, task_rng
from ..models.qsmnet.data import local_field
from ..metrics.maps import qsm_metrics
from .figures import Panel, axial, coronal, map_grid
from .report import Timer, device_label, save_report

log = logging.getLogger(__name__)
BENCH_SEED = 5200
#: ``constant``: the trivial map (0 ppm everywhere; every metric removes the brain mean, so any
#: constant scores the same: NRMSE 1, lesion slope 0, nucleus errors = the true nucleus contrasts)
METHODS = ("constant", "tkd", "l2", "tv", "cg", "qsmnet_direct", "qsmnet")


def _psnr(est, ref, mask) -> float:
    e, r = est[mask] - est[mask].mean(), ref[mask] - ref[mask].mean()
    return float(20 * np.log10((r.max() - r.min()) / np.sqrt(np.mean((e - r) ** 2))))


def _rois(est, ref, labels, mask):
    e = est - est[mask].mean()
    r = ref - ref[mask].mean()
    out = {}
    for lab in DEEP_GM_LABELS:
        roi = (labels == lab) & mask
        if roi.sum() > 0:
            out[NAMES[lab]] = (float(e[roi].mean()), float(r[roi].mean()))
    return out


def invert(method: str, net, field, mask, vs, b0) -> np.ndarray:
    """chi (ppm, 0 outside ``mask``) of ``field`` by a benched method (:data:`METHODS`)."""
    if method == "constant":
        est = np.zeros(field.shape)
    elif method == "qsmnet":
        est = predict_chi(net, field, mask, vs, b0_dir=b0)
    elif method == "qsmnet_direct":
        est = predict_chi(net, field, mask, vs, b0_dir=b0, refine_iterations=0)
    elif method == "cg":
        est = np.asarray(cq.masked_cg(field, mask, vs, b0))
    elif method == "tkd":
        est = np.asarray(cq.tkd(field, mask, vs, b0))
    elif method == "l2":
        est = np.asarray(cq.closed_form_l2(field, mask, vs, b0))
    elif method == "tv":
        est = np.asarray(cq.tv_inversion(field, mask, vs, b0))
    else:
        raise ValueError(f"unknown QSM bench method {method!r}")
    return np.where(mask, est, 0.0)


def run(out_dir: str, weights: str | Path | None = None, subjects: int = 2, resolution_mm: float = 2.0, tilt_deg: float = 20.0):
    weights = weights if weights is not None else shipped("qsmnet")  # the app's model folder (qmri.paths)
    net, cfg = load_qsmnet(weights)
    rows, roi_rows, pictures = [], [], None
    for i in range(subjects):
        s = make_subject(BENCH_SEED + i, resolution_mm, lesions="all", subject_id=f"bench-qsm-{i}")
        box = crop_box(s.brain_mask, s.voxel_size_mm, 8.0)
        chi_full = susceptibility_map(s.labels, s.lesions, task_rng("qsm", BENCH_SEED + i), probseg=s.probseg)
        mask, labels, lesions = s.brain_mask[box], s.labels[box], s.lesions[box]
        chi = np.where(mask, chi_full[box], 0.0)
        les = np.isin(lesions, (LESION_CODE["haemorrhage"], LESION_CODE["calcification"])) & mask
        vs = (s.voxel_size_mm,) * 3
        for tilt in (0.0, tilt_deg):
            b0 = rotation_about(0, tilt) @ np.array([0.0, 0.0, 1.0])
            field = local_field(chi, mask, s.voxel_size_mm, b0_dir=b0, rng=np.random.default_rng(BENCH_SEED + i))
            results = {}
            for m in METHODS:
                with Timer() as t:
                    est = invert(m, net, field, mask, vs, b0)
                results[m] = est
                rois = _rois(est, chi, labels, mask)
                roi_err = max(abs(a - b) for a, b in rois.values())
                e = est[les] - est[mask].mean()
                r = chi[les] - chi[mask].mean()
                slope = float(np.polyfit(r, e, 1)[0]) if les.sum() > 3 else float("nan")
                rows.append({"subject": s.subject_id, "B0_tilt_deg": tilt, "method": m, "seconds": t.seconds, **qsm_metrics(est, chi, mask), "pSNR_dB": _psnr(est, chi, mask), "max_ROI_error_ppm": roi_err, "lesion_slope": slope})
                for name, (a, b) in rois.items():
                    roi_rows.append({"subject": s.subject_id, "B0_tilt_deg": tilt, "method": m, "nucleus": name, "estimate_ppm": a, "truth_ppm": b, "error_ppm": a - b})
            if pictures is None:
                pictures = (chi, results, mask)
    summary = []
    for m in METHODS:
        sel = [r for r in rows if r["method"] == m]
        summary.append({"method": m, **{k: float(np.mean([r[k] for r in sel])) for k in ("seconds", "NRMSE", "HFEN", "SSIM", "pSNR_dB", "max_ROI_error_ppm", "lesion_slope")}})
    cols = ["method", "seconds", "NRMSE", "HFEN", "SSIM", "pSNR_dB", "max_ROI_error_ppm", "lesion_slope"]
    sections = {
        "mean over subjects and B0 orientations": (summary, cols),
        "per subject and orientation": (rows, ["subject", "B0_tilt_deg"] + cols),
        "deep grey nuclei (demeaned ppm)": (roi_rows, ["subject", "B0_tilt_deg", "method", "nucleus", "estimate_ppm", "truth_ppm", "error_ppm"]),
    }
    meta = {
        "device": device_label(),
        "weights": str(weights),
        "network_epoch": cfg.get("epoch"),
        "subjects": subjects,
        "seed": BENCH_SEED,
        "note": f"Held-out phantoms (seeds {BENCH_SEED}..), B0 along z and tilted {tilt_deg:g} deg; QSMnet inverts the tilted case by rotating to z; qsmnet = network + masked-CG data consistency, qsmnet_direct = network alone, cg = masked CG from zero.",
    }
    md = save_report(out_dir, "bench_qsm", sections, meta)
    _figure(Path(out_dir) / "bench_qsm.png", *pictures)
    return md


def _figure(path: Path, chi, results, mask):
    c = np.argwhere(mask).mean(0).astype(int)

    def demeaned(vol):
        return np.where(mask, vol - vol[mask].mean(), 0.0)

    cols = [("truth", demeaned(chi), "gray")] + [(m, demeaned(results[m]), "gray") for m in METHODS if m != "constant"]
    cols += [(f"{m} - truth", demeaned(results[m]) - demeaned(chi), "RdBu_r") for m in ("qsmnet", "l2")]
    rows = [[Panel(name, cut(v), "chi (ppm)", -0.15, 0.15, cmap, mask=cut(mask)) for name, v, cmap in cols] for cut in (lambda v: axial(v, c[2]), lambda v: coronal(v, c[1]))]
    map_grid(path, rows, "QSM on a held-out phantom (B0 along z), demeaned in the brain: axial (top) and coronal (bottom) slices", panel_inches=2.3)
