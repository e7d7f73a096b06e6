"""``qmri bench oef --tasks qq_region``: the OEF of regions a clinician draws, by the regional QQ fit
(:mod:`qmri.classical.qq_region`), on the held-out phantoms of ``qmri bench oef``.

Regions per subject: the infarct core, the penumbra and the territory of
:mod:`qmri.physics.oef_physiology`, each with its contralateral reference, as drawn exactly (the
true masks) and as drawn 2 mm too large (each mask dilated by one voxel inside the brain, so that it
takes in surrounding tissue). Metrics, as ``bench_oef``: contrast recovery C of each lesion against
its reference, the ROI-mean error, the territory asymmetry error, whether the 95 % interval holds
the truth, and whether the data were informative. The map methods' ROI means on the same regions
(stored rows of ``bench_oef_rows.json``, draw 0) and a constant map (C = 0) are rows of the same
table. Writes ``bench_oef_regions.md`` and ``.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_dilation

from ..anatomy.phantom import make_subject
from ..classical.qq_region import region_oef
from ..physics.qq import YA
from ..simulate.driver import task_rng
from ..simulate.oef import simulate_oef_with_regions
from .oef import MAIN_SNR, NOISE_DRAWS, SEED0, TITLES, _same_phantom_new_noise
from .report import Timer, save_report

log = logging.getLogger(__name__)
LESIONS = ("infarct_core", "penumbra")
GOAL_DIAMETER_MM = 20.0
GOAL_C = 0.7
GOAL_ROI_ERROR = 5.0
GOAL_ASYM = 3.0
ROI_DILATIONS = (0, 1)  # voxels: ROIs as drawn exactly and 2 mm too large
MAP_METHODS = ("qq_spatial", "best")  # map rows taken from bench_oef_rows.json when present


def _drawn(regions: dict, mask: np.ndarray, dilate: int) -> dict[str, np.ndarray]:
    """name -> ROI for the three regions and their references (``name_ref``), dilated by ``dilate``
    voxels inside ``mask``."""
    out = {}
    for name in (*LESIONS, "territory"):
        for key, suffix in (("mask", ""), ("reference", "_ref")):
            m = regions[name][key]
            out[name + suffix] = (binary_dilation(m, iterations=dilate) & mask) if dilate else m
    return out


def _row(res: dict, truth: np.ndarray, mask: np.ndarray, rois: dict, regions: dict) -> dict:
    """Metrics of one subject's regional estimates against the truth (true means over each ROI as
    drawn)."""
    true = {k: float(truth[r & mask].mean()) for k, r in rois.items()}
    row: dict = {}
    for name in LESIONS:
        a, b = res[name], res[name + "_ref"]
        row[f"{name}_C"] = (a.oef - b.oef) / (true[name] - true[name + "_ref"])
        row[f"{name}_roi_error"] = a.oef - true[name]
        row[f"{name}_ref_error"] = b.oef - true[name + "_ref"]
        row[f"{name}_diameter_mm"] = float(regions[name]["diameter_mm"])
        row[f"{name}_v_changed"] = bool(regions[name]["v_factor"] != 1.0)
        row[f"{name}_informative"] = bool(a.informative)
        row[f"{name}_true"], row[f"{name}_est"], row[f"{name}_sd"] = true[name], a.oef, a.sd
    t, tr = res["territory"], res["territory_ref"]
    row["territory_asym_error"] = (t.oef - tr.oef) - (true["territory"] - true["territory_ref"])
    row["territory_asym_true"] = true["territory"] - true["territory_ref"]
    row["covered"] = [bool(r.ci95[0] <= true[k] <= r.ci95[1]) for k, r in res.items()]
    row["informative"] = [bool(r.informative) for r in res.values()]
    return row


def run(out_dir: str, subjects: int = 4, snrs=(50.0, 100.0, 200.0), other_snr_subjects: int = 1, noise_draws: int = NOISE_DRAWS, resolution_mm: float = 2.0) -> str:
    """Benchmark; writes ``bench_oef_regions.md`` and ``bench_oef_regions.json`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(subjects):
        seed = SEED0 + i
        s = make_subject(seed, resolution_mm, subject_id=f"bench-oef-{i}")
        for snr in snrs:
            if snr != MAIN_SNR and i >= other_snr_subjects:
                continue
            for draw in range(noise_draws if (snr == MAIN_SNR and i == 0) else 1):
                if draw == 0:
                    st, regions = first = simulate_oef_with_regions(s, task_rng("oef", seed), snr=snr)
                else:
                    st, regions = _same_phantom_new_noise(*first, seed, snr, draw)
                mask = st.image[..., -1] != 0
                truth = 100 * (1 - st.target[..., 2] / YA)
                te = np.asarray(st.sidecar["echo_times_ms"]) / 1000.0
                drawn = {dilate: _drawn(regions, mask, dilate) for dilate in ROI_DILATIONS}
                both = {f"{dilate}/{name}": roi for dilate, rois in drawn.items() for name, roi in rois.items()}
                with Timer() as t:  # one call: the noise variance and tissue classes are estimated once per volume
                    fitted = region_oef(st.image[..., :-1], st.image[..., -1], mask, te, both, B0=st.sidecar["B0_T"])
                for dilate, rois in drawn.items():
                    res = {r.name.split("/", 1)[1]: r for r in fitted if r.name.startswith(f"{dilate}/")}
                    row = {"subject": s.subject_id, "SNR": snr, "draw": draw, "roi": "dilated 2 mm" if dilate else "exact", "seconds": t.seconds, **_row(res, truth, mask, rois, regions)}
                    log.info("%s SNR %g draw %d %s: C infarct %.2f penumbra %.2f, asym err %.1f", s.subject_id, snr, draw, row["roi"], row["infarct_core_C"], row["penumbra_C"], row["territory_asym_error"])
                    rows.append(row)
    maps = _map_rows(out, subjects)
    return str(save_report(out, "bench_oef_regions", _sections(rows, maps, subjects), {"note": _note(subjects, resolution_mm), "rows": rows, "map_rows": maps}))


def _map_rows(out: Path, subjects: int) -> list[dict]:
    """The map methods' ROI-mean rows of ``bench_oef_rows.json`` (SNR 100, draw 0) for these subjects."""
    f = out / "bench_oef_rows.json"
    if not f.exists():
        return []
    want = {f"bench-oef-{i}" for i in range(subjects)}
    return [r for r in json.loads(f.read_text()) if r["subject"] in want and r["SNR"] == MAIN_SNR and r["draw"] == 0 and r["method"] in MAP_METHODS + ("constant",)]


def _big(r: dict, name: str) -> bool:
    return r.get(f"{name}_diameter_mm", 0.0) >= GOAL_DIAMETER_MM


def _summary(rows: list[dict], title: str, map_row: bool = False) -> dict:
    Cs = [r[f"{n}_C"] for r in rows for n in LESIONS if _big(r, n) and f"{n}_C" in r]
    errs = [abs(r[f"{n}_roi_error"]) for r in rows for n in LESIONS if _big(r, n) and f"{n}_roi_error" in r]
    asym = [abs(r["territory_asym_error"]) for r in rows if "territory_asym_error" in r]
    if map_row:  # bench_oef stores the estimated asymmetry and the true one
        asym = [abs(r["territory_asym"] - r["territory_asym_true"]) for r in rows if "territory_asym" in r]
    cov = [c for r in rows for c, inf in zip(r.get("covered", []), r.get("informative", [])) if inf]
    f = lambda xs, fn: f"{fn(xs):.2f}" if xs else ""  # noqa: E731
    return {
        "method": title,
        "volumes": len(rows),
        "lesions >= 20 mm": len(Cs),
        "C min / mean": f"{f(Cs, min)} / {f(Cs, np.mean)}",
        "max abs ROI error": f(errs, max),
        "max asym error": f(asym, max),
        "95 % interval holds the truth (informative regions)": f"{np.mean(cov):.2f} of {len(cov)}" if cov else "",
    }


def _sections(rows: list[dict], maps: list[dict], subjects: int) -> dict[str, tuple[list[dict], list[str]]]:
    main = [r for r in rows if r["SNR"] == MAIN_SNR]
    summ = [_summary([r for r in main if r["roi"] == roi], f"regional QQ fit, ROI {roi}") for roi in ("exact", "dilated 2 mm")]
    for m in ("constant",) + MAP_METHODS:
        mr = [r for r in maps if r["method"] == m]
        if mr:
            summ.append(_summary(mr, f"{TITLES[m]} map, ROI mean", map_row=True))
    cols = list(summ[0])
    sections = {f"Echo-1 SNR {MAIN_SNR:g}: {subjects} subjects, {NOISE_DRAWS} noise draws of the first": (summ, cols)}
    for snr in sorted({r["SNR"] for r in rows} - {MAIN_SNR}):
        sections[f"Echo-1 SNR {snr:g} (first subject)"] = ([_summary([r for r in rows if r["SNR"] == snr and r["roi"] == roi], f"regional QQ fit, ROI {roi}") for roi in ("exact", "dilated 2 mm")], cols)
    per = []
    for r in rows:
        for n in LESIONS:
            per.append(
                {
                    "subject": r["subject"],
                    "SNR": f"{r['SNR']:g}",
                    "draw": r["draw"],
                    "ROI": r["roi"],
                    "region": n,
                    "diam mm": f"{r[f'{n}_diameter_mm']:.0f}",
                    "v changed": r[f"{n}_v_changed"],
                    "true OEF": f"{r[f'{n}_true']:.1f}",
                    "estimated (sd)": f"{r[f'{n}_est']:.1f} ({r[f'{n}_sd']:.1f})",
                    "informative": r[f"{n}_informative"],
                    "C": f"{r[f'{n}_C']:.2f}",
                    "reference error": f"{r[f'{n}_ref_error']:+.1f}",
                    "territory asym true / error": f"{r['territory_asym_true']:+.1f} / {r['territory_asym_error']:+.1f}",
                    "seconds (both ROI sets)": f"{r['seconds']:.0f}",
                }
            )
    sections["Per subject, region and noise draw"] = (per, list(per[0]))
    return sections


def _note(subjects: int, resolution_mm: float) -> str:
    return (
        f"Regional OEF (`qmri.classical.qq_region`) of the held-out phantoms of `bench_oef` (seeds {SEED0}..{SEED0 + subjects - 1}, {resolution_mm:g} mm, 8 echoes 4.5..39.5 ms, "
        f"Rician noise at the stated echo-1 SNR, 0.005 ppm QSM noise): the infarct core, the penumbra and the territory with their contralateral references, drawn exactly or 2 mm too large. "
        f"Goals (issue 24): lesions >= {GOAL_DIAMETER_MM:g} mm C >= {GOAL_C} and ROI mean within {GOAL_ROI_ERROR:g} %-points; territory asymmetry within {GOAL_ASYM:g} %-points. "
        "Map rows: ROI means of the maps stored in `bench_oef_rows.json` (exact ROIs, draw 0); a constant map scores C = 0."
    )
