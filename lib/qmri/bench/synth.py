"""``qmri bench synth``: scCycleGAN against the classical methods on held-out phantoms.

Classical sCT: the bulk-density baseline (:mod:`qmri.classical.bulk_density`) and the
two-compartment tissue mixtures (:mod:`qmri.classical.tissue_mixture_ct`); classical sMR: bulk.

Held-out subjects use seeds from :data:`BENCH_SEED` (5600..), disjoint from training (MR 50000..,
CT 50500..) and validation (51000..). Each subject gives a co-registered T2w MR (a.u.) and CT (HU)
(:func:`qmri.simulate.synthesis.simulate_synthesis`); the network and the classical method
(:mod:`qmri.classical.bulk_density`) translate whole volumes the way the server does; the network
also without its test-time offset averaging (:data:`NETWORK_SETTINGS`).

Metrics (SynthRAD2023 convention, :mod:`qmri.metrics.synthrad`, inside the phantom's head
mask): sCT MAE (HU), PSNR (dB) and SSIM on [-1024, 3000] HU (data range 4024 HU), bone Dice/IoU at
>= 300 HU; sMR PSNR and SSIM after normalising by the reference's 99.5th percentile; wall seconds
per volume on this machine. Writes ``bench_synth.md``, ``.json`` and ``.png`` (MR, CT truth, sCT,
|sCT - CT|; CT, MR truth, sMR, |sMR - MR| on the middle axial slice of the first subject).
``qmri bench synth`` then runs the out-of-distribution cases (1 mm, another bias field, another
noise level) through the served tasks: :mod:`qmri.bench.synth_ood`, ``bench_synth_ood.md``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..classical.bulk_density import synthetic_ct_bulk_density, synthetic_mr_bulk
from ..classical.tissue_mixture_ct import synthetic_ct_tissue_mixture
from ..models.synthnet.predict import SHIFT_AVERAGE, load_synthnet, synthetic_ct, synthetic_mr
from ..models import shipped
from ..metrics import synthrad as sm
from ..models.synthnet.data import make_volume
from .figures import Panel, axial, map_grid
from .report import Timer, device_label, save_report

log = logging.getLogger(__name__)
BENCH_SEED = 5600
#: Network rows: (method name, test-time shift averaging); the first is what the server runs
#: (flip + 2 x 2 in-plane offsets, :func:`qmri.models.synthnet.predict.translate_slices`), the second
#: flip averaging alone, 4x faster.
NETWORK_SETTINGS = (("scCycleGAN", SHIFT_AVERAGE), ("scCycleGAN, flip only", 1))


def _picture(path: Path, mr, ct, sct, smr, sct_bulk, sct_mix, head) -> None:
    k = int(np.argmax(head.reshape(-1, head.shape[-1]).sum(0) * (np.arange(head.shape[-1]) < 0.6 * head.shape[-1])))
    vmax = float(np.percentile(mr[head], 99.5))
    top = [
        Panel("T2w MR (input)", axial(mr, k), "a.u.", 0.0, float(np.percentile(mr, 99.5))),
        Panel("CT truth", axial(ct, k), "HU", -160.0, 240.0),
        Panel("sCT scCycleGAN", axial(sct, k), "HU", -160.0, 240.0),
        Panel("|sCT - CT|", axial(np.abs(sct - ct), k), "HU", 0.0, 300.0, "magma"),
        Panel("|bulk-density sCT - CT|", axial(np.abs(sct_bulk - ct), k), "HU", 0.0, 300.0, "magma"),
    ]
    bottom = [
        Panel("CT (input, bone window)", axial(ct, k), "HU", 300.0, 1800.0),
        Panel("T2w MR truth", axial(mr, k), "a.u.", 0.0, vmax),
        Panel("sMR scCycleGAN", axial(smr, k), "a.u.", 0.0, vmax),
        Panel("|sMR - MR|", axial(np.abs(smr - mr), k), "a.u.", 0.0, 0.3 * vmax, "magma"),
        Panel("|tissue-mixture sCT - CT|", axial(np.abs(sct_mix - ct), k), "HU", 0.0, 300.0, "magma"),
    ]
    map_grid(path, [top, bottom], f"held-out phantom, axial slice {k}", panel_inches=3.0)


def run(out_dir: str, weights: str | Path | None = None, subjects: int = 2, resolution_mm: float = 2.0, cache_dir=None):
    weights = weights if weights is not None else shipped("synthnet")  # the app's model folder (qmri.paths)
    net, cfg = load_synthnet(weights)
    torch.set_grad_enabled(False)
    sct_rows, smr_rows = [], []
    for i in range(subjects):
        v = make_volume(BENCH_SEED + i, resolution_mm, cache_dir)
        name = f"bench-synth-{i} (seed {BENCH_SEED + i})"
        for method, k in NETWORK_SETTINGS:
            with Timer() as t:
                out_ct = synthetic_ct(net, v.mr, shift_average=k)
            r = sm.evaluate_sct(out_ct, v.ct, v.head)
            sct_rows.append({"subject": name, "method": method, "MAE_HU": r["mae"], "PSNR_dB": r["psnr"], "SSIM": r["ssim"], "bone_Dice": r["bone_dice"], "bone_IoU": r["bone_iou"], "seconds": t.seconds})
            if k == SHIFT_AVERAGE:
                sct = out_ct
        with Timer() as t:
            sct_b = synthetic_ct_bulk_density(v.mr, voxel_size_mm=resolution_mm)
        r = sm.evaluate_sct(sct_b, v.ct, v.head)
        sct_rows.append({"subject": name, "method": "bulk_density", "MAE_HU": r["mae"], "PSNR_dB": r["psnr"], "SSIM": r["ssim"], "bone_Dice": r["bone_dice"], "bone_IoU": r["bone_iou"], "seconds": t.seconds})
        with Timer() as t:
            sct_m = synthetic_ct_tissue_mixture(v.mr, voxel_size_mm=resolution_mm)
        r = sm.evaluate_sct(sct_m, v.ct, v.head)
        sct_rows.append({"subject": name, "method": "tissue_mixture", "MAE_HU": r["mae"], "PSNR_dB": r["psnr"], "SSIM": r["ssim"], "bone_Dice": r["bone_dice"], "bone_IoU": r["bone_iou"], "seconds": t.seconds})
        for method, k in NETWORK_SETTINGS:
            with Timer() as t:
                out_mr = synthetic_mr(net, v.ct, shift_average=k)
            r = sm.evaluate_smr(out_mr, v.mr, v.head)
            smr_rows.append({"subject": name, "method": method, "PSNR_dB": r["psnr"], "SSIM": r["ssim"], "seconds": t.seconds})
            if k == SHIFT_AVERAGE:
                smr = out_mr
        with Timer() as t:
            smr_b = synthetic_mr_bulk(v.ct)
        r = sm.evaluate_smr(smr_b, v.mr, v.head)
        smr_rows.append({"subject": name, "method": "bulk_density", "PSNR_dB": r["psnr"], "SSIM": r["ssim"], "seconds": t.seconds})
        if i == 0:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            _picture(out / "bench_synth.png", v.mr, v.ct, sct, smr, sct_b, sct_m, v.head)

    def means(rows, keys):
        out = []
        for m in dict.fromkeys(r["method"] for r in rows):
            rs = [r for r in rows if r["method"] == m]
            out.append({"subject": "mean", "method": m, **{k: float(np.mean([r[k] for r in rs])) for k in keys}})
        return out

    sct_cols = ["subject", "method", "MAE_HU", "PSNR_dB", "SSIM", "bone_Dice", "bone_IoU", "seconds"]
    smr_cols = ["subject", "method", "PSNR_dB", "SSIM", "seconds"]
    sct_rows += means(sct_rows, sct_cols[2:])
    smr_rows += means(smr_rows, smr_cols[2:])
    meta = {
        "device": device_label(),
        "weights": str(weights),
        "epoch": cfg.get("epoch"),
        "subjects": subjects,
        "resolution_mm": resolution_mm,
        "seeds": [BENCH_SEED + i for i in range(subjects)],
        "note": f"{subjects} held-out phantoms (seeds {BENCH_SEED}..) at {resolution_mm:g} mm; SynthRAD2023 metrics inside the head mask "
        f"(sCT clipped to [-1024, 3000] HU, range 4024; bone = voxels >= {sm.BONE_THRESHOLD_HU:g} HU); sMR normalised by the truth's 99.5th percentile; "
        "seconds = wall time per whole volume, network slice by slice. Goals: sCT MAE <= 60 HU, bone Dice >= 0.80, sMR SSIM >= 0.90, each better than bulk density. "
        "tissue_mixture: the classical two-compartment-mixture sCT (qmri.classical.tissue_mixture_ct).",
    }
    return save_report(out_dir, "bench_synth", {"Synthetic CT (T2w MR -> CT)": (sct_rows, sct_cols), "Synthetic MR (CT -> T2w MR)": (smr_rows, smr_cols)}, meta)
