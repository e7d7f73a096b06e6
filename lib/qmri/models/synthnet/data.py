"""Training data for the scCycleGAN: unpaired axial slices of phantom T2w MR and CT.

MR slices come from one set of phantom subjects (seeds from :data:`MR_SEED`), CT slices from a
different set (:data:`CT_SEED`), so no training MR slice has its CT counterpart in the data:
training is unpaired. Validation subjects (:data:`VAL_SEED`) have both, co-registered, and their
pairing is used only to score the generators. Benchmark subjects (qmri.bench.synth, seeds 5600..)
are disjoint from all of these.

Volumes are simulated with :func:`qmri.simulate.synthesis.simulate_synthesis` (T2w MR in a.u.,
CT in HU) and cached as ``.npz`` under ``cache_dir`` because a phantom takes ~25 s to build.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .predict import to_unit

log = logging.getLogger(__name__)

MR_SEED = 50_000
CT_SEED = 50_500
VAL_SEED = 51_000
#: Slices whose head covers fewer voxels than this fraction of the slice are skipped (ends of the head).
MIN_HEAD_FRACTION = 0.05
#: HU above which a CT voxel is body (head mask of a CT: threshold, fill holes).
HEAD_HU = -400.0


def default_cache_dir() -> Path:
    return Path(os.environ.get("QMRI_CACHE", Path.home() / ".cache" / "qmri")) / "synth"


@dataclass
class SynthVolume:
    """One subject: T2w MR (a.u.), CT (HU), head mask (bool), all (X, Y, Z) with axial = last axis.

    ``mr`` or ``ct`` may be None when a study provides only one modality.
    """

    mr: np.ndarray | None
    ct: np.ndarray | None
    head: np.ndarray
    name: str = ""
    source: str = "both"  # the modality a study's image is ("mr" / "ct"); "both" for phantoms

    @property
    def subject(self) -> str:
        return self.name


def head_mask_from_ct(ct_hu: np.ndarray) -> np.ndarray:
    """Head mask of a CT (bool): voxels above :data:`HEAD_HU`, holes (sinuses) filled slice by slice."""
    m = np.asarray(ct_hu) > HEAD_HU
    return np.stack([ndimage.binary_fill_holes(m[..., k]) for k in range(m.shape[-1])], axis=-1)


def make_volume(seed: int, resolution_mm: float = 2.0, cache_dir: str | Path | None = None) -> SynthVolume:
    """Phantom subject ``seed``: co-registered T2w MR (a.u.) and CT (HU), cached on disk."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    f = cache / f"synth_{seed}_{resolution_mm:g}mm.npz"
    if f.exists():
        d = np.load(f)
        return SynthVolume(d["mr"], d["ct"], d["head"], f"phantom-{seed}")
    from ...anatomy.phantom import make_subject
    from ...simulate.driver import task_rng
    from ...simulate.synthesis import simulate_synthesis

    s = make_subject(seed, resolution_mm, subject_id=f"phantom-{seed}")
    mr_study, ct_study = simulate_synthesis(s, task_rng("synth", seed))
    vol = SynthVolume(mr_study.image.astype(np.float32), ct_study.image.astype(np.float32), s.head_mask.astype(bool), s.subject_id)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, mr=vol.mr, ct=vol.ct, head=vol.head)
    tmp.replace(f)
    return vol


def head_slices(vol: np.ndarray, head: np.ndarray, modality: str, min_fraction: float = MIN_HEAD_FRACTION) -> np.ndarray:
    """(N, H, W) axial slices (last axis) where the head covers >= ``min_fraction``: in network units
    for ``modality`` 'mr' or 'ct', as float32 values for 'mask'."""
    frac = head.reshape(-1, head.shape[-1]).mean(0)
    keep = np.nonzero(frac >= min_fraction)[0]
    sl = vol[..., keep].astype(np.float32) if modality == "mask" else to_unit(vol[..., keep], modality)
    return np.moveaxis(sl, -1, 0).copy()


def random_crops(pool: np.ndarray, n: int, size: int, rng: np.random.Generator, flip: bool = True) -> np.ndarray:
    """``n`` random ``size`` x ``size`` crops (n, C, size, size) of random slices of ``pool``.

    ``pool``: (N, H, W) slices, or (N, C, H, W) with channels cropped together (an image and its
    aligned pseudo-target). Slices smaller than ``size`` are padded with -1 (air). Random
    left-right flips (the slice's first axis, the volume's x) when ``flip``.
    """
    if pool.ndim == 3:
        pool = pool[:, None]
    c_, h0, w0 = pool.shape[1:]
    out = np.full((n, c_, size, size), -1.0, np.float32)
    for i in range(n):
        s = pool[rng.integers(len(pool))]
        ph, pw = max(size - h0, 0), max(size - w0, 0)
        if ph or pw:
            s = np.pad(s, [(0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)], constant_values=-1.0)
        h, w = s.shape[1:]
        r0, c0 = rng.integers(h - size + 1), rng.integers(w - size + 1)
        c = s[:, r0 : r0 + size, c0 : c0 + size]
        if flip and rng.random() < 0.5:
            c = c[:, ::-1]
        out[i] = c
    return out


def volumes_from_studies(pairs) -> list[SynthVolume]:
    """One :class:`SynthVolume` per synthesis study of a datastore; other studies are skipped.

    ``pairs``: (image path, label path or None). A study whose sidecar task is ``synthetic_ct`` holds
    a T2w MR (a.u.), one with ``synthetic_mr`` a CT (HU); its ``labels/final`` truth, when present
    and on the same grid, is the other modality. ``source`` records which modality the study's
    image is: training uses only that one (unpaired), the truth only scores validation.
    """
    import nibabel as nib

    from ...io.study import image_id, read_sidecar

    out = []
    for image, label in pairs:
        try:
            task = read_sidecar(image).get("task")
        except ValueError:
            continue
        if task not in ("synthetic_ct", "synthetic_mr"):
            continue
        img = np.asarray(nib.load(str(image)).dataobj, dtype=np.float32)
        if img.ndim == 4 and img.shape[3] == 1:
            img = img[..., 0]
        if img.ndim != 3:
            log.warning("skipping %s: not a 3D volume", image)
            continue
        truth = None
        if label is not None and Path(label).exists():
            truth = np.asarray(nib.load(str(label)).dataobj, dtype=np.float32)
            if truth.shape != img.shape:
                log.warning("ignoring the truth of %s: shape %s differs from the image %s", image, truth.shape, img.shape)
                truth = None
        source = "mr" if task == "synthetic_ct" else "ct"
        mr, ct = (img, truth) if source == "mr" else (truth, img)
        head = head_mask_from_ct(ct) if ct is not None else _head_from_mr(mr)
        out.append(SynthVolume(mr, ct, head, image_id(image), source))
    return out


def _head_from_mr(mr: np.ndarray) -> np.ndarray:
    from ...classical.bulk_density import head_mask_from_mr

    return head_mask_from_mr(mr)


def prebuild(seeds, resolution_mm: float = 2.0, cache_dir=None) -> None:
    """Simulate and cache the given subjects (used to prepare training data ahead of time)."""
    for s in seeds:
        make_volume(int(s), resolution_mm, cache_dir)
        log.info("cached synth subject %d", s)


if __name__ == "__main__":  # python -m qmri.models.synthnet.data SEED... : fill the cache
    import sys

    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO)
    prebuild([int(a) for a in sys.argv[1:]])
