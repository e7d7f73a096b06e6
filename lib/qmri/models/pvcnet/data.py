"""PVC-network training data: phantom activity, scanner PET at a random FWHM, RBV targets, patches.

Every training example is drawn afresh: a PSF FWHM uniform in 5-8 mm (so one network serves every
scanner, issue 7), Poisson-like noise (:func:`qmri.physics.pet.simulate_pet`, 5 % at SUV 1) and the
amyloid status (positive or negative with probability 0.5, the same anatomy). The target is the
RBV-corrected PET computed with the true PSF and the phantom's GM/WM/CSF/other probabilities
(:func:`qmri.classical.pvc.rbv`; seed 002 trained on SPM's PVC output, RBV is its classical
equivalent) or, with ``target="activity"``, the phantom's true activity. Units: SUV (cerebellar GM 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...anatomy.phantom import make_subject
from ...classical.pvc import rbv
from ...physics.pet import amyloid_activity, segmentation_probabilities, simulate_pet
from ...simulate.driver import BRAIN_CROP_MARGIN_MM, crop_box, task_rng
from ...simulate.pet import FWHM_RANGE_MM, NOISE_LEVEL

TARGETS = ("rbv", "activity")


@dataclass
class PVCVolume:
    """One subject for PVC training, on an isotropic grid of ``voxel_size_mm`` (mm).

    A phantom volume keeps what is needed to simulate a new PET at any FWHM (``labels``, ``probseg``,
    ``lesions``); a study volume (from a datastore) has a fixed ``pet`` (SUV), ``fwhm_mm`` and,
    optionally, a ``target`` (SUV; ``labels/final``). ``seg`` is the (x,y,z,4) GM/WM/CSF/other
    probability map used for the RBV target (None when the study has no segmentation).
    """

    subject: str
    voxel_size_mm: float
    mask: np.ndarray
    seg: np.ndarray | None = None
    labels: np.ndarray | None = None
    probseg: np.ndarray | None = None
    lesions: np.ndarray | None = None
    pet: np.ndarray | None = None
    fwhm_mm: float | None = None
    target: np.ndarray | None = None

    @property
    def is_phantom(self) -> bool:
        return self.labels is not None


def make_volume(seed: int, resolution_mm: float = 2.0) -> PVCVolume:
    """A phantom subject (amyloid-positive anatomy with its code-4 cortex) cropped like the PVC
    studies (brain + 10 mm)."""
    s = make_subject(seed, resolution_mm, amyloid_positive=True, subject_id=f"pvc-{seed}")
    box = crop_box(s.brain_mask, s.voxel_size_mm, BRAIN_CROP_MARGIN_MM["pvc"])
    probseg = s.probseg[box]
    return PVCVolume(
        subject=s.subject_id,
        voxel_size_mm=float(s.voxel_size_mm),
        mask=s.brain_mask[box],
        seg=segmentation_probabilities(probseg),
        labels=s.labels[box],
        probseg=probseg,
        lesions=s.lesions[box],
    )


def draw_example(vol: PVCVolume, rng: np.random.Generator, target: str = "rbv", fwhm_mm: float | None = None, amyloid_positive: bool | None = None, fwhm_range=FWHM_RANGE_MM):
    """One (pet, target, fwhm_mm) triple, PET and target in SUV.

    Phantom volumes: amyloid status (drawn if None), activity, FWHM (drawn from ``fwhm_range`` mm if
    None) and noise are new for each call. Study volumes return their fixed PET and FWHM.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    vs = vol.voxel_size_mm
    if vol.is_phantom:
        pos = bool(rng.random() < 0.5) if amyloid_positive is None else amyloid_positive
        act = amyloid_activity(vol.labels, vol.probseg, vol.lesions, pos, rng, vs)
        fwhm = float(np.round(rng.uniform(*fwhm_range), 2)) if fwhm_mm is None else float(fwhm_mm)
        pet = simulate_pet(act, vs, fwhm, rng, noise_level=NOISE_LEVEL)
    else:
        pet, fwhm, act = vol.pet, float(vol.fwhm_mm), vol.target
    if target == "rbv":
        if vol.seg is None:
            raise ValueError(f"{vol.subject}: the RBV target needs the GM/WM/CSF/other channels (4D PET study)")
        tgt = np.asarray(rbv(pet, vol.seg, fwhm, vs, mask_layout="last"), dtype=np.float32)
    else:
        if act is None:
            raise ValueError(f"{vol.subject}: the 'activity' target needs a labels/final target image")
        tgt = act
    return pet.astype(np.float32), tgt.astype(np.float32), fwhm


def sample_patches(pet, target, mask, n: int, size: int, rng: np.random.Generator, min_brain: float = 0.2, flip: bool = True):
    """``n`` random cubic patches (size^3 voxels) of (pet, target) with at least ``min_brain`` of the
    patch inside the brain; random flips along each axis (the Gaussian PSF is symmetric, so a flipped
    example is a valid example). Volumes smaller than ``size`` are edge-padded."""
    shape = np.array(mask.shape)
    pad = np.maximum(size - shape, 0)
    if pad.any():
        widths = [(0, int(p)) for p in pad]
        pet, target = (np.pad(a, widths, mode="edge") for a in (pet, target))
        mask = np.pad(mask, widths)
        shape = np.array(mask.shape)
    out, tries = [], 0
    while len(out) < n:
        lo = rng.integers(0, shape - size + 1)
        sl = tuple(slice(int(a), int(a) + size) for a in lo)
        tries += 1
        if mask[sl].mean() >= min_brain or tries > 50 * n:
            p, t = pet[sl], target[sl]
            if flip:
                axes = tuple(int(a) for a in np.flatnonzero(rng.random(3) < 0.5))
                if axes:
                    p, t = np.flip(p, axes), np.flip(t, axes)
            out.append((np.ascontiguousarray(p), np.ascontiguousarray(t)))
    return out


def validation_examples(vols, target: str = "rbv", fwhms=(5.0, 6.5, 8.0), seed: int = 31_000):
    """Fixed validation examples: every volume at every FWHM, alternating amyloid status."""
    out = []
    for i, v in enumerate(vols):
        for j, f in enumerate(fwhms):
            rng = task_rng("pvc-val", seed + 10 * i + j)
            pet, tgt, fw = draw_example(v, rng, target, fwhm_mm=None if not v.is_phantom else f, amyloid_positive=(i + j) % 2 == 0)
            out.append((v, pet, tgt, fw))
            if not v.is_phantom:
                break
    return out


def volumes_from_studies(pairs, target: str = "rbv") -> list[PVCVolume]:
    """One :class:`PVCVolume` per ``pvc`` study (sidecar task "pvc") of (image, label) paths.

    The image is 3D PET or 4D PET + GM/WM/CSF/other (channels last); the FWHM (mm) comes from the
    sidecar's ``psf_fwhm_mm`` (isotropic: the mean of the three values). ``target="rbv"`` computes the
    RBV target from the study's tissue channels (3D-only studies are skipped with a warning);
    ``target="activity"`` uses the ``labels/final`` image (SUV). Other studies are skipped.
    """
    import logging

    import nibabel as nib

    from ...io.study import image_id, isotropic_task_studies

    log = logging.getLogger(__name__)
    out = []
    for image, label, meta, img, vs in isotropic_task_studies(pairs, "pvc"):
        data = np.asarray(img.dataobj, dtype=np.float32)
        pet, seg = (data, None) if data.ndim == 3 else (data[..., 0], data[..., 1:5] if data.shape[-1] >= 5 else None)
        f = meta.get("psf_fwhm_mm")
        if f is None:
            log.warning("skipping %s: sidecar lacks psf_fwhm_mm", image)
            continue
        fwhm = float(np.mean(f if isinstance(f, (list, tuple)) else [f]))
        tgt = None
        if label and Path(str(label)).exists():
            tgt = nib.load(str(label)).get_fdata(dtype=np.float32)
            if tgt.shape != pet.shape:
                raise ValueError(f"target of {Path(image).name} has shape {tgt.shape}, PET {pet.shape}")
        if (target == "rbv" and seg is None) or (target == "activity" and tgt is None):
            log.warning("skipping %s: no %s for the %r target", image, "tissue channels" if target == "rbv" else "labels/final image", target)
            continue
        mask = (seg[..., 0] + seg[..., 1] > 0.5) if seg is not None else pet > 0.2 * np.percentile(pet, 99)
        out.append(PVCVolume(subject=image_id(image), voxel_size_mm=vs, mask=mask, seg=seg, pet=pet, fwhm_mm=fwhm, target=tgt))
    return out
