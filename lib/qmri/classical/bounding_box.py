"""The bounding box of a brain or head mask: methods whose sources and data lie in the mask run on it.

A clinical 1 mm matrix (e.g. 256 x 256 x 200) is mostly air around a brain of about 140 x 170 x
140 mm; cropping to the mask's box before the FFT-based steps (unwrapping, V-SHARP, dipole
inversion) and the networks cuts their time and memory by the ratio of the volumes.
"""

from __future__ import annotations

import numpy as np
import torch


def mask_box(mask, margin: int) -> tuple[slice, ...] | None:
    """The mask's bounding box grown by ``margin`` voxels on the first three axes, or None when that
    is the whole grid or the mask is empty."""
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    m = m.reshape(m.shape[:3] + (-1,)).any(axis=3) if m.ndim > 3 else m
    if m.ndim != 3 or not m.any():
        return None
    box = []
    for ax in range(3):
        idx = np.flatnonzero(m.any(axis=tuple(a for a in range(3) if a != ax)))
        box.append(slice(max(int(idx[0]) - margin, 0), min(int(idx[-1]) + margin + 1, m.shape[ax])))
    if all(b.start == 0 and b.stop == n for b, n in zip(box, m.shape)):
        return None
    return tuple(box)


def paste(values: np.ndarray, box: tuple[slice, ...], shape: tuple[int, ...], fill: float = 0.0) -> np.ndarray:
    """``values`` (computed on ``box``) on the full grid of ``shape`` (first three axes), ``fill`` elsewhere."""
    out = np.full(tuple(shape[:3]) + values.shape[3:], fill, dtype=values.dtype)
    out[box] = values
    return out
