"""Head CT (HU) and T2-weighted spin-echo MR forward models of the phantom.

Both models read the same tissue-property table, :data:`TISSUE_PROPERTIES`, which is the one place
where CT numbers (HU), proton densities and 3 T relaxation times of every compartment are stated.

Compartments beyond the label table (``qmri.anatomy.labels``):

* ``soft_tissue`` (scalp) is a mixture of ``skin_muscle`` and ``fat``: an outer skin layer
  (``skin_mm`` deep from the head surface) is pure skin/muscle; deeper scalp voxels hold a fat
  volume fraction ``fat_fraction`` (subcutaneous fat mixed with galea and temporalis muscle).
* ``bone`` (skull) is a mixture of ``cortical_bone`` and ``diploe``: the outer and inner tables are
  cortical within ``table_mm`` of the skull surface (depth from
  :func:`scipy.ndimage.distance_transform_edt` in mm), the middle of the shell is diploe
  (cancellous bone with fatty marrow).
* Lesions (``lesions`` map, codes of ``qmri.anatomy.labels.LESIONS``) replace the tissue of the
  whole voxel: 1 infarct, 2 haemorrhage (acute, hyperdense), 3 calcification; code 4 (amyloid) has
  no CT or T2w contrast.

Partial volume: a voxel's CT number is the volume-weighted mean of its compartments,
``HU = sum_c p_c HU_c`` (attenuation is linear in composition); its MR signal is the volume-weighted
sum of the compartment signals, ``S = sum_c p_c S_c`` (magnetisation of separate compartments adds),
with ``p`` from ``probseg`` (channels last, voxel sums 1), or one-hot labels when none is given.

Sources of the numbers (REFERENCE.md section 4 for the HU ranges: air -1000, fat -100..-50,
CSF ~15, WM 20-30, GM 37-45, blood 40-60, bone 700-2000; T2w ordering CSF > GM > WM, fat
moderately bright, bone and air dark):

* T1/T2 of GM, WM, blood, muscle at 3 T: Stanisz et al., MRM 54:507 (2005) (GM 1820/99 ms,
  WM 1084/69 ms, blood T1 1932 ms, skeletal muscle 1412/50 ms); CSF T1 ~4.3 s (Lu et al., MRM 2005),
  CSF T2 ~2 s; deep grey nuclei from Wansapura et al., JMRI 9:531 (1999) and Gelman et al.,
  Radiology 210:759 (1999) (T2 shortened by iron in pallidum, red nucleus, nigra, dentate).
  The deep-grey values are approximate (rounded to 10 ms); they only need the right ordering.
* Venous T2 at 3 T for Y ~ 0.6 is ~40-60 ms (Zhao et al., MRM 58:592, 2007); flow voids are not
  modelled.
* Fat: T1 ~380 ms at 3 T; its apparent T2 in fast spin echo (~130 ms) is longer than the
  spin-echo value because J-coupling is broken up by the echo train, which is why fat is
  moderately bright on clinical T2w FSE.
* Cortical bone: T2 ~0.5 ms (UTE literature, e.g. Du et al., MRM 2010) and low mobile-proton
  density, hence dark; diploe PD/T2 reflect fatty marrow partly dephased by trabeculae.
* Proton densities relative to water/CSF = 1: GM 0.80, WM 0.69 (Tofts, Quantitative MRI of the
  Brain, 2003).
* Lesions: subacute infarct oedema (long T1/T2, 15-20 HU); acute haemorrhage (deoxy-haemoglobin,
  T2-dark, 60-80 HU); calcification (200-600 HU, few mobile protons, T2-dark).

Per-subject variation: each call draws one value per compartment from ``N(mean, sd)`` clipped to
the stated range (HU), or scales PD/T1/T2 by ``exp(N(0, mr_cv))``; the draws come from ``rng``
before any noise, so a seed reproduces a subject exactly.

Heavy array maths (the per-class mixing, bias and Rician noise) runs in torch on ``device``;
distance transforms use scipy. Inputs and outputs are numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage

from qmri.anatomy.labels import LABEL, LESION_CODE, N_CLASSES

# ----------------------------------------------------------------------------------------------
# The shared tissue-property table
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TissueProperties:
    """CT and 3 T MR properties of one compartment.

    hu: mean CT number (HU); hu_sd: between-subject sd (HU); hu_range: (lo, hi) clip of the
    per-subject draw (HU, the published range); pd: proton density relative to water (CSF) = 1;
    t1_ms, t2_ms: relaxation times at 3 T (ms).
    """

    hu: float
    hu_sd: float
    hu_range: tuple[float, float]
    pd: float
    t1_ms: float
    t2_ms: float


TISSUE_PROPERTIES: dict[str, TissueProperties] = {
    # label-table classes (soft_tissue and bone are mixtures, see the compartments below)
    "air": TissueProperties(-1000.0, 0.0, (-1000.0, -1000.0), 0.0, 1.0, 1.0),
    "csf": TissueProperties(15.0, 2.0, (10.0, 20.0), 1.00, 4300.0, 2000.0),
    "cortical_gm": TissueProperties(40.0, 1.5, (37.0, 45.0), 0.80, 1820.0, 99.0),
    "wm": TissueProperties(25.0, 1.5, (20.0, 30.0), 0.69, 1084.0, 69.0),
    "caudate": TissueProperties(40.0, 1.5, (36.0, 45.0), 0.80, 1440.0, 82.0),
    "putamen": TissueProperties(41.0, 1.5, (36.0, 45.0), 0.80, 1330.0, 72.0),
    "globus_pallidus": TissueProperties(42.0, 1.5, (36.0, 46.0), 0.78, 1100.0, 55.0),
    "thalamus": TissueProperties(38.0, 1.5, (34.0, 43.0), 0.76, 1220.0, 72.0),
    "red_nucleus": TissueProperties(40.0, 1.5, (36.0, 45.0), 0.77, 1050.0, 55.0),
    "substantia_nigra": TissueProperties(40.0, 1.5, (36.0, 45.0), 0.77, 1050.0, 52.0),
    "dentate": TissueProperties(40.0, 1.5, (36.0, 45.0), 0.77, 1100.0, 55.0),
    "venous_blood": TissueProperties(50.0, 3.0, (40.0, 60.0), 0.85, 1932.0, 50.0),
    "sinus_air": TissueProperties(-1000.0, 0.0, (-1000.0, -1000.0), 0.0, 1.0, 1.0),
    # scalp compartments
    "skin_muscle": TissueProperties(45.0, 3.0, (35.0, 55.0), 0.75, 1412.0, 50.0),
    "fat": TissueProperties(-90.0, 8.0, (-100.0, -50.0), 0.90, 380.0, 130.0),
    # skull compartments
    "cortical_bone": TissueProperties(1800.0, 100.0, (1500.0, 2000.0), 0.05, 250.0, 0.5),
    "diploe": TissueProperties(800.0, 80.0, (700.0, 1000.0), 0.25, 400.0, 50.0),
    # lesions
    "infarct": TissueProperties(17.0, 1.5, (15.0, 20.0), 0.90, 2000.0, 150.0),
    "haemorrhage": TissueProperties(70.0, 5.0, (60.0, 80.0), 0.85, 1500.0, 40.0),
    "calcification": TissueProperties(400.0, 100.0, (200.0, 600.0), 0.20, 800.0, 15.0),
}

#: Lesion codes with a CT/T2w contrast -> compartment of :data:`TISSUE_PROPERTIES`.
LESION_COMPARTMENT: dict[int, str] = {
    LESION_CODE["infarct"]: "infarct",
    LESION_CODE["haemorrhage"]: "haemorrhage",
    LESION_CODE["calcification"]: "calcification",
}

#: Default T2w turbo-spin-echo timing (ms) and intensity scale (arbitrary units per unit PD).
TR_MS = 4000.0
TE_MS = 90.0
T2W_SCALE = 1000.0
#: CT number range stored by scanners (12-bit, HU).
HU_CLIP = (-1024.0, 3071.0)
#: CT noise sd (HU): typical of a 120 kVp head protocol in brain parenchyma (3-5 HU).
CT_NOISE_SD_HU = 5.0

_MIXED = ("soft_tissue", "bone")  # label classes that are position-dependent mixtures


# ----------------------------------------------------------------------------------------------
# Signal equation and reference intensities
# ----------------------------------------------------------------------------------------------


def t2w_signal(pd, t1_ms, t2_ms, tr_ms: float = TR_MS, te_ms: float = TE_MS, scale: float = 1.0):
    """Spin-echo signal ``scale * PD * (1 - exp(-TR/T1)) * exp(-TE/T2)`` (arbitrary units).

    pd: proton density (water = 1); t1_ms, t2_ms, tr_ms, te_ms in ms. Works on floats, numpy
    arrays and torch tensors (the exponential of the matching library is used).
    """
    if isinstance(pd, torch.Tensor) or isinstance(t1_ms, torch.Tensor):
        exp = torch.exp
    else:
        exp = np.exp
    return scale * pd * (1.0 - exp(-tr_ms / t1_ms)) * exp(-te_ms / t2_ms)


def tissue_t2w_intensity(name: str, tr_ms: float = TR_MS, te_ms: float = TE_MS, scale: float = T2W_SCALE) -> float:
    """Noiseless, bias-free T2w intensity of compartment ``name`` with the table's mean values.

    Same arbitrary units as :func:`t2w_mr` (``scale`` per unit PD).
    """
    p = TISSUE_PROPERTIES[name]
    return float(t2w_signal(p.pd, p.t1_ms, p.t2_ms, tr_ms, te_ms, scale))


# ----------------------------------------------------------------------------------------------
# Shared geometry: partial volumes and the scalp / skull compartment fractions
# ----------------------------------------------------------------------------------------------


def _as_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _voxel_sizes(voxel_size_mm) -> tuple[float, float, float]:
    v = np.broadcast_to(np.asarray(voxel_size_mm, dtype=float), (3,))
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise ValueError(f"voxel_size_mm must be positive and finite, got {voxel_size_mm!r}")
    return tuple(float(x) for x in v)


def _check_inputs(labels, probseg, lesions) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be a 3D array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError("labels must hold integer tissue labels")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= N_CLASSES:
        raise ValueError(f"labels must lie in 0..{N_CLASSES - 1}")
    if probseg is not None:
        probseg = np.asarray(probseg, dtype=np.float32)
        if probseg.shape != labels.shape + (N_CLASSES,):
            raise ValueError(f"probseg must have shape {labels.shape + (N_CLASSES,)}, got {probseg.shape}")
        if not np.all(np.isfinite(probseg)) or probseg.min() < -1e-6:
            raise ValueError("probseg must be finite and non-negative")
    if lesions is not None:
        lesions = np.asarray(lesions)
        if lesions.shape != labels.shape:
            raise ValueError(f"lesions must have the shape of labels {labels.shape}, got {lesions.shape}")
        lesions = lesions.astype(np.int64)
    return labels, probseg, lesions


def _fractions(labels: np.ndarray, probseg: np.ndarray | None, device) -> torch.Tensor:
    """Per-class volume fractions (x, y, z, C) as a float32 tensor on ``device``, voxel sums 1."""
    if probseg is None:
        lab = torch.as_tensor(labels, device=device)
        return torch.nn.functional.one_hot(lab, N_CLASSES).to(torch.float32)
    p = torch.as_tensor(probseg, dtype=torch.float32, device=device).clamp_min(0.0)
    s = p.sum(-1, keepdim=True)
    return torch.where(s > 0, p / s.clamp_min(1e-12), p)


def compartment_fractions(
    labels: np.ndarray,
    probseg: np.ndarray | None,
    voxel_size_mm,
    *,
    skin_mm: float = 2.0,
    fat_fraction: float = 0.5,
    table_mm: float = 1.8,
) -> tuple[np.ndarray, np.ndarray]:
    """Cortical-bone fraction of the skull and fat fraction of the scalp, per voxel (0..1).

    * Skull: depth of a voxel centre below the skull surface is ``d = edt(bone) - v/2`` (mm, edt
      from :func:`scipy.ndimage.distance_transform_edt` with the voxel spacing); the voxel spans
      depths ``[d - v/2, d + v/2]`` (v: mean voxel size, mm) and its cortical fraction is the part
      of that span shallower than ``table_mm`` (outer and inner table each ~1.5-2 mm thick). The
      distance is to the nearest non-bone voxel, so both tables come out of the same rule and the
      middle of the shell is diploe.
    * Scalp: depth below the skin is ``edt(head) - v/2`` with the head = every non-air label;
      the part of a voxel's span deeper than ``skin_mm`` holds fat at ``fat_fraction``.

    Returns (cortical_fraction, fat_fraction_map), float32 arrays of the labels' shape.
    """
    vs = _voxel_sizes(voxel_size_mm)
    v = float(np.mean(vs))
    if probseg is not None:
        bone = probseg[..., LABEL["bone"]] >= 0.5
        head = probseg[..., LABEL["air"]] < 0.5
    else:
        bone = labels == LABEL["bone"]
        head = labels != LABEL["air"]
    d_bone = ndimage.distance_transform_edt(bone, sampling=vs) - 0.5 * v
    cortical = np.clip((table_mm - (d_bone - 0.5 * v)) / v, 0.0, 1.0)
    cortical[~bone] = 1.0  # partial-volume bone outside the shell core is at the surface
    d_head = ndimage.distance_transform_edt(head, sampling=vs) - 0.5 * v
    fat = fat_fraction * np.clip(((d_head + 0.5 * v) - skin_mm) / v, 0.0, 1.0)
    return cortical.astype(np.float32), fat.astype(np.float32)


def _mix(
    frac: torch.Tensor,
    class_values: Mapping[str, float],
    soft_value: torch.Tensor,
    bone_value: torch.Tensor,
) -> torch.Tensor:
    """``sum_c p_c value_c`` with position-dependent values for the scalp and skull classes."""
    vec = torch.zeros(N_CLASSES, dtype=torch.float32, device=frac.device)
    for name, val in class_values.items():
        vec[LABEL[name]] = float(val)
    out = frac @ vec
    out = out + frac[..., LABEL["soft_tissue"]] * soft_value
    out = out + frac[..., LABEL["bone"]] * bone_value
    return out


def _apply_lesions(img: torch.Tensor, lesions: np.ndarray | None, values: Mapping[str, float]) -> torch.Tensor:
    if lesions is None:
        return img
    les = torch.as_tensor(lesions, device=img.device)
    for code, name in LESION_COMPARTMENT.items():
        img = torch.where(les == code, torch.as_tensor(values[name], dtype=img.dtype, device=img.device), img)
    return img


# ----------------------------------------------------------------------------------------------
# CT
# ----------------------------------------------------------------------------------------------


def _tissue_image(labels, probseg, lesions, values: Mapping[str, float], voxel_size_mm, skin_mm, fat_fraction, table_mm, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Partial-volume mix of per-compartment ``values`` (HU or T2w signal): the scalp split into
    skin/muscle and fat, the skull into cortical tables and diploe, lesions replacing their voxels.
    Returns the image and the per-class fractions (x, y, z, C) it was mixed from."""
    cortical, fat = compartment_fractions(labels, probseg, voxel_size_mm, skin_mm=skin_mm, fat_fraction=fat_fraction, table_mm=table_mm)
    frac = _fractions(labels, probseg, device)
    cort_t = torch.as_tensor(cortical, device=frac.device)
    fat_t = torch.as_tensor(fat, device=frac.device)
    soft = fat_t * values["fat"] + (1.0 - fat_t) * values["skin_muscle"]
    bone = cort_t * values["cortical_bone"] + (1.0 - cort_t) * values["diploe"]
    plain = {k: values[k] for k in TISSUE_PROPERTIES if k in LABEL and k not in _MIXED}
    return _apply_lesions(_mix(frac, plain, soft, bone), lesions, values), frac


def draw_subject_hu(rng) -> dict[str, float]:
    """One subject's CT number (HU) per compartment: ``N(hu, hu_sd)`` clipped to ``hu_range``."""
    rng = _as_rng(rng)
    out = {}
    for name, p in TISSUE_PROPERTIES.items():
        out[name] = float(np.clip(p.hu + p.hu_sd * rng.standard_normal(), *p.hu_range))
    return out


def ct_hu(
    labels: np.ndarray,
    probseg: np.ndarray | None = None,
    lesions: np.ndarray | None = None,
    rng=None,
    voxel_size_mm: float | Sequence[float] = 2.0,
    *,
    noise_sd_hu: float = CT_NOISE_SD_HU,
    skin_mm: float = 2.0,
    fat_fraction: float = 0.5,
    table_mm: float = 1.8,
    hu_values: Mapping[str, float] | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """CT of the whole head in HU (float32, shape of ``labels``).

    labels: 3D integer tissue labels; probseg: optional (x, y, z, 15) partial volumes; lesions:
    optional lesion-code map; rng: numpy Generator or seed; voxel_size_mm: voxel size (mm).
    ``HU = sum_c p_c HU_c`` with the compartment HU of :data:`TISSUE_PROPERTIES` drawn once per
    subject (or given by ``hu_values``), scalp = fat/skin mixture and skull = cortical/diploe by
    depth (:func:`compartment_fractions`), lesion voxels replaced by the lesion HU, plus white
    Gaussian noise of sd ``noise_sd_hu`` (HU; 5 HU by default, typical head-CT noise), clipped to
    [-1024, 3071] HU.
    """
    labels, probseg, lesions = _check_inputs(labels, probseg, lesions)
    rng = _as_rng(rng)
    hu = draw_subject_hu(rng)
    if hu_values is not None:
        hu.update({k: float(v) for k, v in hu_values.items()})
    img, _ = _tissue_image(labels, probseg, lesions, hu, voxel_size_mm, skin_mm, fat_fraction, table_mm, device)
    if noise_sd_hu > 0:
        noise = rng.standard_normal(labels.shape).astype(np.float32)
        img = img + noise_sd_hu * torch.as_tensor(noise, device=img.device)
    img = img.clamp(*HU_CLIP)
    return img.cpu().numpy().astype(np.float32)


# ----------------------------------------------------------------------------------------------
# T2-weighted MR
# ----------------------------------------------------------------------------------------------


@dataclass
class T2wResult:
    """Everything :func:`t2w_mr` computes (arbitrary units unless stated).

    image: bias-modulated magnitude with Rician noise; noiseless: ``tissue * bias``;
    tissue: noiseless, bias-free signal; bias_field: multiplicative field (dimensionless);
    noise_sigma: sd of each Gaussian quadrature channel (a.u.); snr: requested SNR.
    """

    image: np.ndarray
    noiseless: np.ndarray
    tissue: np.ndarray
    bias_field: np.ndarray
    noise_sigma: float
    snr: float | None


def draw_subject_mr(rng, mr_cv: float = 0.03) -> dict[str, tuple[float, float, float]]:
    """One subject's (PD, T1 ms, T2 ms) per compartment, each scaled by ``exp(N(0, mr_cv))``."""
    rng = _as_rng(rng)
    out = {}
    for name, p in TISSUE_PROPERTIES.items():
        f = np.exp(mr_cv * rng.standard_normal(3))
        out[name] = (p.pd * f[0], p.t1_ms * f[1], p.t2_ms * f[2])
    return out


def polynomial_bias_field(shape: Sequence[int], rng, amplitude: float = 0.15, order: int = 2, device="cpu") -> torch.Tensor:
    """Smooth multiplicative bias ``exp(P(x, y, z))`` with P a random polynomial of ``order``.

    Coordinates span [-1, 1] over the array; the coefficients are standard normal and P is scaled
    so that ``max |P| = log(1 + amplitude)`` over the array, hence the field lies in
    ``[1/(1+amplitude), 1+amplitude]`` (+-15 % by default) and reaches one of the bounds.
    """
    rng = _as_rng(rng)
    coef = np.zeros((order + 1,) * 3)
    for i in range(order + 1):
        for j in range(order + 1 - i):
            for k in range(order + 1 - i - j):
                if i + j + k > 0:
                    coef[i, j, k] = rng.standard_normal()
    # Separable evaluation: powers of each 1D coordinate, contracted with the coefficients.
    powers = [torch.linspace(-1.0, 1.0, int(n), device=device)[None, :] ** torch.arange(order + 1, device=device, dtype=torch.float32)[:, None] for n in shape]
    p = torch.einsum("ijk,ia,jb,kc->abc", torch.as_tensor(coef, dtype=torch.float32, device=device), *powers)
    m = p.abs().max()
    if m > 0:
        p = p * (np.log1p(amplitude) / m)
    return torch.exp(p)


def t2w_mr(
    labels: np.ndarray,
    probseg: np.ndarray | None = None,
    lesions: np.ndarray | None = None,
    rng=None,
    voxel_size_mm: float | Sequence[float] = 2.0,
    bias_field: bool = True,
    snr: float | None = 30.0,
    *,
    tr_ms: float = TR_MS,
    te_ms: float = TE_MS,
    scale: float = T2W_SCALE,
    bias_amplitude: float = 0.15,
    bias_order: int = 2,
    mr_cv: float = 0.03,
    skin_mm: float = 2.0,
    fat_fraction: float = 0.5,
    table_mm: float = 1.8,
    return_all: bool = False,
    device: str | torch.device = "cpu",
) -> np.ndarray | T2wResult:
    """T2-weighted spin-echo MR magnitude (arbitrary units, float32, shape of ``labels``).

    Compartment signal ``scale * PD * (1 - exp(-TR/T1)) * exp(-TE/T2)`` (TR/TE in ms, default
    4000/90 ms) with PD/T1/T2 of :data:`TISSUE_PROPERTIES` jittered per subject by ``mr_cv``;
    partial volumes add signals; lesion voxels take the lesion signal. ``bias_field`` multiplies
    by :func:`polynomial_bias_field` (polynomial order ``bias_order``, default 2; +-``bias_amplitude``,
    default 15 %; a higher order varies on a shorter spatial scale and draws more coefficients
    from ``rng``, so it also changes the noise that follows). Rician noise: Gaussian noise
    of sd ``sigma`` on both quadrature channels, magnitude taken, with ``sigma = mean WM signal /
    snr`` (mean over voxels with WM fraction >= 0.5, bias included; mean head signal if the
    phantom has no WM); ``snr=None`` gives a noiseless image. ``return_all=True`` returns a
    :class:`T2wResult` with the noiseless image, the bias field and sigma.
    """
    labels, probseg, lesions = _check_inputs(labels, probseg, lesions)
    rng = _as_rng(rng)
    props = draw_subject_mr(rng, mr_cv)
    sig = {k: float(t2w_signal(*props[k], tr_ms, te_ms, scale)) for k in props}
    tissue, frac = _tissue_image(labels, probseg, lesions, sig, voxel_size_mm, skin_mm, fat_fraction, table_mm, device)

    if bias_field:
        bias = polynomial_bias_field(labels.shape, rng, bias_amplitude, bias_order, device=frac.device)
    else:
        bias = torch.ones_like(tissue)
    noiseless = tissue * bias

    sigma = 0.0
    image = noiseless
    if snr is not None and np.isfinite(snr):
        if snr <= 0:
            raise ValueError(f"snr must be positive, got {snr}")
        wm = frac[..., LABEL["wm"]] >= 0.5
        ref_region = wm if bool(wm.any()) else frac[..., LABEL["air"]] < 0.5
        ref = float(noiseless[ref_region].mean()) if bool(ref_region.any()) else float(noiseless.mean())
        sigma = ref / float(snr)
        n = rng.standard_normal((2,) + labels.shape).astype(np.float32)
        n = torch.as_tensor(n, device=frac.device) * sigma
        image = torch.sqrt((noiseless + n[0]) ** 2 + n[1] ** 2)

    img_np = image.cpu().numpy().astype(np.float32)
    if not return_all:
        return img_np
    return T2wResult(
        image=img_np,
        noiseless=noiseless.cpu().numpy().astype(np.float32),
        tissue=tissue.cpu().numpy().astype(np.float32),
        bias_field=bias.cpu().numpy().astype(np.float32),
        noise_sigma=float(sigma),
        snr=None if snr is None else float(snr),
    )
