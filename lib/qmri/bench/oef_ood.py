"""``qmri bench oef --ood``: OEF on phantoms from an independent simulator with partial-volume voxels.

The project's OEF phantoms (:mod:`qmri.simulate.oef`) give every voxel one set of QQ parameters.
Real 2 mm voxels mix grey matter, white matter and CSF, whose echoes decay differently, and whose
mixture is not one QQ decay (CSF carries no blood and decays slowly). This simulator is written
independently of the training generator and is never used for training:

* anatomy: nilearn's MNI152 grey- and white-matter probability templates at 2 mm; CSF is the rest of
  the brain mask. Each voxel's compartment fractions are the templates' probabilities;
* per subject and compartment, drawn from its own ranges: S0, R2 [1/s], v, chi_nb [ppm], and OEF
  (a brain level of 28-48 %, a GM/WM offset and a smooth 8 mm random field of sd 3 %-points);
  CSF has no blood;
* two spherical lesions of 20-30 mm in opposite hemispheres, in tissue: a low-OEF one (8-20 %,
  v x 0.5 or unchanged) and a high-OEF one (58-72 %, v unchanged);
* echoes: the sum over compartments of ``f_c S0_c exp(-R2_c t - v_c f_s(dw_c t))``, with f_s
  evaluated here by Gauss-Legendre quadrature of its integral (Yablonskiy and Haacke 1994),
  not by the project's series (:func:`qmri.physics.qq.fs`); QSM: the fraction-weighted QQ
  susceptibility of the compartments (the published equation, :func:`qmri.physics.qq.blood_chi`)
  plus 0.005 ppm noise; Rician noise at echo-1 SNR 100;
* truth: a voxel's OEF is the blood-weighted mean of its compartments' OEF (what its venous blood
  carries); a region's is the blood-weighted mean over its voxels. Voxels with less than 0.5 %
  blood (CSF) have no OEF and are left out of every map metric.

Rows: the regional QQ fit on the exact lesion ROIs and their mirror images, and on the whole brain;
the ``best`` map's ROI means, its r with the truth, and its whole-brain mean; a constant map at the
population mean (C = 0, r = 0). Writes ``bench_oef_ood.md``, ``.json`` and ``.png`` (the first subject).

Units: OEF in %, errors in %-points, R2 in 1/s, QSM and chi_nb in ppm, echo times in s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter
from scipy.special import j0

from ..physics.qq import ALPHA, B0_DEFAULT, CHI_BA, DCHI0, GAMMA, HCT, QQNET_TE_S, YA, blood_chi
from .classical import BENCH_SEED
from .report import Timer, save_report

log = logging.getLogger(__name__)
SEED0 = BENCH_SEED + 700  # 5700..: disjoint from every other phantom seed
SNR = 100.0
QSM_NOISE_PPM = 0.005
PRIOR_OEF = 37.0  # %: the constant map's value
MIN_BLOOD = 0.005  # fraction: voxels with less blood have no OEF
LESION_DIAMETER_MM = (20.0, 30.0)
# compartment ranges: S0 (a.u.), R2 (1/s), v (fraction), chi_nb (ppm)
RANGES = {
    "gm": {"S0": (0.95, 1.05), "R2": (12.0, 16.0), "v": (0.030, 0.045), "chi_nb": (-0.01, 0.02)},
    "wm": {"S0": (0.75, 0.85), "R2": (16.0, 21.0), "v": (0.015, 0.025), "chi_nb": (-0.04, -0.01)},
    "csf": {"S0": (1.3, 1.6), "R2": (1.5, 4.0), "v": (0.0, 0.0), "chi_nb": (-0.015, 0.0)},
}
_GL_U, _GL_W = np.polynomial.legendre.leggauss(96)


def fs_quadrature(x: np.ndarray) -> np.ndarray:
    """The qBOLD static-dephasing function ``f_s(x) = 1/3 int_0^1 (2 + u) sqrt(1 - u) (1 - J0(1.5 x u)) / u^2 du``
    (Yablonskiy and Haacke, MRM 1994) by 96-point Gauss-Legendre quadrature; ``x = dw t`` [rad]."""
    u = 0.5 * (_GL_U + 1.0)
    w = 0.5 * _GL_W * (2.0 + u) * np.sqrt(1.0 - u) / u**2
    x = np.asarray(x, np.float64)
    return (w * (1.0 - j0(1.5 * x[..., None] * u))).sum(-1) / 3.0


@dataclass
class OODPhantom:
    """One subject: ``image`` (x, y, z, E + 1) echoes + QSM, the brain ``mask``, ``oef`` the voxel
    truth [%] (nan without blood), ``rois`` name -> mask and ``roi_truth`` name -> OEF [%]."""

    image: np.ndarray
    mask: np.ndarray
    oef: np.ndarray
    rois: dict
    roi_truth: dict
    affine: np.ndarray
    lesions: dict


def _templates():
    from nilearn import datasets

    gm = datasets.load_mni152_gm_template(resolution=2)
    wm = datasets.load_mni152_wm_template(resolution=2)
    brain = datasets.load_mni152_brain_mask(resolution=2)
    return np.asarray(gm.dataobj, np.float64), np.asarray(wm.dataobj, np.float64), np.asarray(brain.dataobj) > 0.5, gm.affine


def _sphere(shape, centre, radius_vox):
    g = np.indices(shape).astype(np.float64)
    return sum((g[i] - centre[i]) ** 2 for i in range(3)) <= radius_vox**2


def make_phantom(seed: int, snr: float = SNR) -> OODPhantom:
    """The subject of ``seed`` (see the module doc)."""
    rng = np.random.default_rng(seed)
    gm, wm, brain, affine = _templates()
    gm, wm = np.where(brain, np.clip(gm, 0, 1), 0.0), np.where(brain, np.clip(wm, 0, 1), 0.0)
    tissue = np.minimum(gm + wm, 1.0)
    scale = np.where(gm + wm > 1.0, 1.0 / np.maximum(gm + wm, 1e-9), 1.0)
    frac = {"gm": gm * scale, "wm": wm * scale, "csf": np.where(brain, 1.0 - tissue, 0.0)}
    par = {c: {k: rng.uniform(*r) for k, r in rng_.items()} for c, rng_ in RANGES.items()}
    level, offset = rng.uniform(0.28, 0.48), rng.uniform(-0.03, 0.03)
    field = gaussian_filter(rng.normal(size=brain.shape), 4.0)  # 8 mm at 2 mm
    field *= 0.03 / max(field[brain].std(), 1e-12)
    oef = {"gm": level + offset + field, "wm": level - offset + field, "csf": np.full(brain.shape, level)}
    vfac = {c: np.ones(brain.shape) for c in frac}
    # lesions: one per hemisphere (world x < 0 / > 0), inside tissue, mirror images kept clear
    mid = int(round(-affine[0, 3] / affine[0, 0]))  # array index of world x = 0
    depth = distance_transform_edt(tissue > 0.5) * 2.0  # mm
    lesions, rois, used = {}, {}, np.zeros(brain.shape, bool)
    side = rng.integers(2)
    for k, (name, lo, hi, v_changes) in enumerate((("low_oef", 0.08, 0.20, True), ("high_oef", 0.58, 0.72, False))):
        d = rng.uniform(*LESION_DIAMETER_MM)
        hemi = (np.arange(brain.shape[0]) < mid) if (side + k) % 2 == 0 else (np.arange(brain.shape[0]) > mid)
        ok = (depth >= 0.5 * d + 2.0) & hemi[:, None, None] & ~used
        cand = np.argwhere(ok)
        centre = cand[rng.integers(len(cand))]
        sph = _sphere(brain.shape, centre, 0.5 * d / 2.0) & brain
        mirror = _sphere(brain.shape, (2 * mid - centre[0], centre[1], centre[2]), 0.5 * d / 2.0) & brain
        keep_off = 0.5 * d / 2.0 + 0.5 * LESION_DIAMETER_MM[1] / 2.0 + 2  # voxels: no later lesion's centre within reach
        used |= _sphere(brain.shape, centre, keep_off) | _sphere(brain.shape, (2 * mid - centre[0], centre[1], centre[2]), keep_off)
        value = rng.uniform(lo, hi)
        factor = rng.choice([0.5, 1.0]) if v_changes else 1.0
        for c in ("gm", "wm"):
            oef[c] = np.where(sph, value, oef[c])
            vfac[c] = np.where(sph, factor, vfac[c])
        lesions[name] = {"diameter_mm": float(d), "OEF": 100.0 * value, "v_factor": float(factor)}
        rois[name], rois[name + "_ref"] = sph, mirror & ~sph
    te = np.asarray(QQNET_TE_S, np.float64)
    mag = np.zeros(brain.shape + (len(te),))
    chi = np.zeros(brain.shape)
    blood, blood_oef = np.zeros(brain.shape), np.zeros(brain.shape)
    for c, f in frac.items():
        p = par[c]
        o = np.clip(oef[c], 0.02, 0.95)
        Y = YA * (1.0 - o)
        v = p["v"] * vfac[c]
        dw = GAMMA * B0_DEFAULT / 3.0 * np.abs(HCT * DCHI0 * (1.0 - Y) + CHI_BA - p["chi_nb"])  # rad/s
        sel = brain & (f > 0)
        dephasing = v[sel][:, None] * fs_quadrature(dw[sel][:, None] * te) if p["v"] > 0 else 0.0  # CSF: no blood
        mag[sel] += f[sel][:, None] * p["S0"] * np.exp(-p["R2"] * te - dephasing)
        chi += f * (blood_chi(Y) * v + (1.0 - v / ALPHA) * p["chi_nb"])
        blood += f * v
        blood_oef += f * v * o
    sigma = mag[..., 0][brain].mean() / snr
    mag = np.sqrt((mag + rng.normal(0, sigma, mag.shape)) ** 2 + rng.normal(0, sigma, mag.shape) ** 2)
    mag[~brain] = 0.0
    chi = np.where(brain, chi + rng.normal(0, QSM_NOISE_PPM, brain.shape), 0.0)
    truth = np.where(brain & (blood >= MIN_BLOOD), 100.0 * blood_oef / np.maximum(blood, 1e-12), np.nan)
    rois["brain"] = brain
    roi_truth = {n: float(100.0 * blood_oef[r].sum() / blood[r].sum()) for n, r in rois.items()}
    image = np.concatenate([mag, chi[..., None]], -1).astype(np.float32)
    return OODPhantom(image, brain, truth, rois, roi_truth, affine, lesions)


def _rows_for(ph: OODPhantom, subject: str, method: str, est: dict, seconds: float, r: float | None = None, sd: dict | None = None, informative: dict | None = None) -> list[dict]:
    """One row per lesion: C against its mirror, ROI error; and the whole-brain level error."""
    rows = []
    for name, les in ph.lesions.items():
        t, tr = ph.roi_truth[name], ph.roi_truth[name + "_ref"]
        rows.append(
            {
                "subject": subject,
                "method": method,
                "lesion": name,
                "diameter_mm": les["diameter_mm"],
                "v_factor": les["v_factor"],
                "true": t,
                "true_ref": tr,
                "est": est[name],
                "est_ref": est[name + "_ref"],
                "C": (est[name] - est[name + "_ref"]) / (t - tr),
                "roi_error": est[name] - t,
                "brain_error": est["brain"] - ph.roi_truth["brain"],
                "r": r,
                "sd": None if sd is None else sd[name],
                "informative": None if informative is None else informative[name],
                "seconds": seconds,
            }
        )
    return rows


def run(out_dir: str, weights_dir: str | Path | None = None, subjects: int = 3, snr: float = SNR, with_best: bool = True) -> str:
    """Benchmark; writes ``bench_oef_ood.md`` and ``bench_oef_ood.json`` into ``out_dir``."""
    from ..classical.qq_region import region_oef
    from ..metrics.oef import pearson_r

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = None
    if with_best:
        from ..models import shipped
        from ..tasks.oef import oef_spec

        wd = Path(weights_dir) if weights_dir is not None else shipped("oefnet")
        spec = oef_spec({"best": wd / "best.pt"})
    te = np.asarray(QQNET_TE_S, np.float64)
    rows = []
    for i in range(subjects):
        ph = make_phantom(SEED0 + i, snr)
        subject = f"ood-oef-{i}"
        tissue = ph.mask & np.isfinite(ph.oef)
        truth0 = np.where(tissue, ph.oef, 0.0)
        with Timer() as t:
            fit = {x.name: x for x in region_oef(ph.image[..., :-1], ph.image[..., -1], ph.mask, te, ph.rois, B0=B0_DEFAULT)}
        rows += _rows_for(ph, subject, "regional QQ fit, exact ROIs", {n: x.oef for n, x in fit.items()}, t.seconds, sd={n: x.sd for n, x in fit.items()}, informative={n: x.informative for n, x in fit.items()})
        const = {n: PRIOR_OEF for n in ph.rois}
        rows += _rows_for(ph, subject, "constant population mean map", const, 0.0, r=0.0)
        if spec is not None:
            sidecar = {"echo_times_ms": [1000.0 * x for x in te], "B0_T": B0_DEFAULT}
            with Timer() as t:
                maps = {q.name: q.data for q in spec.run(ph.image, ph.affine, sidecar, "best")}
            est = {n: float(maps["OEF"][r & tissue].mean()) for n, r in ph.rois.items()}
            rows += _rows_for(ph, subject, "best (default) map, ROI means", est, t.seconds, r=pearson_r(maps["OEF"], truth0, tissue))
        log.info("%s: %s", subject, ", ".join(f"{r['method']} {r['lesion']} C {r['C']:.2f}" for r in rows[-6:]))
        if i == 0:
            _figure(out / "bench_oef_ood.png", ph, fit, maps["OEF"] if spec is not None else None, subject)
    return str(save_report(out, "bench_oef_ood", _sections(rows), {"note": _note(subjects, snr), "rows": rows}))


def _figure(path: Path, ph: OODPhantom, fit: dict, best: np.ndarray | None, subject: str) -> Path:
    """Axial slice through the high-OEF lesion: the truth, the echo-1 magnitude, the regional fit's
    estimates painted on their ROIs, and the ``best`` map (outlines: white the low-OEF lesion, red
    the high-OEF one, cyan their mirrors)."""
    from .figures import Panel, axial, map_grid

    z = int(np.argwhere(ph.rois["high_oef"])[:, 2].mean())
    outline = np.zeros(ph.mask.shape, np.int8)
    painted = np.full(ph.mask.shape, np.nan)
    for name, value in (("low_oef", 1), ("high_oef", 2)):
        outline[ph.rois[name]], outline[ph.rois[name + "_ref"]] = value, 3
        painted[ph.rois[name]], painted[ph.rois[name + "_ref"]] = fit[name].oef, fit[name + "_ref"].oef
    tissue, o = axial(ph.mask & np.isfinite(ph.oef), z), axial(outline, z)
    oef = dict(units="OEF (%)", vmin=0.0, vmax=75.0, cmap="viridis", outline=o)
    row = [
        Panel("truth (blood-weighted)", axial(np.nan_to_num(ph.oef), z), mask=tissue, **oef),
        Panel("echo 1", axial(ph.image[..., 0], z), "a.u.", 0.0, float(np.percentile(ph.image[..., 0][ph.mask], 99)), mask=axial(ph.mask, z), outline=o),
        Panel("regional QQ fit on the ROIs", axial(np.nan_to_num(painted), z), mask=axial(np.isfinite(painted), z), **oef),
    ]
    if best is not None:
        row.append(Panel("best (default) map", axial(best, z), mask=tissue, **oef))
    return map_grid(path, [row], f"Independent partial-volume phantom {subject}, echo-1 SNR {SNR:g}, axial slice {z} (white: low-OEF lesion, red: high-OEF lesion, cyan: mirrors)", panel_inches=2.7)


def _sections(rows: list[dict]) -> dict:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    summ = []
    for m in methods:
        mr = [r for r in rows if r["method"] == m]
        subj = {r["subject"]: r for r in mr}
        rs = [r["r"] for r in subj.values() if r["r"] is not None]
        summ.append(
            {
                "method": m,
                "lesions": len(mr),
                "C min / mean": f"{min(r['C'] for r in mr):.2f} / {np.mean([r['C'] for r in mr]):.2f}",
                "max abs ROI error": f"{max(abs(r['roi_error']) for r in mr):.2f}",
                "max abs whole-brain error": f"{max(abs(r['brain_error']) for r in subj.values()):.2f}",
                "r in tissue (mean)": f"{np.mean(rs):.2f}" if rs else "",
            }
        )
    per = [
        {
            "subject": r["subject"],
            "method": r["method"],
            "lesion": r["lesion"],
            "diam mm": f"{r['diameter_mm']:.0f}",
            "v factor": f"{r['v_factor']:g}",
            "true / ref (%)": f"{r['true']:.1f} / {r['true_ref']:.1f}",
            "est / ref (%)": f"{r['est']:.1f} / {r['est_ref']:.1f}" + ("" if r["sd"] is None else f" (sd {r['sd']:.1f})"),
            "informative": "" if r["informative"] is None else r["informative"],
            "C": f"{r['C']:.2f}",
            "whole-brain error": f"{r['brain_error']:+.1f}",
            "seconds": f"{r['seconds']:.1f}",
        }
        for r in rows
    ]
    return {"Summary (echo-1 SNR 100, exact ROIs)": (summ, list(summ[0])), "Per subject and lesion": (per, list(per[0]))}


def _note(subjects: int, snr: float) -> str:
    return (
        f"Out of distribution: {subjects} subjects (seeds {SEED0}..{SEED0 + subjects - 1}) of an independent simulator with partial-volume voxels "
        f"(nilearn MNI152 GM/WM probabilities, CSF the rest; per-compartment QQ decays summed; f_s by quadrature; lesions 20-30 mm), echo-1 SNR {snr:g}, 0.005 ppm QSM noise, "
        "8 echoes 4.5..39.5 ms. Truth: blood-weighted OEF. C: contrast recovery against the lesion's mirror image (a constant map scores 0). Never used for training."
    )
