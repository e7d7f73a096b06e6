"""Co-registered head CT (HU) and T2w MR of one phantom subject (studies for sCT and sMR)."""

from __future__ import annotations

import numpy as np

from ..anatomy.phantom import Subject
from ..physics.ct_mr import CT_NOISE_SD_HU, TE_MS, TR_MS, ct_hu, t2w_mr
from . import SimStudy

T2W_SNR = 30.0  # mean WM signal / noise sigma


def simulate_synthesis(subject: Subject, rng: np.random.Generator, snr: float = T2W_SNR) -> list[SimStudy]:
    """``<sub>_t2w`` (T2w MR, target CT in HU) and ``<sub>_ct`` (CT in HU, target T2w MR).

    MR and CT are of the same subject on the same grid, so each is the other's paired ground truth.
    """
    vs = subject.voxel_size_mm
    ct = ct_hu(subject.labels, subject.probseg, subject.lesions, rng, vs)
    mr = t2w_mr(subject.labels, subject.probseg, subject.lesions, rng, vs, snr=snr)
    common = {"subject": subject.subject_id, "seed": subject.seed}
    mr_meta = {"modality": "T2w", "units": "a.u.", "TR_ms": TR_MS, "TE_ms": TE_MS, "snr": snr}
    ct_meta = {"modality": "CT", "units": "HU", "noise_sd_hu": CT_NOISE_SD_HU}
    return [
        SimStudy(f"{subject.subject_id}_t2w", mr, {"task": "synthetic_ct", **common, **mr_meta, "target": {"description": "co-registered CT", **ct_meta}}, ct),
        SimStudy(f"{subject.subject_id}_ct", ct, {"task": "synthetic_mr", **common, **ct_meta, "target": {"description": "co-registered T2w MR", **mr_meta}}, mr),
    ]
