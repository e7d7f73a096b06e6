"""Co-registered head CT (HU) and T2w MR of one phantom subject (studies for sCT and sMR)."""

from __future__ import annotations

import numpy as np

from ..anatomy.phantom import Subject
from ..physics.ct_mr import CT_NOISE_SD_HU, TE_MS, TR_MS, ct_hu, t2w_mr
from . import SimStudy

T2W_SNR = 30.0  # mean WM signal / noise sigma
#: T2w bias field: amplitude (the field lies in [1/(1+a), 1+a]) and polynomial order (spatial scale).
T2W_BIAS_AMPLITUDE = 0.15
T2W_BIAS_ORDER = 2


def simulate_synthesis(
    subject: Subject,
    rng: np.random.Generator,
    snr: float = T2W_SNR,
    *,
    ct_noise_sd_hu: float = CT_NOISE_SD_HU,
    bias_amplitude: float = T2W_BIAS_AMPLITUDE,
    bias_order: int = T2W_BIAS_ORDER,
) -> list[SimStudy]:
    """``<sub>_t2w`` (T2w MR, target CT in HU) and ``<sub>_ct`` (CT in HU, target T2w MR).

    MR and CT are of the same subject on the same grid, so each is the other's paired ground truth.
    ``snr`` (mean WM signal / noise sigma), ``ct_noise_sd_hu``, ``bias_amplitude`` and ``bias_order``
    (of :func:`qmri.physics.ct_mr.polynomial_bias_field`) default to the values every training and
    benchmark phantom uses; other values are for out-of-distribution tests (``qmri.bench.synth_ood``).
    """
    vs = subject.voxel_size_mm
    ct = ct_hu(subject.labels, subject.probseg, subject.lesions, rng, vs, noise_sd_hu=ct_noise_sd_hu)
    mr = t2w_mr(subject.labels, subject.probseg, subject.lesions, rng, vs, snr=snr, bias_amplitude=bias_amplitude, bias_order=bias_order)
    common = {"subject": subject.subject_id, "seed": subject.seed}
    mr_meta = {"modality": "T2w", "units": "a.u.", "TR_ms": TR_MS, "TE_ms": TE_MS, "snr": snr}
    if (bias_amplitude, bias_order) != (T2W_BIAS_AMPLITUDE, T2W_BIAS_ORDER):  # default sidecars stay as they were
        mr_meta.update(bias_amplitude=bias_amplitude, bias_order=bias_order)
    ct_meta = {"modality": "CT", "units": "HU", "noise_sd_hu": ct_noise_sd_hu}
    return [
        SimStudy(f"{subject.subject_id}_t2w", mr, {"task": "synthetic_ct", **common, **mr_meta, "target": {"description": "co-registered CT", **ct_meta}}, ct),
        SimStudy(f"{subject.subject_id}_ct", ct, {"task": "synthetic_mr", **common, **ct_meta, "target": {"description": "co-registered T2w MR", **mr_meta}}, mr),
    ]
