"""8-echo GRE magnitude + QSM of one phantom subject under the QQ model (studies for OEF)."""

from __future__ import annotations

import numpy as np

from ..anatomy.phantom import Subject
from ..physics.qq import PARAM_NAMES, PARAM_UNITS, QQNET_TE_S, add_noise, qbold_magnitude, qq_susceptibility
from ..physics.qq_phantom import draw_qq_parameters
from . import SimStudy

SNR_RANGE = (50.0, 200.0)  # echo-1 SNR drawn per study unless given
QSM_NOISE_PPM = 0.005  # sd of the Gaussian noise added to the QSM channel (ppm)


def simulate_oef(subject: Subject, rng: np.random.Generator, snr: float | None = None, te_ms=None, B0_T: float = 3.0) -> list[SimStudy]:
    """``<sub>_oef`` (see :func:`simulate_oef_with_regions`)."""
    return [simulate_oef_with_regions(subject, rng, snr, te_ms, B0_T)[0]]


def simulate_oef_with_regions(subject: Subject, rng: np.random.Generator, snr: float | None = None, te_ms=None, B0_T: float = 3.0) -> tuple[SimStudy, dict]:
    """``<sub>_oef`` and the phantom's ``regions`` (lesions, infarct core, penumbra, territory with
    their contralateral references; :func:`qmri.physics.qq_phantom.draw_qq_parameters`).

    The study: 4D (x, y, z, E+1) = E echo magnitudes (a.u., Rician noise) + QSM (ppm).

    Magnitudes are skull-stripped (0 outside the brain). The QSM channel is the QQ susceptibility
    plus Gaussian noise inside the brain and exactly 0 outside, as QSM pipelines write it; the OEF
    task takes its brain mask from it. Target: the five
    QQ parameters (S0 a.u., R2 1/s, Y, v, chi_nb ppm) stacked last in that order.
    """
    te_ms = [round(1000 * t, 3) for t in QQNET_TE_S] if te_ms is None else [float(t) for t in te_ms]
    snr = float(snr) if snr is not None else float(np.round(rng.uniform(*SNR_RANGE), 1))
    p = draw_qq_parameters(subject.labels, subject.lesions, subject.voxel_size_mm, rng, probseg=subject.probseg)
    mask = p["mask"]
    mag = qbold_magnitude(p["S0"], p["R2"], p["Y"], p["v"], p["chi_nb"], np.asarray(te_ms) / 1000.0, B0_T)
    mag = add_noise(np.asarray(mag, dtype=np.float64), snr, rng, kind="rician", mask=mask)
    mag[~mask] = 0.0  # skull-stripped, as QQ pipelines feed the fit/network
    chi = np.where(mask, np.asarray(qq_susceptibility(p["Y"], p["v"], p["chi_nb"])) + rng.normal(0, QSM_NOISE_PPM, mask.shape), 0.0)
    image = np.concatenate([mag, chi[..., None]], axis=-1).astype(np.float32)
    target = np.stack([p[n] for n in PARAM_NAMES], axis=-1).astype(np.float32)
    sidecar = {
        "task": "oef",
        "subject": subject.subject_id,
        "seed": subject.seed,
        "modality": "mGRE+QSM",
        "channels": [f"mag_e{i + 1}" for i in range(len(te_ms))] + ["qsm"],
        "units": ["a.u."] * len(te_ms) + ["ppm"],
        "echo_times_ms": te_ms,
        "B0_T": B0_T,
        "snr": snr,
        "qsm_noise_ppm": QSM_NOISE_PPM,
        "target": {"channels": list(PARAM_NAMES), "units": [PARAM_UNITS[n] for n in PARAM_NAMES], "description": "true QQ parameters"},
    }
    return SimStudy(f"{subject.subject_id}_oef", image, sidecar, target), p["regions"]
