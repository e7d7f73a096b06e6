"""Phantom susceptibility maps and raw multi-echo GRE (magnitude + wrapped phase) simulation.

Susceptibility values (ppm, 3 T; shared/REFERENCE.md section 2, Marques et al. 2021 head phantom)
are relative to water, i.e. brain tissue ~ 0, so that the *local* field is the dipole convolution
of the brain-masked map (the QSM challenge 2.0 convention). CSF keeps its table value 0.019 ppm
(it is *not* forced to zero: a QSM reconstruction is defined up to a constant, compare maps after
referencing, e.g. :func:`reference_to` with the CSF mask or the brain-mask mean).

Non-brain values:

* air outside the head and sinus air: +9.2 ppm relative to water/tissue (REFERENCE);
* bone (skull): -2.1 ppm (REFERENCE, "about");
* soft tissue (scalp: skin, muscle, subcutaneous fat): -0.05 ppm. This is a water-like value for
  skin and muscle (slightly diamagnetic relative to water); fat (about +0.6 ppm relative to water,
  plus its 3.4 ppm chemical shift) is not modelled separately. Choice of this module.
* venous blood (dural sinuses): drawn per subject, uniform in [0.19, 0.35] ppm (REFERENCE).

Per-subject variation: each tissue value gets an additive Gaussian perturbation of
``sd = 10 % of |value| + 0.002 ppm`` (brain tissues), 0.1 ppm for bone, none for air.

Lesions (``qmri.anatomy.labels.LESIONS`` codes): haemorrhage (2) uniform +0.6..+1.4 ppm,
calcification (3) uniform -0.6..-1.4 ppm, one value per connected lesion; infarct (1) the
underlying tissue value moved 30 % of the way towards CSF (oedema / loss of myelin and iron:
"about tissue value"); amyloid-positive cortex (4) leaves chi unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from scipy import ndimage

from qmri.anatomy.labels import BRAIN_LABELS, LABEL, LESION_CODE, N_CLASSES
from qmri.physics.dipole import GAMMA_BAR_MHZ_PER_T, forward_field

__all__ = [
    "CHI_PPM",
    "R2STAR_PER_S",
    "PROTON_DENSITY",
    "CHI_AIR_PPM",
    "subject_chi_table",
    "susceptibility_map",
    "reference_to",
    "brain_mask",
    "smooth_phase_offset",
    "GRESimulation",
    "simulate_gre",
]

#: Susceptibility relative to water, ppm, 3 T (REFERENCE section 2 / Marques 2021; soft tissue: see module doc).
CHI_PPM: dict[str, float] = {
    "air": 9.2,
    "csf": 0.019,
    "cortical_gm": 0.020,
    "wm": -0.030,
    "caudate": 0.044,
    "putamen": 0.038,
    "globus_pallidus": 0.1305,
    "thalamus": 0.020,
    "red_nucleus": 0.100,
    "substantia_nigra": 0.111,
    "dentate": 0.152,
    "venous_blood": 0.27,  # mean of the per-subject draw U(0.19, 0.35)
    "bone": -2.1,
    "soft_tissue": -0.05,
    "sinus_air": 9.2,
}
CHI_AIR_PPM = CHI_PPM["air"]
VENOUS_BLOOD_RANGE_PPM = (0.19, 0.35)
HAEMORRHAGE_RANGE_PPM = (0.6, 1.4)
CALCIFICATION_RANGE_PPM = (-1.4, -0.6)

#: Effective transverse relaxation rate R2* at 3 T, 1/s (typical literature values, choice of this
#: module: GM ~20, WM ~25, CSF ~4, deep GM rising with iron, venous blood ~40; air/bone carry no signal).
R2STAR_PER_S: dict[str, float] = {
    "air": 0.0,
    "csf": 4.0,
    "cortical_gm": 20.0,
    "wm": 25.0,
    "caudate": 28.0,
    "putamen": 32.0,
    "globus_pallidus": 50.0,
    "thalamus": 25.0,
    "red_nucleus": 40.0,
    "substantia_nigra": 45.0,
    "dentate": 45.0,
    "venous_blood": 40.0,
    "bone": 500.0,
    "soft_tissue": 30.0,
    "sinus_air": 0.0,
}
LESION_R2STAR_PER_S = {"haemorrhage": 120.0, "calcification": 80.0, "infarct": 15.0}

#: Relative proton density (signal at TE = 0, arbitrary units); 0 = no MR signal.
PROTON_DENSITY: dict[str, float] = {
    "air": 0.0,
    "csf": 1.0,
    "cortical_gm": 0.85,
    "wm": 0.70,
    "caudate": 0.82,
    "putamen": 0.82,
    "globus_pallidus": 0.78,
    "thalamus": 0.80,
    "red_nucleus": 0.78,
    "substantia_nigra": 0.78,
    "dentate": 0.78,
    "venous_blood": 0.85,
    "bone": 0.0,
    "soft_tissue": 0.80,
    "sinus_air": 0.0,
}


def _label_table(values: dict[str, float]) -> np.ndarray:
    t = np.zeros(N_CLASSES, dtype=np.float64)
    for name, v in values.items():
        t[LABEL[name]] = v
    return t


def subject_chi_table(rng: np.random.Generator) -> np.ndarray:
    """Per-class chi (ppm, relative to water) of one subject, indexed by label (length N_CLASSES)."""
    t = _label_table(CHI_PPM)
    brain = np.zeros(N_CLASSES, bool)
    brain[list(BRAIN_LABELS)] = True
    sd = np.where(brain, 0.10 * np.abs(t) + 0.002, 0.0)
    sd[LABEL["bone"]] = 0.1
    sd[LABEL["soft_tissue"]] = 0.01
    t = t + rng.normal(size=N_CLASSES) * sd
    t[LABEL["venous_blood"]] = rng.uniform(*VENOUS_BLOOD_RANGE_PPM)
    return t


def susceptibility_map(
    labels: np.ndarray,
    lesions: np.ndarray | None,
    rng: np.random.Generator,
    probseg: np.ndarray | None = None,
    table: np.ndarray | None = None,
) -> np.ndarray:
    """Susceptibility map (ppm, relative to water) of a labelled phantom.

    Args:
        labels: integer tissue labels (x, y, z), see ``qmri.anatomy.labels``.
        lesions: lesion codes (x, y, z) or None.
        rng: random generator (per-subject tissue variation and lesion values).
        probseg: optional partial volumes (x, y, z, N_CLASSES); then ``chi = sum_c p_c chi_c``.
        table: optional per-class chi (ppm) to use instead of a draw from :func:`subject_chi_table`.

    Returns:
        float32 array (x, y, z), ppm. Air (outside and sinus) is +9.2 ppm.
    """
    labels = np.asarray(labels)
    t = subject_chi_table(rng) if table is None else np.asarray(table, dtype=np.float64)
    if probseg is not None:
        p = np.asarray(probseg, dtype=np.float64)
        if p.shape[-1] != N_CLASSES or p.shape[:-1] != labels.shape:
            raise ValueError(f"probseg must have shape {labels.shape + (N_CLASSES,)}")
        chi = p @ t
    else:
        chi = t[labels.astype(np.int64)]
    if lesions is not None:
        lesions = np.asarray(lesions)
        inf = lesions == LESION_CODE["infarct"]
        chi[inf] = chi[inf] + 0.3 * (t[LABEL["csf"]] - chi[inf])
        for code, range_ppm in (
            (LESION_CODE["haemorrhage"], HAEMORRHAGE_RANGE_PPM),
            (LESION_CODE["calcification"], CALCIFICATION_RANGE_PPM),
        ):
            comp, n = ndimage.label(lesions == code)
            for i in range(1, n + 1):
                chi[comp == i] = rng.uniform(*range_ppm)
    return chi.astype(np.float32)


def reference_to(chi: np.ndarray, ref_mask: np.ndarray) -> np.ndarray:
    """Subtract the mean of ``chi`` over ``ref_mask`` (e.g. CSF or the whole brain mask)."""
    return chi - chi[np.asarray(ref_mask, bool)].mean()


def brain_mask(labels: np.ndarray) -> np.ndarray:
    """Boolean brain mask: labels flagged ``brain`` in the label table (CSF, GM, WM, deep GM)."""
    return np.isin(np.asarray(labels), BRAIN_LABELS)


def smooth_phase_offset(shape: Sequence[int], rng: np.random.Generator, amplitude_rad: float = 1.0) -> np.ndarray:
    """Smooth receiver phase offset phi0 (rad): a random 2nd-order polynomial over the FOV plus a constant."""
    g = np.meshgrid(*[np.linspace(-1, 1, int(n)) for n in shape], indexing="ij")
    terms = [g[0], g[1], g[2], g[0] * g[1], g[0] * g[2], g[1] * g[2], g[0] ** 2, g[1] ** 2, g[2] ** 2]
    c = rng.normal(size=len(terms)) * amplitude_rad / 3.0
    phi = rng.uniform(-np.pi, np.pi) + sum(ci * ti for ci, ti in zip(c, terms))
    return phi.astype(np.float64)


class GRESimulation(NamedTuple):
    """Result of :func:`simulate_gre`. Fields in ppm, phase in rad, echoes along the last axis."""

    magnitude: np.ndarray  # (x, y, z, echo), a.u.
    phase: np.ndarray  # (x, y, z, echo), rad, wrapped to (-pi, pi]
    local_field: np.ndarray  # (x, y, z) ppm, field of the brain-masked chi, zero outside the mask
    total_field: np.ndarray  # (x, y, z) ppm, local + background everywhere
    mask: np.ndarray  # (x, y, z) bool brain mask
    background_field: np.ndarray  # (x, y, z) ppm, field of all sources outside the brain
    phase_offset: np.ndarray  # (x, y, z) rad, receiver phase phi0 (echo independent)
    noise_sd: float  # standard deviation of the complex noise per channel (a.u.)


def _wrap(p: np.ndarray) -> np.ndarray:
    """Wrap to (-pi, pi]."""
    w = np.angle(np.exp(1j * p))
    return np.where(w <= -np.pi, w + 2 * np.pi, w)


def simulate_gre(
    chi_ppm: np.ndarray,
    labels: np.ndarray,
    voxel_size_mm: float | Sequence[float],
    te_ms: Sequence[float],
    b0_dir: Sequence[float] = (0.0, 0.0, 1.0),
    B0_T: float = 3.0,
    snr: float | None = 100.0,
    rng: np.random.Generator | None = None,
    magnitude: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    lesions: np.ndarray | None = None,
    probseg: np.ndarray | None = None,
    phase_offset_rad: float = 1.0,
    pad: bool | int = True,
    device: torch.device | str | None = None,
) -> GRESimulation:
    """Raw multi-echo GRE magnitude and wrapped phase from a full-head susceptibility map.

    Field model: chi is taken relative to the surrounding air (``chi - 9.2``, zero outside the head
    so that zero padding is exact), total field = dipole convolution of it (ppm). The local field is
    the convolution of the brain-masked, water-referenced chi (``chi * mask``); the background field
    is the rest (skull, scalp, sinus air, venous sinuses, the air-tissue boundary of the head and
    the uniform part of the brain itself), harmonic inside the brain.

    Signal per echo: ``S_n = |M|(TE_n) * exp(i (phi0 + 2 pi * field * 1e-6 * 42.58e6 * B0 * TE_n))``
    plus complex Gaussian noise of standard deviation ``mean(|S_1| in mask) / snr`` per channel.
    Without ``magnitude`` the magnitude is ``PD * exp(-R2* TE)`` per tissue (tables
    :data:`PROTON_DENSITY`, :data:`R2STAR_PER_S`, mixed by ``probseg`` when given; haemorrhage
    R2* 120/s, calcification 80/s with PD x0.5, infarct 15/s). Intra-voxel dephasing by field
    gradients is not modelled.

    Args:
        chi_ppm: (x, y, z) chi in ppm relative to water (air +9.2), e.g. from :func:`susceptibility_map`.
        labels: (x, y, z) tissue labels (brain mask, magnitude).
        voxel_size_mm: voxel size per axis, mm.
        te_ms: echo times in ms.
        b0_dir: B0 direction in array axes.
        B0_T: field strength, T.
        snr: mean first-echo brain magnitude over noise sd; None = noiseless.
        rng: random generator (phase offset, noise).
        magnitude: optional given magnitude, (x, y, z) at TE = 0 (decayed with R2* of the labels)
            or (x, y, z, echo) used as is.
        mask: optional brain mask overriding the label-derived one.
        lesions, probseg: optional lesion codes / partial volumes for the magnitude model.
        phase_offset_rad: amplitude scale of the smooth receiver phase phi0 (rad); 0 disables.
        pad: zero padding of the dipole convolution (see ``qmri.physics.dipole.padded_shape``).
        device: torch device for the convolutions.
    """
    rng = np.random.default_rng() if rng is None else rng
    chi = np.asarray(chi_ppm, dtype=np.float64)
    labels = np.asarray(labels)
    te = np.asarray(te_ms, dtype=np.float64).reshape(-1)
    m = brain_mask(labels) if mask is None else np.asarray(mask, bool)

    chi_air_ref = chi - CHI_AIR_PPM  # relative to the air around the head: 0 outside
    both = torch.as_tensor(np.stack([chi_air_ref, chi * m]))
    fields = forward_field(both.to(device) if device is not None else both, voxel_size_mm, b0_dir, pad=pad)
    fields = fields.cpu().numpy()
    total, local = fields[0], fields[1] * m
    background = total - fields[1]

    # magnitude
    if magnitude is None:
        r2s = _label_table(R2STAR_PER_S)
        pd = _label_table(PROTON_DENSITY)
        if probseg is not None:
            p = np.asarray(probseg, dtype=np.float64)
            pd_map = p @ pd
            mag = np.einsum("...c,c,ce->...e", p, pd, np.exp(-np.outer(r2s, te * 1e-3)))
        else:
            lab = labels.astype(np.int64)
            pd_map = pd[lab]
            mag = pd_map[..., None] * np.exp(-r2s[lab][..., None] * te * 1e-3)
        if lesions is not None:
            les = np.asarray(lesions)
            for name, pd_scale in (("haemorrhage", 1.0), ("calcification", 0.5), ("infarct", 1.0)):
                sel = les == LESION_CODE[name]
                if sel.any():
                    decay = np.exp(-LESION_R2STAR_PER_S[name] * te * 1e-3)
                    mag[sel] = pd_scale * pd_map[sel][:, None] * decay[None, :]
    else:
        mg = np.asarray(magnitude, dtype=np.float64)
        if mg.ndim == 3:
            r2s = _label_table(R2STAR_PER_S)[labels.astype(np.int64)]
            mag = mg[..., None] * np.exp(-r2s[..., None] * te * 1e-3)
        elif mg.shape == labels.shape + (te.size,):
            mag = mg
        else:
            raise ValueError("magnitude must be (x,y,z) or (x,y,z,n_echo)")

    phi0 = smooth_phase_offset(labels.shape, rng, phase_offset_rad) if phase_offset_rad else np.zeros(labels.shape)
    omega = 2.0 * np.pi * total * 1e-6 * GAMMA_BAR_MHZ_PER_T * 1e6 * B0_T  # rad/s
    sig = mag * np.exp(1j * (phi0[..., None] + omega[..., None] * te * 1e-3))
    sd = 0.0
    if snr is not None and snr > 0:
        ref = mag[..., 0][m].mean() if m.any() else mag[..., 0].mean()
        sd = float(ref / snr)
        sig = sig + sd * (rng.normal(size=sig.shape) + 1j * rng.normal(size=sig.shape))
    return GRESimulation(
        magnitude=np.abs(sig).astype(np.float32),
        phase=_wrap(np.angle(sig)).astype(np.float32),
        local_field=local.astype(np.float32),
        total_field=total.astype(np.float32),
        mask=m,
        background_field=background.astype(np.float32),
        phase_offset=phi0.astype(np.float32),
        noise_sd=sd,
    )
