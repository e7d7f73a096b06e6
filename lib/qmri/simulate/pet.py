"""Amyloid PET of one phantom subject: true activity, scanner PSF, noise, tissue probabilities."""

from __future__ import annotations

import numpy as np

from ..anatomy.phantom import Subject
from ..physics.pet import PVC_REGIONS, amyloid_activity, segmentation_probabilities, simulate_pet
from . import SimStudy

FWHM_RANGE_MM = (5.0, 8.0)  # scanner resolution drawn per study (mm)
NOISE_LEVEL = 0.05  # relative noise sd at SUV 1


def simulate_pvc(subject: Subject, rng: np.random.Generator, fwhm_mm: float | None = None, noise_level: float = NOISE_LEVEL) -> list[SimStudy]:
    """``<sub>_pet``: 4D (PET, GM, WM, CSF, other), target the true activity (SUV, cerebellar GM = 1).

    The PSF is isotropic with FWHM drawn from 5-8 mm unless ``fwhm_mm`` is given.
    """
    act = amyloid_activity(subject.labels, subject.probseg, subject.lesions, subject.amyloid_positive, rng, subject.voxel_size_mm)
    fwhm = float(fwhm_mm) if fwhm_mm is not None else float(np.round(rng.uniform(*FWHM_RANGE_MM), 2))
    pet = simulate_pet(act, subject.voxel_size_mm, fwhm, rng, noise_level=noise_level)
    seg = segmentation_probabilities(subject.probseg)
    sidecar = {
        "task": "pvc",
        "subject": subject.subject_id,
        "seed": subject.seed,
        "modality": "PET",
        "tracer": "amyloid (simulated)",
        "channels": ["pet", *PVC_REGIONS],
        "units": ["SUV"] + ["probability"] * len(PVC_REGIONS),
        "psf_fwhm_mm": [fwhm, fwhm, fwhm],
        "noise_level": noise_level,
        "amyloid_positive": subject.amyloid_positive,
        "target": {"description": "true activity", "units": "SUV"},
    }
    return [SimStudy(f"{subject.subject_id}_pet", np.concatenate([pet[..., None], seg], axis=-1).astype(np.float32), sidecar, act.astype(np.float32))]
