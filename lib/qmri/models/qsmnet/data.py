"""QSMnet training data from phantoms: brain susceptibility, local field, rotation augmentation, patches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...anatomy.phantom import make_subject
from ...physics.dipole import forward_field
from ...physics.qsm_phantom import susceptibility_map
from ...physics.rotation import rotate_volume, rotation_about
from ...simulate.driver import crop_box, task_rng

FIELD_NOISE_PPM = 0.001  # Gaussian noise added to training fields (ppm), as in the simulated studies
MAX_ROTATION_DEG = 30.0  # seed 003: chi rotated by -30..30 degrees relative to B0 and re-convolved


@dataclass
class QSMVolume:
    """One subject's brain: susceptibility (ppm, water = 0, 0 outside), mask, voxel size (mm)."""

    chi: np.ndarray
    mask: np.ndarray
    voxel_size_mm: float
    subject: str


def make_volume(seed: int, resolution_mm: float = 2.0, lesions="all") -> QSMVolume:
    """A phantom brain for QSM training/validation, cropped to the brain plus 8 mm.

    ``lesions="all"`` puts a haemorrhage (+0.6..+1.4 ppm) and a calcification (-1.4..-0.6 ppm) in
    every training subject so large sources are well represented.
    """
    s = make_subject(seed, resolution_mm, lesions=lesions, subject_id=f"qsm-{seed}")
    chi = susceptibility_map(s.labels, s.lesions, task_rng("qsm", seed), probseg=s.probseg)
    box = crop_box(s.brain_mask, s.voxel_size_mm, 8.0)
    mask = s.brain_mask[box]
    return QSMVolume(np.where(mask, chi[box], 0.0).astype(np.float32), mask, s.voxel_size_mm, s.subject_id)


def local_field(chi: np.ndarray, mask: np.ndarray, voxel_size_mm, b0_dir=(0.0, 0.0, 1.0), rng=None, noise_ppm=FIELD_NOISE_PPM) -> np.ndarray:
    """Local field (ppm) of brain-masked chi with zero padding, plus Gaussian noise inside the mask."""
    f = forward_field(np.where(mask, chi, 0.0).astype(np.float64), voxel_size_mm, b0_dir, pad=True)
    if rng is not None and noise_ppm > 0:
        f = f + rng.normal(0.0, noise_ppm, f.shape)
    return np.where(mask, f, 0.0).astype(np.float32)


def rotated_example(vol: QSMVolume, rng: np.random.Generator, max_deg: float = MAX_ROTATION_DEG):
    """Seed 003's augmentation: rotate chi (and mask) by up to +-max_deg about an axis perpendicular to
    B0 (array x or y), then re-convolve with the dipole along z. Returns (field, chi, mask)."""
    rot = rotation_about(int(rng.integers(0, 2)), float(rng.uniform(-max_deg, max_deg)))
    chi = rotate_volume(vol.chi, rot, vol.voxel_size_mm, order=1)
    mask = rotate_volume(vol.mask.astype(np.float32), rot, vol.voxel_size_mm, order=1) > 0.5
    chi = np.where(mask, chi, 0.0).astype(np.float32)
    return local_field(chi, mask, vol.voxel_size_mm, rng=rng), chi, mask


def sample_patches(field, chi, mask, n: int, size: int, rng: np.random.Generator, min_brain: float = 0.3):
    """``n`` random cubic patches (size^3 voxels) with at least ``min_brain`` of the patch in the mask."""
    shape = np.array(mask.shape)
    pad = np.maximum(size - shape, 0)
    if pad.any():
        widths = [(0, int(p)) for p in pad]
        field, chi, mask = (np.pad(a, widths) for a in (field, chi, mask))
        shape = np.array(mask.shape)
    out = []
    tries = 0
    while len(out) < n:
        lo = rng.integers(0, shape - size + 1)
        sl = tuple(slice(int(a), int(a) + size) for a in lo)
        tries += 1
        if mask[sl].mean() >= min_brain or tries > 50 * n:
            out.append((field[sl], chi[sl], mask[sl]))
    return out
