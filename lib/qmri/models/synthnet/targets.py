"""Pseudo-targets and back-translation inputs of the scCycleGAN training (no ground truth): the
classical translations of each training image, the hybrid sCT, the drawn brain CT numbers, the
acquisition noise each modality's translation is given, and the validation block. HU for CT, the
T2w units of :func:`qmri.physics.ct_mr.t2w_mr` for MR, network units [-1, 1] where stated.
"""

from __future__ import annotations

import numpy as np
import torch

from .net import hu_window_to_unit
from .predict import HU_RANGE, MR_RANGE, to_unit
from ...physics.ct_mr import TISSUE_PROPERTIES, tissue_t2w_intensity
from .data import SynthVolume, head_slices

#: ``bt_hybrid``: soft tissue (HU) by the tissue-mixture sCT (CSF 15 .. GM 40 .. muscle 45; no fat,
#: bone or air) and, with a margin, by the MR -> CT generator's sCT.
HYBRID_TM_HU = (5.0, 50.0)
HYBRID_G_HU = (-10.0, 70.0)
#: ``hybrid_brain``: where the hybrid's inside-the-skull soft tissue comes from: the tissue-mixture
#: sCT as is, or :func:`drawn_brain_hu`.
HYBRID_BRAIN = ("tissue_mixture", "drawn_mixture")
#: ``drawn_mixture``: highest generator sCT (HU) at which T2w-dark tissue inside the skull still counts
#: as blood rather than bone (see :func:`hybrid_sct`).
HYBRID_DARK_G_MAX_HU = 400.0


def hybrid_sct(tissue_mixture_u: torch.Tensor, generator_u: torch.Tensor, brain: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The ``bt_hybrid`` input (network units): the tissue-mixture sCT where it lies in
    :data:`HYBRID_TM_HU` and the generator's sCT in :data:`HYBRID_G_HU` (both call the voxel brain,
    CSF or muscle), the generator's sCT elsewhere (bone, air, fat and their edges).

    ``brain`` = (inside-the-skull mask, HU map, T2w MR; maps in network units), e.g. ``(mask,``
    :func:`drawn_brain_hu` ``(x), x)`` (``hybrid_brain='drawn_mixture'``): inside the mask, the
    soft-tissue voxels take the map's value instead of the tissue-mixture sCT's, and so do voxels
    darker than WM on T2w that the generator puts between soft tissue and
    :data:`HYBRID_DARK_G_MAX_HU` (dural venous sinuses: T2w-dark blood against the skull, which the
    stage-9 generator gave a median 193 HU instead of the true ~47 HU; with the cap only 8 of 1153
    such voxels of the validation subject were bone)."""
    tlo, thi = hu_window_to_unit(HYBRID_TM_HU)
    glo, ghi = hu_window_to_unit(HYBRID_G_HU)
    tm_soft = (tissue_mixture_u > tlo) & (tissue_mixture_u < thi)
    g_soft = (generator_u > glo) & (generator_u < ghi)
    out = torch.where(tm_soft & g_soft, tissue_mixture_u, generator_u)
    if brain is not None:
        mask, brain_u, mr_u = brain
        dark = mr_u < float(to_unit(tissue_t2w_intensity("wm"), "mr"))
        dark_g = (generator_u > glo) & (generator_u < hu_window_to_unit((HYBRID_G_HU[0], HYBRID_DARK_G_MAX_HU))[1])
        out = torch.where(mask & tm_soft & (g_soft | dark & dark_g), brain_u, out)
    return out


def drawn_brain_hu(mr_u: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """CT (network units) of brain tissue from its T2w signal by three two-compartment mixtures with
    per-image compartment CT numbers (``hybrid_brain='drawn_mixture'``).

    ``mr_u``: T2w MR (network units, (B, 1, H, W)). Along the T2w axis (a.u., table intensities
    of :func:`qmri.physics.ct_mr.tissue_t2w_intensity`): venous blood <-> WM below the WM signal,
    WM <-> GM up to the GM signal, GM <-> CSF above it, ``HU = HU_a + (HU_b - HU_a) f`` with ``f``
    the signal's fraction of the way from ``S_a`` to ``S_b`` clipped to [0, 1].

    Why not the tissue-mixture sCT's brain (WM <-> GM <-> CSF, table HU): the CT -> MR generator
    learns to read the brains it is shown. With stage-9 weights on the validation subject, its
    errors from the real CT sat in tissue whose CT number is not what the tissue-mixture rule
    gives its T2w signal: venous sinuses (50 HU, darker than WM on T2w; the rule clips them to WM's
    25 HU; sMR too bright by 173 a.u.), iron-rich deep grey nuclei (globus pallidus, nigra, red
    nucleus: GM's CT number, signal at or below WM's) and CSF, whose CT number varies between
    subjects (median of pure CSF 13.8-19.7 HU over five phantoms, GM 36-39, WM 24-27). The extra
    segment gives dark brain tissue the CT number of blood-like tissue, and drawing each
    compartment's CT number per image from the forward model's between-subject distribution
    (:data:`qmri.physics.ct_mr.TISSUE_PROPERTIES` ``hu``, ``hu_sd``, clipped to ``hu_range``) shows the
    generator that an image's CSF may sit anywhere in that range.
    """
    lo, hi = MR_RANGE
    s = lo + (mr_u + 1.0) * 0.5 * (hi - lo)
    n = s.shape[0]
    shape = (n,) + (1,) * (s.dim() - 1)
    hu = {}
    for c in ("venous_blood", "wm", "cortical_gm", "csf"):
        p = TISSUE_PROPERTIES[c]
        draw = p.hu + p.hu_sd * torch.randn(shape, generator=generator, device=s.device if generator is None else "cpu", dtype=s.dtype)
        hu[c] = draw.to(s.device).clamp(*p.hu_range)
    sig = {c: tissue_t2w_intensity(c) for c in hu}

    def line(a, b):
        f = ((s - sig[a]) / (sig[b] - sig[a])).clamp(0.0, 1.0)
        return hu[a] + f * (hu[b] - hu[a])

    out = torch.where(s < sig["wm"], line("venous_blood", "wm"), torch.where(s < sig["cortical_gm"], line("wm", "cortical_gm"), line("cortical_gm", "csf")))
    hlo, hhi = HU_RANGE
    return 2.0 * (out - hlo) / (hhi - hlo) - 1.0


def _inside_skull_slices(v: SynthVolume) -> np.ndarray:
    """Head slices of the tissue-mixture method's inside-the-skull mask of a training MR (1/0, float32)."""
    from ...classical.tissue_mixture_ct import inside_skull_mask

    return head_slices(inside_skull_mask(v.mr).astype(np.float32), v.head, "mask")


def _mr_noise_sd(vols: list[SynthVolume]) -> float:
    """Noise sd (a.u.) of the Gaussian quadrature channels of the training MRs, from the mean
    magnitude of their background (Rician at zero signal: mean = sd sqrt(pi/2)); median over
    subjects, 0 when no MR has a background."""
    sds = [float(v.mr[~v.head].mean()) / np.sqrt(np.pi / 2) for v in vols if v.mr is not None and (~v.head).sum() >= 1000]
    return float(np.median(sds)) if sds else 0.0


def _ct_noise_sd_hu(vols: list[SynthVolume]) -> float:
    """Noise sd (HU) of the training CTs: sd of the air outside the head (HU < -900), median over
    subjects, 0 when no CT has enough air."""
    sds = []
    for v in vols:
        if v.ct is None:
            continue
        air = v.ct[~v.head & (v.ct < -900)]
        if air.size >= 1000:
            sds.append(float(air.std()))
    return float(np.median(sds)) if sds else 0.0


def add_mr_noise(u: torch.Tensor, sd: float) -> torch.Tensor:
    """Rician magnitude noise of sd ``sd`` (a.u.) on an MR in network units (result in network units)."""
    if sd <= 0:
        return u
    lo, hi = MR_RANGE
    s = lo + (u + 1.0) * 0.5 * (hi - lo)
    s = torch.sqrt((s + sd * torch.randn_like(s)) ** 2 + (sd * torch.randn_like(s)) ** 2)
    return (2.0 * (s - lo) / (hi - lo) - 1.0).clamp(-1.0, 1.0)


def add_ct_noise(u: torch.Tensor, sd_hu: float) -> torch.Tensor:
    """White Gaussian noise of sd ``sd_hu`` (HU) on a CT in network units (result in network units)."""
    if sd_hu <= 0:
        return u
    lo, hi = HU_RANGE
    return (u + sd_hu * 2.0 / (hi - lo) * torch.randn_like(u)).clamp(-1.0, 1.0)


def _classical_sct(v: SynthVolume, method: str) -> np.ndarray:
    """Classical sCT (HU) of a training MR by ``method`` (:data:`PSEUDO_SCT`): the warm-start
    pseudo-target (no CT involved)."""
    if method == "bulk_density":
        from ...classical.bulk_density import synthetic_ct_bulk_density

        return synthetic_ct_bulk_density(v.mr)
    from ...classical.tissue_mixture_ct import synthetic_ct_tissue_mixture

    return synthetic_ct_tissue_mixture(v.mr)


def _bulk_smr(v: SynthVolume) -> np.ndarray:
    """Bulk sMR (a.u.) of a training CT: the warm-start pseudo-target (no MR involved)."""
    from ...classical.bulk_density import synthetic_mr_bulk

    return synthetic_mr_bulk(v.ct)


def _central_block(v: SynthVolume, n: int | None) -> SynthVolume:
    """``v`` cut to ``n`` contiguous axial slices around the head's centre (all when None)."""
    if n is None or n >= v.head.shape[-1]:
        return v
    z = np.nonzero(v.head.reshape(-1, v.head.shape[-1]).any(0))[0]
    c = int(z.mean()) if z.size else v.head.shape[-1] // 2
    lo = max(0, min(c - n // 2, v.head.shape[-1] - n))
    sl = (Ellipsis, slice(lo, lo + n))
    return SynthVolume(v.mr[sl], v.ct[sl], v.head[sl], v.name, v.source)
