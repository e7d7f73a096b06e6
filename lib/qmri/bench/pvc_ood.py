"""``qmri bench pvc`` out of distribution: PVC methods on amyloid PET made by an independent simulator.

Nothing here is used for training. Only the anatomy (the project's phantom heads, held-out seeds
from :data:`OOD_SEED`) is shared with the training data; the PET is made by code of its own:

* **Activity** (SUV, cerebellar GM = 1): an independent tissue table (:data:`INDEPENDENT_SUVR`,
  a fluorinated-tracer-like WM/GM contrast lower than the training table's), and a positive
  subject's cortical uptake as smooth blobs around typical amyloid sites (precuneus, medial and
  lateral frontal, lateral temporo-parietal; :data:`AMYLOID_SITES`) instead of the training
  phantoms' label-shaped positive cortex; a cold 24 mm lesion (infarct, x 0.35) and two hot 10 mm
  cortical foci (x 1.8), whose recovery is the classic PVC test a blurred input fails.
* **Scanner**: an anisotropic PSF with a tail (92 % core Gaussian of FWHM f transaxial and 1.15 f
  axial, 8 % tail Gaussian of 3x that FWHM; :func:`scanner_blur`, by ``scipy.ndimage``), of which
  the sidecar reports only the core (``psf_fwhm_mm = [f, f, 1.15 f]``), as a data sheet does; Poisson
  counts (5 % relative sd at SUV 1) whose noise is correlated by a reconstruction-like filter
  (:func:`poisson_noise`).
* **Grids**: 2 mm (the networks' grid) at f = 5, 6.5 and 8 mm; 1 mm and 2 x 2 x 3 mm at f = 6.5 mm,
  where the networks run on their own grid through the task (box-averaged to 2 mm, the map
  interpolated back: the loss of detail is in these rows); a refusal would be the row's note.

Rows: the input, Van Cittert and Richardson-Lucy (PET-only, PETPVC defaults), RBV and IY with the
true tissue probabilities and with a realistic segmentation (:mod:`qmri.physics.pet_segmentation`),
and the served networks through the task code. Metrics against the TRUE activity in the brain:
RMSE and its ratio to the input's, SSIM, the composite SUVR error (amyloid sites' cortex over the
cerebellar GM), the hot foci's recovery coefficient (mean estimate / mean truth in the focus) and
the cold lesion's contrast recovery ``C = (est_lesion - est_shell) / (true_lesion - true_shell)``
against a 4-10 mm shell around it. Goals table (issue 25): the PET-only network beats Van Cittert
and Richardson-Lucy on SSIM and RMSE at every FWHM.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from ..anatomy.labels import BRAIN_LABELS, LABEL, N_CLASSES
from ..anatomy.phantom import make_subject
from ..metrics.maps import rmse, ssim
from ..models import shipped
from ..models.pvcnet.predict import load_pvcnet
from ..networks.weights import ReloadingWeights
from ..physics.pet import cerebellar_gm_mask, segmentation_probabilities, suvr
from ..physics.pet_segmentation import realistic_segmentation
from ..simulate.driver import crop_box, task_rng
from ..tasks.pvc import run_pvc
from .report import Timer, device_label, save_report

log = logging.getLogger(__name__)
#: held-out anatomy for this bench (training 30000.., validation 31000.., in-distribution bench 5400..)
OOD_SEED = 5450
FWHMS = (5.0, 6.5, 8.0)
AXIAL_FACTOR = 1.15  # axial / transaxial FWHM of the independent scanner
TAIL_WEIGHT, TAIL_FACTOR = 0.08, 3.0
NOISE_AT_SUV1 = 0.05
#: independent tissue table (SUVR; cerebellar GM = 1.0): fluorinated-tracer-like, lower WM/GM contrast
INDEPENDENT_SUVR = {
    "csf": 0.1,
    "cortical_gm": 1.05,
    "wm": 1.45,
    "caudate": 1.25,
    "putamen": 1.3,
    "globus_pallidus": 1.25,
    "thalamus": 1.3,
    "red_nucleus": 1.2,
    "substantia_nigra": 1.2,
    "dentate": 1.0,
    "venous_blood": 0.6,
    "bone": 0.15,
    "soft_tissue": 0.5,
}
#: amyloid sites as fractions of the brain's bounding box (x: right -> left is 0 -> 1 in RAS voxel
#: order, y: posterior -> anterior, z: inferior -> superior) and their added cortical SUVR
AMYLOID_SITES = {
    "precuneus": ((0.5, 0.28, 0.72), 0.9),
    "medial frontal": ((0.5, 0.82, 0.62), 0.7),
    "left lateral frontal": ((0.2, 0.72, 0.62), 0.6),
    "right lateral frontal": ((0.8, 0.72, 0.62), 0.6),
    "left temporo-parietal": ((0.1, 0.38, 0.5), 0.75),
    "right temporo-parietal": ((0.9, 0.38, 0.5), 0.75),
}
SITE_SIGMA_MM = 22.0
METHODS = ("input", "van_cittert", "richardson_lucy", "rbv@ideal", "rbv@realistic", "iterative_yang@ideal", "iterative_yang@realistic", "pvcnet", "pvcnet_fwhm")
_BASE = {"input": "Input", "van_cittert": "Van Cittert", "richardson_lucy": "Richardson-Lucy", "rbv": "RBV", "iterative_yang": "IY", "pvcnet": "PVCNet", "pvcnet_fwhm": "PVCNet-FWHM"}
LABEL_OF = {m: (f"{_BASE[m.split('@')[0]]} ({m.split('@')[1]} seg)" if "@" in m else _BASE[m]) for m in METHODS}
NETWORKS = ("pvcnet", "pvcnet_fwhm")


def _sphere(shape, centre, radius_mm, vox) -> np.ndarray:
    idx = np.indices(shape, dtype=np.float64)
    d2 = sum(((idx[a] - centre[a]) * vox[a]) ** 2 for a in range(3))
    return d2 <= radius_mm**2


def independent_activity(probseg, labels, vox, positive: bool, rng: np.random.Generator):
    """(activity SUV, amyloid-site cortex mask, cerebellar reference mask, hot foci masks, cold lesion mask).

    ``probseg`` (x, y, z, 15) partial volumes on a grid of ``vox`` mm (per axis); the activity is
    ``sum_c p_c a_c`` with :data:`INDEPENDENT_SUVR`, the cortex raised by the amyloid sites' blobs
    when ``positive``, then the focal lesions applied to the total."""
    vox = np.asarray(vox, float)
    shape = labels.shape
    brain = np.isin(labels, BRAIN_LABELS)
    pts = np.argwhere(brain)
    lo, hi = pts.min(0), pts.max(0)
    idx = np.indices(shape, dtype=np.float64)
    cereb = cerebellar_gm_mask(labels, vox)
    cereb_grown = ndimage.binary_dilation(cereb, iterations=2)
    pattern = np.zeros(shape)
    for (fx, fy, fz), amp in AMYLOID_SITES.values():
        c = lo + (hi - lo) * np.array([fx, fy, fz])
        d2 = sum(((idx[a] - c[a]) * vox[a]) ** 2 for a in range(3))
        pattern += amp * rng.uniform(0.8, 1.2) * np.exp(-0.5 * d2 / SITE_SIGMA_MM**2)
    cortex_value = INDEPENDENT_SUVR["cortical_gm"] + (pattern if positive else 0.05 * pattern)
    cortex_value = np.where(cereb_grown, 1.0, np.minimum(cortex_value, 2.6))
    table = np.zeros(N_CLASSES)
    for name, v in INDEPENDENT_SUVR.items():
        table[LABEL[name]] = v
    act = probseg @ table
    act += probseg[..., LABEL["cortical_gm"]] * (cortex_value - INDEPENDENT_SUVR["cortical_gm"])
    gm = labels == LABEL["cortical_gm"]
    sites = gm & (pattern > 0.3) & ~cereb_grown
    # focal lesions away from the brain's edge and the cerebellum
    inner = ndimage.binary_erosion(brain, iterations=int(np.ceil(12.0 / vox.min()))) & ~ndimage.binary_dilation(cereb, iterations=int(np.ceil(20.0 / vox.min())))
    cand_cold = np.argwhere(inner & (labels == LABEL["wm"]))
    cold = _sphere(shape, cand_cold[rng.integers(len(cand_cold))], 12.0, vox)
    hot = []
    cand_hot = np.argwhere(inner & gm & ~ndimage.binary_dilation(cold, iterations=int(np.ceil(15.0 / vox.min()))))
    for _ in range(2):
        s = _sphere(shape, cand_hot[rng.integers(len(cand_hot))], 5.0, vox)
        hot.append(s)
        away = ~ndimage.binary_dilation(s, iterations=int(np.ceil(15.0 / vox.min())))
        cand_hot = cand_hot[away[tuple(cand_hot.T)]]
    act = np.where(cold, act * 0.35, act)
    for s in hot:
        act = np.where(s, act * 1.8, act)
    return act.astype(np.float32), sites, cereb, hot, cold


def scanner_blur(act, vox, fwhm_mm) -> np.ndarray:
    """The independent scanner's PSF: 92 % Gaussian of FWHM (f, f, 1.15 f) mm + 8 % of 3x that FWHM."""
    sig = np.array([fwhm_mm, fwhm_mm, fwhm_mm * AXIAL_FACTOR]) / (2 * np.sqrt(2 * np.log(2))) / np.asarray(vox, float)
    core = ndimage.gaussian_filter(act.astype(np.float64), sig, mode="nearest", truncate=4.0)
    tail = ndimage.gaussian_filter(act.astype(np.float64), TAIL_FACTOR * sig, mode="nearest", truncate=4.0)
    return (1 - TAIL_WEIGHT) * core + TAIL_WEIGHT * tail


def poisson_noise(blurred, rng: np.random.Generator, noise_at_suv1: float = NOISE_AT_SUV1, corr_voxels: float = 0.6) -> np.ndarray:
    """Poisson counts (``noise_at_suv1`` relative sd at SUV 1), their noise filtered by a Gaussian of
    ``corr_voxels`` sd (a reconstruction's noise texture) and rescaled to keep its variance."""
    k = 1.0 / noise_at_suv1**2  # counts per SUV
    noise = rng.poisson(np.clip(blurred, 0, None) * k) / k - np.clip(blurred, 0, None)
    impulse = np.zeros((9, 9, 9))
    impulse[4, 4, 4] = 1.0
    gain = np.sqrt((ndimage.gaussian_filter(impulse, corr_voxels) ** 2).sum())
    return (blurred + ndimage.gaussian_filter(noise, corr_voxels) / gain).astype(np.float32)


def _block_mean(a, factors):
    s = [n // f * f for n, f in zip(a.shape[:3], factors)]
    a = a[: s[0], : s[1], : s[2]]
    return a.reshape(s[0] // factors[0], factors[0], s[1] // factors[1], factors[1], s[2] // factors[2], factors[2], *a.shape[3:]).mean(axis=(1, 3, 5))


def cases(subjects: int = 1, fwhms=FWHMS):
    """Yield (case name, seed, positive, fwhm mm, voxel (3,), activity, PET, seg (x,y,z,4), masks dict)."""
    for i in range(subjects):
        seed = OOD_SEED + i
        for grid, vmm in (("2 mm", 2.0), ("1 mm", 1.0)):
            s = make_subject(seed, vmm, lesions="none", amyloid_positive=True, subject_id=f"ood-pvc-{seed}")
            box = crop_box(s.brain_mask, s.voxel_size_mm, 10.0)
            p, labels, brain = s.probseg[box], s.labels[box], s.brain_mask[box]
            vox = (vmm,) * 3
            seg = segmentation_probabilities(p)
            coarse_seg = segmentation_probabilities(_block_mean(p, (2, 2, 3))) if grid == "1 mm" else None
            for positive in (True, False):
                rng = task_rng("pvc-ood", seed * 10 + (0 if positive else 1) + (0 if grid == "2 mm" else 5))
                act, sites, cereb, hot, cold = independent_activity(p, labels, vox, positive, rng)
                masks = {"brain": brain, "sites": sites, "cereb": cereb, "hot": hot, "cold": cold}
                for fwhm in fwhms if grid == "2 mm" else (6.5,):
                    blurred = scanner_blur(act, vox, fwhm)
                    yield (grid, seed, positive, fwhm, vox, act, poisson_noise(blurred, rng), seg, masks)
                    if grid == "1 mm":  # the same truth and scanner on a 2 x 2 x 3 mm grid (block means; noise at that grid)
                        f = (2, 2, 3)
                        coarse = {k: [_block_mean(h.astype(np.float32), f) > 0.5 for h in v] if k == "hot" else _block_mean(v.astype(np.float32), f) > 0.5 for k, v in masks.items()}
                        yield ("2x2x3 mm", seed, positive, fwhm, (2.0, 2.0, 3.0), _block_mean(act, f), poisson_noise(_block_mean(blurred, f), rng), coarse_seg, coarse)


def _contrast(out, act, les, brain, vox):
    shell = ndimage.binary_dilation(les, iterations=int(np.ceil(10.0 / min(vox)))) & ~ndimage.binary_dilation(les, iterations=int(np.ceil(4.0 / min(vox)))) & brain
    return float((out[les].mean() - out[shell].mean()) / (act[les].mean() - act[shell].mean()))


def run(out_dir: str, weights: dict | None = None, subjects: int = 1, fwhms=FWHMS):
    """``weights``: network name -> checkpoint (default: the shipped ``pvcnet`` and ``pvcnet_fwhm``)."""
    weights = {**{m: shipped(m) for m in NETWORKS}, **(weights or {})}
    nets = {m: ReloadingWeights(weights[m], load_pvcnet, f"PVC network '{m}'") for m in NETWORKS}
    rows, realistic = [], {}
    for grid, seed, positive, fwhm, vox, act, pet, seg, masks in cases(subjects, fwhms):
        brain = masks["brain"]
        affine = np.diag([*vox, 1.0])
        sidecar = {"psf_fwhm_mm": [fwhm, fwhm, round(fwhm * AXIAL_FACTOR, 3)], "units": "SUV"}
        if (grid, seed) not in realistic:  # one per subject and grid, shared by its amyloid statuses and FWHMs
            realistic[(grid, seed)] = realistic_segmentation(seg, vox, task_rng("pvc-ood-segmentation", seed)).seg
        segs = {"ideal": seg, "realistic": realistic[(grid, seed)]}
        arange = float(np.percentile(act[brain], 99.5))
        true_suvr = suvr(act, masks["sites"], masks["cereb"])
        log.info("pvc ood: %s, seed %d, %s, FWHM %g mm", grid, seed, "positive" if positive else "negative", fwhm)
        for m in METHODS:
            name, _, which = m.partition("@")
            row = {"case": grid, "subject": f"ood-pvc-{seed}", "amyloid": "pos" if positive else "neg", "FWHM_mm": fwhm, "method": LABEL_OF[m]}
            image = np.concatenate([pet[..., None], segs[which]], axis=-1) if which else pet
            try:
                with Timer() as t:
                    out = pet if m == "input" else run_pvc(image, affine, sidecar, name, nets=nets)[0].data
            except ValueError as e:  # a method that refuses this grid
                rows.append({**row, "note": f"refused: {e}"})
                continue
            est_suvr = suvr(out, masks["sites"], masks["cereb"])
            rows.append(
                {
                    **row,
                    "RMSE_vs_truth": rmse(out, act, brain),
                    "SSIM_vs_truth": ssim(out, act, brain, arange)[0],
                    "SUVR_err_%": 100 * (est_suvr - true_suvr) / true_suvr,
                    "hot_recovery": float(np.mean([out[h].mean() / act[h].mean() for h in masks["hot"]])),
                    "cold_contrast_recovery": _contrast(out, act, masks["cold"], brain, vox),
                    "seconds": 0.0 if m == "input" else t.seconds,
                    "note": "",
                }
            )
    summary = _summary(rows)
    goals = _goals(summary)
    sections = {
        "out-of-distribution PET (independent simulator; mean over amyloid status)": (
            summary,
            ["case", "FWHM_mm", "method", "RMSE_vs_truth", "RMSE_ratio_to_input", "SSIM_vs_truth", "abs_SUVR_err_%", "hot_recovery", "cold_contrast_recovery", "seconds", "note"],
        ),
        "goals (issue 25): the PET-only network beats Van Cittert and Richardson-Lucy on SSIM and RMSE at every FWHM (2 mm)": (goals, ["network", "FWHM_mm", "RMSE", "RMSE_VC", "RMSE_RL", "SSIM", "SSIM_VC", "SSIM_RL", "met"]),
        "per case": (rows, ["case", "subject", "amyloid", "FWHM_mm", "method", "RMSE_vs_truth", "SSIM_vs_truth", "SUVR_err_%", "hot_recovery", "cold_contrast_recovery", "seconds", "note"]),
    }
    meta = {
        "device": device_label(),
        "weights": {m: str(w) for m, w in weights.items()},
        "subjects": subjects,
        "seed": OOD_SEED,
        "note": f"Amyloid PET from an independent simulator (qmri.bench.pvc_ood; never used for training) on held-out anatomy (seeds {OOD_SEED}..): "
        "own tissue table and blob-shaped amyloid sites, a 24 mm cold lesion and two 10 mm hot foci, an anisotropic PSF with a tail "
        f"(core FWHM f, f, {AXIAL_FACTOR:g} f; {100 * TAIL_WEIGHT:g} % tail of {TAIL_FACTOR:g}x; the sidecar gives the core), Poisson noise "
        f"({100 * NOISE_AT_SUV1:g} % at SUV 1) with correlated texture. Errors against the true activity in the brain. "
        "At 1 mm and 2 x 2 x 3 mm the networks run on their 2 mm grid through the task (box-averaged, the map interpolated back). Seconds per volume on this device.",
    }
    return save_report(out_dir, "bench_pvc_ood", sections, meta)


def _summary(rows):
    out = []
    keys = sorted({(r["case"], r["FWHM_mm"]) for r in rows}, key=lambda k: (k[0] != "2 mm", k[0], k[1]))
    for case, f in keys:
        sel_in = [r for r in rows if r["case"] == case and r["FWHM_mm"] == f and r["method"] == "Input"]
        rmse_in = float(np.mean([r["RMSE_vs_truth"] for r in sel_in]))
        for m in METHODS:
            sel = [r for r in rows if r["case"] == case and r["FWHM_mm"] == f and r["method"] == LABEL_OF[m]]
            rec = {"case": case, "FWHM_mm": f, "method": LABEL_OF[m], "note": sel[0].get("note", "") if sel else ""}
            ok = [r for r in sel if "RMSE_vs_truth" in r]
            if ok:
                for k in ("RMSE_vs_truth", "SSIM_vs_truth", "hot_recovery", "cold_contrast_recovery", "seconds"):
                    rec[k] = float(np.mean([r[k] for r in ok]))
                rec["abs_SUVR_err_%"] = float(np.mean([abs(r["SUVR_err_%"]) for r in ok]))
                rec["RMSE_ratio_to_input"] = rec["RMSE_vs_truth"] / rmse_in
            out.append(rec)
    return out


def _goals(summary):
    by = {(r["case"], r["FWHM_mm"], r["method"]): r for r in summary}
    goals = []
    for net in NETWORKS:
        for (case, f, m), r in by.items():
            if case != "2 mm" or m != LABEL_OF[net] or "RMSE_vs_truth" not in r:
                continue
            vc, rl = by[(case, f, "Van Cittert")], by[(case, f, "Richardson-Lucy")]
            goals.append(
                {
                    "network": m,
                    "FWHM_mm": f,
                    "RMSE": r["RMSE_vs_truth"],
                    "RMSE_VC": vc["RMSE_vs_truth"],
                    "RMSE_RL": rl["RMSE_vs_truth"],
                    "SSIM": r["SSIM_vs_truth"],
                    "SSIM_VC": vc["SSIM_vs_truth"],
                    "SSIM_RL": rl["SSIM_vs_truth"],
                    "met": bool(r["RMSE_vs_truth"] < min(vc["RMSE_vs_truth"], rl["RMSE_vs_truth"]) and r["SSIM_vs_truth"] > max(vc["SSIM_vs_truth"], rl["SSIM_vs_truth"])),
                }
            )
    return goals
