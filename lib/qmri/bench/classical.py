"""``qmri bench classical``: every classical method on held-out phantoms, time and error vs truth.

Held-out subjects use seeds from :data:`BENCH_SEED` on (never used for sample data or training).
Volumes are 2 mm whole heads/brains as the server receives them.
"""

from __future__ import annotations

import logging

import numpy as np

from ..anatomy.phantom import make_subject
from ..metrics import synthrad as sm
from ..metrics.maps import qsm_metrics, ssim
from ..physics.pet import cerebellar_gm_mask, suvr
from ..simulate.driver import task_rng
from .report import Timer, device_label, save_report

log = logging.getLogger(__name__)
BENCH_SEED = 5000


def bench_synthesis(subjects: int, resolution_mm: float):
    from ..classical.bulk_density import synthetic_ct_bulk_density, synthetic_mr_bulk
    from ..classical.tissue_mixture_ct import synthetic_ct_tissue_mixture
    from ..simulate.synthesis import simulate_synthesis

    rows = []
    for i in range(subjects):
        s = make_subject(BENCH_SEED + i, resolution_mm, subject_id=f"bench-{i}")
        mr_study, ct_study = simulate_synthesis(s, task_rng("synth", BENCH_SEED + i))
        mr, ct = mr_study.image, ct_study.image
        head = s.head_mask
        for name, method in (("bulk_density", synthetic_ct_bulk_density), ("tissue_mixture", synthetic_ct_tissue_mixture)):
            with Timer() as t:
                sct = method(mr, voxel_size_mm=s.voxel_size_mm)
            r = sm.evaluate_sct(sct, ct, head)
            rows.append({"task": "sCT", "method": name, "subject": s.subject_id, "seconds": t.seconds, "MAE_HU": r["mae"], "PSNR_dB": r["psnr"], "SSIM": r["ssim"], "bone_Dice": r["bone_dice"]})
        with Timer() as t:
            smr = synthetic_mr_bulk(ct)
        r = sm.evaluate_smr(smr, mr, head)
        rows.append({"task": "sMR", "method": "bulk_density", "subject": s.subject_id, "seconds": t.seconds, "PSNR_dB": r["psnr"], "SSIM": r["ssim"]})
    return rows, ["task", "method", "subject", "seconds", "MAE_HU", "PSNR_dB", "SSIM", "bone_Dice"]


def bench_pvc(subjects: int, resolution_mm: float, fwhms=(5.0, 6.5, 8.0)):
    from ..simulate.pet import simulate_pvc
    from ..tasks.pvc import run_pvc

    methods = ("input", "sharpen", "richardson_lucy", "van_cittert", "gtm", "iterative_yang", "rbv", "muller_gartner")
    rows = []
    for i in range(subjects):
        seed = BENCH_SEED + 100 + i
        # The same seed with and without amyloid gives the same anatomy and lesions; the positive
        # subject's amyloid cortex (lesion code 4) is the composite SUVR region for both.
        pos = make_subject(seed, resolution_mm, amyloid_positive=True, subject_id=f"bench-pet-{i}")
        composite = pos.lesions == 4
        for s in (pos, make_subject(seed, resolution_mm, amyloid_positive=False, subject_id=f"bench-pet-{i}")):
            ref = cerebellar_gm_mask(s.labels, s.voxel_size_mm)
            cortex = composite & ~ref
            brain = s.brain_mask
            for fwhm in fwhms:
                (st,) = simulate_pvc(s, task_rng("pvc", seed), fwhm_mm=fwhm)
                act, pet = st.target, st.image[..., 0]
                true_suvr = suvr(act, cortex, ref)
                rng_ = float(np.percentile(act[brain], 99.5))
                for m in methods:
                    with Timer() as t:
                        out = pet if m == "input" else run_pvc(st.image, s.affine, st.sidecar, m)[0].data
                    judged = brain & (s.probseg[..., 2] > 0.5) if m in ("muller_gartner", "gtm") else brain
                    est = suvr(out, cortex, ref)
                    rows.append(
                        {
                            "subject": s.subject_id,
                            "amyloid": "pos" if s.amyloid_positive else "neg",
                            "FWHM_mm": fwhm,
                            "method": m,
                            "seconds": 0.0 if m == "input" else t.seconds,
                            "RMSE_SUV": float(np.sqrt(np.mean((out - act)[judged] ** 2))),
                            "SSIM": ssim(out, act, judged, rng_)[0],
                            "composite_SUVR": est,
                            "true_SUVR": true_suvr,
                            "SUVR_error_%": 100 * (est - true_suvr) / true_suvr,
                        }
                    )
    return rows, ["subject", "amyloid", "FWHM_mm", "method", "seconds", "RMSE_SUV", "SSIM", "composite_SUVR", "true_SUVR", "SUVR_error_%"]


def bench_qsm(subjects: int, resolution_mm: float):
    from ..simulate.qsm import simulate_qsm, tilted_b0
    from ..tasks.qsm import run_qsm, run_qsm_raw

    rows = []
    for i in range(subjects):
        s = make_subject(BENCH_SEED + 200 + i, resolution_mm, subject_id=f"bench-qsm-{i}")
        for tilt in (0.0, 20.0):
            studies = simulate_qsm(s, task_rng("qsm", BENCH_SEED + 200 + i), b0_dir=tilted_b0(tilt), raw=tilt == 0.0)
            for st in studies:
                run = run_qsm if st.sidecar["task"] == "qsm" else run_qsm_raw
                for m in ("tkd", "l2", "tv"):
                    with Timer() as t:
                        chi = run(st.image, s.affine, st.sidecar, m)[0].data
                    mask = chi != 0
                    rows.append({"subject": s.subject_id, "input": st.sidecar["task"], "B0_tilt_deg": tilt, "method": m, "seconds": t.seconds, **qsm_metrics(chi, st.target, mask)})
    return rows, ["subject", "input", "B0_tilt_deg", "method", "seconds", "NRMSE", "HFEN", "SSIM"]


def bench_oef(subjects: int, resolution_mm: float, snrs=(50.0, 100.0, 200.0)):
    from ..physics.qq import PARAM_NAMES, YA
    from ..simulate.oef import simulate_oef
    from ..tasks.oef import run_oef

    rows = []
    for i in range(subjects):
        s = make_subject(BENCH_SEED + 300 + i, resolution_mm, subject_id=f"bench-oef-{i}")
        gm = np.isin(s.labels, (2, 4, 5, 6, 7, 8, 9, 10))
        wm = s.labels == 3
        for snr in snrs:
            (st,) = simulate_oef(s, task_rng("oef", BENCH_SEED + 300 + i), snr=snr)
            with Timer() as t:
                maps = {m.name: m.data for m in run_oef(st.image, s.affine, st.sidecar, "qq_fit")}
            mask = st.image[..., -1] != 0
            oef_true = 100 * (1 - st.target[..., 2] / YA)
            row = {"subject": s.subject_id, "SNR": snr, "method": "qq_fit", "seconds": t.seconds, "voxels": int(mask.sum())}
            for k, n in enumerate(PARAM_NAMES):
                row[f"RMSE_{n}"] = float(np.sqrt(np.mean((maps[n] - st.target[..., k])[mask] ** 2)))
            row["RMSE_OEF_pp"] = float(np.sqrt(np.mean((maps["OEF"] - oef_true)[mask] ** 2)))
            row["OEF_GM"] = float(maps["OEF"][mask & gm].mean())
            row["OEF_GM_true"] = float(oef_true[mask & gm].mean())
            row["OEF_WM"] = float(maps["OEF"][mask & wm].mean())
            row["OEF_WM_true"] = float(oef_true[mask & wm].mean())
            rows.append(row)
    cols = ["subject", "SNR", "method", "seconds", "voxels"] + [f"RMSE_{n}" for n in PARAM_NAMES] + ["RMSE_OEF_pp", "OEF_GM", "OEF_GM_true", "OEF_WM", "OEF_WM_true"]
    return rows, cols


BENCHES = {"synth": bench_synthesis, "pvc": bench_pvc, "qsm": bench_qsm, "oef": bench_oef}


def run(out_dir: str, subjects: int = 2, resolution_mm: float = 2.0, tasks: tuple[str, ...] | None = None):
    sections = {}
    for name in tasks or tuple(BENCHES):
        log.info("benchmark %s", name)
        sections[name] = BENCHES[name](subjects, resolution_mm)
    meta = {"device": device_label(), "subjects": subjects, "resolution_mm": resolution_mm, "seed": BENCH_SEED, "note": "Held-out phantoms; errors against the simulated truth. MG and GTM judged in GM (they correct GM only)."}
    return save_report(out_dir, "bench_classical", sections, meta)
