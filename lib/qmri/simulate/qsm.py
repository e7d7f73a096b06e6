"""QSM studies of one phantom subject: a local field map, and raw multi-echo magnitude + phase."""

from __future__ import annotations

import numpy as np

from ..anatomy.phantom import Subject
from ..physics.qsm_phantom import simulate_gre, susceptibility_map
from . import SimStudy

RAW_TE_MS = (4.5, 9.5, 14.5, 19.5)  # 4-echo GRE (ms) for the raw-data studies
LOCAL_FIELD_NOISE_PPM = 0.001  # sd of the Gaussian noise of the local-field studies (ppm)
GRE_SNR = 100.0  # echo-1 magnitude in the brain / noise sd


def tilted_b0(deg: float, axis: int = 0) -> list[float]:
    """Unit B0 direction tilted by ``deg`` degrees from the array's z axis about array ``axis`` (0: x)."""
    a = np.deg2rad(deg)
    v = [0.0, np.sin(a), np.cos(a)] if axis == 0 else [np.sin(a), 0.0, np.cos(a)]
    return [round(float(x), 6) for x in v]


def simulate_qsm(subject: Subject, rng: np.random.Generator, b0_dir=None, te_ms=RAW_TE_MS, B0_T: float = 3.0, snr: float = GRE_SNR, raw: bool = True) -> list[SimStudy]:
    """``<sub>_qsm`` (local field, ppm, 0 outside the brain) and ``<sub>_qsmraw`` (4D: E magnitudes,
    E wrapped phases in rad, brain mask), both with the brain's susceptibility (ppm, water = 0,
    0 outside the brain) as target.

    The raw phase includes the background field of the skull, scalp, sinuses and air outside the
    brain; magnitudes and phases are masked to the brain (as after skull stripping).
    """
    b0 = [0.0, 0.0, 1.0] if b0_dir is None else [float(v) for v in np.asarray(b0_dir) / np.linalg.norm(b0_dir)]
    chi = susceptibility_map(subject.labels, subject.lesions, rng, probseg=subject.probseg)
    gre = simulate_gre(chi, subject.labels, subject.voxel_size_mm, te_ms, b0, B0_T, snr, rng, lesions=subject.lesions, probseg=subject.probseg)
    mask = gre.mask
    target = np.where(mask, chi, 0.0).astype(np.float32)
    local = np.where(mask, gre.local_field + rng.normal(0, LOCAL_FIELD_NOISE_PPM, mask.shape), 0.0).astype(np.float32)
    common = {"subject": subject.subject_id, "seed": subject.seed, "B0_T": B0_T, "B0_dir": b0, "target": {"description": "true susceptibility (water = 0)", "units": "ppm"}}
    out = [SimStudy(f"{subject.subject_id}_qsm", local, {"task": "qsm", "modality": "local_field", "units": "ppm", "noise_ppm": LOCAL_FIELD_NOISE_PPM, **common}, target)]
    if raw:
        n = len(te_ms)
        img = np.concatenate([gre.magnitude, gre.phase, mask[..., None]], axis=-1) * mask[..., None]
        sc = {
            "task": "qsm_raw",
            "modality": "mGRE",
            "channels": [f"mag_e{i + 1}" for i in range(n)] + [f"phase_e{i + 1}" for i in range(n)] + ["brain_mask"],
            "units": ["a.u."] * n + ["rad"] * n + ["1"],
            "echo_times_ms": [float(t) for t in te_ms],
            "snr": snr,
            **common,
        }
        out.append(SimStudy(f"{subject.subject_id}_qsmraw", img.astype(np.float32), sc, target))
    return out
