"""``qmri bench oef``: the OEF networks against the classical QQ fit on held-out phantoms.

Subjects and studies are those of the classical benchmark's OEF part (:func:`qmri.bench.classical.bench_oef`:
seeds ``BENCH_SEED + 300 + i`` = 5300.., ``simulate_oef`` with ``task_rng("oef", seed)``), disjoint from
the training (40000..) and validation (41000..) anatomies. Every method runs through the task's
``run_oef`` (the same path as the server), timed per 2 mm whole-brain volume on this machine.

At the main SNR (100) every subject is evaluated; the other SNRs (50, 200) are evaluated on the
first ``other_snr_subjects`` subjects only, because the classical fit and the voxelwise LSTM take
minutes per volume on a CPU. RMSEs are pooled over brain voxels (S0 a.u., R2 1/s, Y and v fractions,
chi_nb ppm, OEF %-points); GM / WM mean OEF use the classical benchmark's tissue sets.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from ..anatomy.phantom import make_subject
from ..paths import shipped
from ..physics.qq import PARAM_NAMES, YA
from ..physics.qq_phantom import Y_MEAN
from ..simulate.driver import task_rng
from ..simulate.oef import simulate_oef
from ..tasks.oef import oef_spec
from .classical import BENCH_SEED
from .report import Timer, device_label, save_report

log = logging.getLogger(__name__)
SEED0 = BENCH_SEED + 300  # = the classical benchmark's OEF subjects
GM_LABELS = (2, 4, 5, 6, 7, 8, 9, 10)  # cortical GM + deep GM nuclei (as qmri.bench.classical.bench_oef)
WM_LABELS = (3,)
METHODS = ("qq_fit", "lstm", "cnn3d", "best")
TITLES = {"qq_fit": "classical fit", "lstm": "LSTM (seed 001)", "cnn3d": "3D CNN (seed 000)", "best": "best"}
MAIN_SNR = 100.0
PRIOR_OEF = 100 * (1 - Y_MEAN / YA)  # %, the population-mean OEF of the phantoms: a data-free reference


def _row(maps: dict, st, gm, wm) -> dict:
    mask = st.image[..., -1] != 0
    oef_true = 100 * (1 - st.target[..., 2] / YA)
    row = {"voxels": int(mask.sum())}
    for k, n in enumerate(PARAM_NAMES):
        row[f"SSE_{n}"] = float(np.sum((maps[n] - st.target[..., k])[mask] ** 2))
    row["SSE_OEF"] = float(np.sum((maps["OEF"] - oef_true)[mask] ** 2))
    for name, t in (("GM", gm), ("WM", wm)):
        row[f"OEF_{name}"] = float(maps["OEF"][mask & t].mean())
        row[f"OEF_{name}_true"] = float(oef_true[mask & t].mean())
    return row


def _pool(rows: list[dict]) -> dict:
    n = sum(r["voxels"] for r in rows)
    out = {f"RMSE_{p}": math.sqrt(sum(r[f"SSE_{p}"] for r in rows) / n) for p in PARAM_NAMES}
    out["RMSE_OEF_pp"] = math.sqrt(sum(r["SSE_OEF"] for r in rows) / n)
    for k in ("OEF_GM", "OEF_GM_true", "OEF_WM", "OEF_WM_true", "seconds"):
        out[k] = float(np.mean([r[k] for r in rows]))
    out["subjects"] = len(rows)
    return out


def run(out_dir: str, weights_dir: str | Path | None = None, subjects: int = 2, resolution_mm: float = 2.0, snrs=(50.0, 100.0, 200.0), other_snr_subjects: int = 1, methods=METHODS, reuse_rows: bool = False, first_subject: int = 0):
    """Benchmark; writes ``bench_oef.md``, ``bench_oef.json`` and ``bench_oef.png`` into ``out_dir``.

    Every (subject, SNR, method) result is also stored in ``bench_oef_rows.json`` (and the SNR-100
    OEF maps in ``bench_oef_maps.npz``), after each volume; with ``reuse_rows`` stored results that
    this run does not re-measure are reused (e.g. the classical fit, minutes per volume, measured
    once), so a later run only re-measures the networks. The report marks reused rows.
    ``first_subject`` skips the first subjects (to complete an interrupted run).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows_file, maps_file = out / "bench_oef_rows.json", out / "bench_oef_maps.npz"
    stored = json.loads(rows_file.read_text()) if reuse_rows and rows_file.exists() else []
    stored = [r for r in stored if r["resolution_mm"] == resolution_mm]
    maps_store = dict(np.load(maps_file)) if reuse_rows and maps_file.exists() else {}
    wd = Path(weights_dir) if weights_dir is not None else shipped("oefnet")
    weights = {k: wd / f"{k}.pt" for k in ("best", "cnn3d", "lstm")}
    missing = [str(p) for k, p in weights.items() if k in methods and not p.exists()]
    if missing:
        raise ValueError(f"missing OEF weights {missing}: run `qmri train oef --model cnn3d|lstm|best` first")
    spec = oef_spec(weights)  # the server's task (networks reloaded from these files)
    new = []
    truths, prior_sse = {}, {}
    key = lambda r: (r["subject"], r["SNR"], r["method"])  # noqa: E731

    def save():  # after every volume, so that an interrupted run keeps what it measured
        done = {key(r) for r in new}
        rows_file.write_text(json.dumps([r for r in stored if key(r) not in done] + new, indent=1))
        np.savez_compressed(maps_file, **maps_store)

    for i in range(first_subject, subjects):
        seed = SEED0 + i
        s = make_subject(seed, resolution_mm, subject_id=f"bench-oef-{i}")
        gm, wm = np.isin(s.labels, GM_LABELS), np.isin(s.labels, WM_LABELS)
        for snr in snrs:
            if snr != MAIN_SNR and i >= other_snr_subjects:
                continue
            (st,) = simulate_oef(s, task_rng("oef", seed), snr=snr)
            if snr == MAIN_SNR:
                truth, brain = 100 * (1 - st.target[..., 2] / YA), st.image[..., -1] != 0
                truths[s.subject_id] = (truth, brain)
                prior_sse[s.subject_id] = (float(np.sum((truth - PRIOR_OEF)[brain] ** 2)), int(brain.sum()))
            for m in methods:
                with Timer() as t:
                    maps = {q.name: q.data for q in spec.run(st.image, s.affine, st.sidecar, m)}
                row = {"subject": s.subject_id, "SNR": snr, "method": m, "seconds": t.seconds, "resolution_mm": resolution_mm, **_row(maps, st, gm, wm)}
                log.info("%s SNR %g %s: %.1f s, OEF RMSE %.2f", s.subject_id, snr, m, t.seconds, math.sqrt(row["SSE_OEF"] / row["voxels"]))
                new.append(row)
                if snr == MAIN_SNR:
                    maps_store[f"{s.subject_id}:{m}"] = maps["OEF"].astype(np.float32)
                save()
    done = {key(r) for r in new}
    raw = [dict(r, reused=True) for r in stored if key(r) not in done] + new
    picture = None
    for sid, (truth, mask) in truths.items():  # the first subject with every method's OEF map
        res = {m: maps_store[f"{sid}:{m}"] for m in METHODS if f"{sid}:{m}" in maps_store and maps_store[f"{sid}:{m}"].shape == truth.shape}
        if picture is None or len(res) > len(picture[1]):
            picture = (truth, res, mask, sid)
    methods = tuple(m for m in METHODS if any(r["method"] == m for r in raw))

    by = {}
    for r in raw:
        by.setdefault((r["SNR"], r["method"]), []).append(r)
    pooled = {key: _pool(rows) for key, rows in by.items()}
    main = {m: pooled[(MAIN_SNR, m)] for m in methods if (MAIN_SNR, m) in pooled}

    # Table 1 layout (seed 000): rows = parameters, columns = methods, at SNR 100
    t1 = []
    units = {"S0": "a.u.", "R2": "1/s", "Y": "fraction", "v": "fraction", "chi_nb": "ppm"}
    for p in PARAM_NAMES:
        t1.append({"parameter": f"{p} ({units[p]})", **{TITLES[m]: main[m][f"RMSE_{p}"] for m in main}})
    t1.append({"parameter": "OEF (%-points)", **{TITLES[m]: main[m]["RMSE_OEF_pp"] for m in main}})
    t1.append({"parameter": "mean OEF GM (%) [truth]", **{TITLES[m]: f"{main[m]['OEF_GM']:.1f} [{main[m]['OEF_GM_true']:.1f}]" for m in main}})
    t1.append({"parameter": "mean OEF WM (%) [truth]", **{TITLES[m]: f"{main[m]['OEF_WM']:.1f} [{main[m]['OEF_WM_true']:.1f}]" for m in main}})
    t1.append({"parameter": "seconds / 2 mm volume", **{TITLES[m]: main[m]["seconds"] for m in main}})
    t1_cols = ["parameter"] + [TITLES[m] for m in main]

    per_snr = []
    for (snr, m), r in sorted(pooled.items(), key=lambda kv: (kv[0][0], methods.index(kv[0][1]))):
        per_snr.append({"SNR": snr, "method": m, "subjects": r["subjects"], "reused": any(x.get("reused") for x in by[(snr, m)]), **{k: r[k] for k in ("seconds", *[f"RMSE_{p}" for p in PARAM_NAMES], "RMSE_OEF_pp", "OEF_GM", "OEF_GM_true", "OEF_WM", "OEF_WM_true")}})
    snr_cols = ["SNR", "method", "subjects", "reused", "seconds"] + [f"RMSE_{p}" for p in PARAM_NAMES] + ["RMSE_OEF_pp", "OEF_GM", "OEF_GM_true", "OEF_WM", "OEF_WM_true"]

    goals = _goals(main) if all(m in main for m in ("qq_fit", "cnn3d", "best")) else []
    if prior_sse:
        rmse0 = math.sqrt(sum(a for a, _ in prior_sse.values()) / sum(n for _, n in prior_sse.values()))
        goals.append({"goal": "(reference, not a goal) a constant population-mean OEF map", "measured": f"OEF RMSE {rmse0:.2f} at {PRIOR_OEF:.1f} % everywhere", "met": ""})
    sections = {
        f"Table 1 layout: RMSE per parameter at echo-1 SNR {MAIN_SNR:g} ({main[methods[0]]['subjects']} held-out subjects)": (t1, t1_cols),
        "All SNRs (RMSE pooled over brain voxels; GM/WM mean OEF in %)": (per_snr, snr_cols),
        "Goals (issue 6)": (goals, ["goal", "measured", "met"]),
        "Per subject": ([{k: v for k, v in r.items() if not k.startswith("SSE")} | {"RMSE_OEF_pp": math.sqrt(r["SSE_OEF"] / r["voxels"])} for r in raw], ["subject", "SNR", "method", "seconds", "voxels", "RMSE_OEF_pp", "OEF_GM", "OEF_GM_true", "OEF_WM", "OEF_WM_true"]),
    }
    meta = {
        "device": device_label(),
        "subjects": subjects,
        "other_snr_subjects": other_snr_subjects,
        "resolution_mm": resolution_mm,
        "seeds": [SEED0 + i for i in range(subjects)],
        "weights": {k: str(v) for k, v in weights.items()},
        "reused_methods": sorted({r["method"] for r in raw if r.get("reused")}),
        "note": f"Held-out phantoms (seeds {SEED0}..), studies as `qmri simulate oef` (Rician noise at the stated echo-1 SNR, 0.005 ppm QSM noise). SNR {MAIN_SNR:g}: {subjects} subjects; other SNRs: the first {min(subjects, other_snr_subjects)}. Times: wall seconds of the task's run per 2 mm whole-brain volume.",
    }
    if meta["reused_methods"]:
        srcs = sorted({r.get("source", "an earlier run of this benchmark") for r in raw if r.get("reused")})
        meta["note"] += f" Rows of {', '.join(meta['reused_methods'])} were not re-measured by this run but reused from bench_oef_rows.json (column 'reused'; same code and studies); their sources: " + "; ".join(srcs) + "."
    md = save_report(out_dir, "bench_oef", sections, meta)
    if picture is not None:
        _figure(Path(out_dir) / "bench_oef.png", *picture)
    return md


def _goals(main: dict) -> list[dict]:
    c, n, b = main["qq_fit"], main["cnn3d"], main["best"]
    red = 1 - b["RMSE_OEF_pp"] / c["RMSE_OEF_pp"]
    speed = c["seconds"] / b["seconds"]
    worse = [p for p in PARAM_NAMES if b[f"RMSE_{p}"] > n[f"RMSE_{p}"]]
    dgm, dwm = abs(b["OEF_GM"] - b["OEF_GM_true"]), abs(b["OEF_WM"] - b["OEF_WM_true"])
    return [
        {"goal": "best OEF RMSE >= 30 % below the classical fit", "measured": f"{100 * red:.0f} % below ({b['RMSE_OEF_pp']:.2f} vs {c['RMSE_OEF_pp']:.2f})", "met": red >= 0.30},
        {"goal": "best OEF RMSE <= 5 %-points at SNR 100", "measured": f"{b['RMSE_OEF_pp']:.2f}", "met": b["RMSE_OEF_pp"] <= 5.0},
        {"goal": "every parameter RMSE <= the 3D CNN's", "measured": "all" if not worse else "worse: " + ", ".join(worse), "met": not worse},
        {"goal": "GM / WM mean OEF within 2 %-points of truth", "measured": f"GM {dgm:.2f}, WM {dwm:.2f}", "met": dgm <= 2 and dwm <= 2},
        {"goal": ">= 100x faster than the classical fit", "measured": f"{speed:.0f}x ({b['seconds']:.2f} s vs {c['seconds']:.1f} s)", "met": speed >= 100},
    ]


def _figure(path: Path, truth, results: dict, mask, subject: str = ""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = int(np.argmax(mask.sum((0, 1))))
    panels = [("truth", truth)] + [(TITLES[m], results[m]) for m in METHODS if m in results]
    if "best" in results:
        panels.append(("|best - truth|", np.abs(results["best"] - truth)))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.2))
    for ax, (title, img) in zip(axes, panels):
        err = title.startswith("|")
        im = ax.imshow(np.where(mask, img, np.nan)[:, :, z].T, origin="lower", cmap="magma" if err else "viridis", vmin=0, vmax=30 if err else 70)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046, label="%-points" if err else "OEF %")
    fig.suptitle(f"OEF at echo-1 SNR {MAIN_SNR:g}, held-out phantom {subject}, axial slice {z}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
