"""``qmri simulate TASK``: phantom subjects -> studies of one task in the datastore layout."""

from __future__ import annotations

import importlib
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from ..anatomy.phantom import make_subject
from ..io.study import write_study
from . import SimStudy

# task -> "module:function" of the simulator (imported lazily: each pulls in its own physics)
SIMULATORS: dict[str, str] = {
    "synth": "qmri.simulate.synthesis:simulate_synthesis",
    "pvc": "qmri.simulate.pet:simulate_pvc",
    "qsm": "qmri.simulate.qsm:simulate_qsm",
    "oef": "qmri.simulate.oef:simulate_oef",
}


def simulator(task: str) -> Callable[..., list[SimStudy]]:
    if task not in SIMULATORS:
        raise ValueError(f"unknown task '{task}'; choose from {', '.join(SIMULATORS)}")
    module, fn = SIMULATORS[task].split(":")
    return getattr(importlib.import_module(module), fn)


def task_rng(task: str, seed: int) -> np.random.Generator:
    """Physics randomness of one (task, subject seed): independent across tasks, reproducible."""
    return np.random.default_rng([seed, zlib.crc32(task.encode())])


# Tasks whose studies only need the brain: cropped to the brain's bounding box plus this margin (mm).
# The physics (e.g. background fields from the skull and air) is still simulated on the whole head.
BRAIN_CROP_MARGIN_MM = {"oef": 6.0, "qsm": 6.0, "pvc": 10.0}


def crop_box(mask: np.ndarray, voxel_mm: float, margin_mm: float) -> tuple[slice, slice, slice]:
    idx = np.argwhere(mask)
    m = int(np.ceil(margin_mm / voxel_mm))
    lo = np.maximum(idx.min(0) - m, 0)
    hi = np.minimum(idx.max(0) + m + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def cropped_affine(affine: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    out = np.array(affine, dtype=float)
    out[:3, 3] += out[:3, :3] @ np.array([s.start for s in box], dtype=float)
    return out


def simulate(task: str, out: str | Path, subjects: int = 1, seed: int = 0, resolution_mm: float = 2.0, progress: bool = True, compact: bool = False, **options) -> list[Path]:
    """Write ``subjects`` studies of ``task`` into the studies folder ``out``; subject i uses seed+i.

    ``compact`` stores floats as scaled int16 (used for the bundled sample data).
    """
    fn = simulator(task)
    written = []
    for i in tqdm(range(subjects), desc=f"simulate {task}", unit="subject", disable=not progress):
        s = make_subject(seed + i, resolution_mm, subject_id=f"sub-{seed + i:04d}")
        box = tuple(slice(0, n) for n in s.shape)
        if task in BRAIN_CROP_MARGIN_MM:
            box = crop_box(s.brain_mask, s.voxel_size_mm, BRAIN_CROP_MARGIN_MM[task])
        affine = cropped_affine(s.affine, box)
        for st in fn(s, task_rng(task, seed + i), **options):
            target = None if st.target is None else st.target[box]
            written.append(write_study(out, st.study_id, st.image[box], affine, st.sidecar, target, compact=compact))
    return written
