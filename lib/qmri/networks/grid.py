"""Running a network trained at one voxel size on an image of another: resample, infer, resample back.

A network trained on 2 mm phantoms sees the anatomy (and any kernel in voxels: PSFs, context
windows) at 2 mm; fed a 1 mm or a 1 x 1 x 3 mm image directly it returns a silently different map.
:class:`NetworkGrid` moves an image onto the network's grid (the same field of view, voxel size
``target_mm`` per axis) and the network's maps back onto the input grid, with MONAI's ``Resize``:
``area`` (box averaging: what a coarser acquisition measures) when a dimension shrinks,
``trilinear`` when it grows. Voxel sizes outside :data:`SUPPORTED_RANGE_MM`, or a resampling factor
above :data:`MAX_FACTOR` along any axis, are refused with a ValueError naming the range (HTTP 422 on
the server). Detail finer than ``target_mm`` is lost on the way: the maps are the network's estimate
at its own resolution, interpolated.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from monai.transforms import Resize

SUPPORTED_RANGE_MM = (0.5, 4.0)  # per axis, for any network task that resamples
MAX_FACTOR = 4.0  # largest ratio of input to network voxel size (or its inverse) along an axis
TOLERANCE = 0.05  # relative: voxel sizes this close to the network's run without resampling


class NetworkGrid:
    """The network grid for an input of ``shape`` voxels of ``voxel_mm`` (mm per axis).

    ``target_mm``: the network's voxel size (a number: isotropic; or per axis). ``what`` names the
    network in error messages.
    """

    def __init__(self, shape: Sequence[int], voxel_mm: Sequence[float], target_mm, what: str = "the network"):
        self.shape = tuple(int(n) for n in shape[:3])
        self.voxel_mm = tuple(float(v) for v in voxel_mm)
        t = np.broadcast_to(np.asarray(target_mm, np.float64), (3,))
        lo, hi = SUPPORTED_RANGE_MM
        if not all(lo <= v <= hi for v in self.voxel_mm):
            raise ValueError(f"{what} supports voxel sizes {lo:g}-{hi:g} mm per axis; this image has {[round(v, 3) for v in self.voxel_mm]} mm: resample it, or use a classical method")
        ratio = np.asarray(self.voxel_mm) / t
        if np.any(ratio > MAX_FACTOR) or np.any(ratio < 1 / MAX_FACTOR):
            raise ValueError(f"{what} runs at {[round(float(v), 3) for v in t]} mm and resamples by at most {MAX_FACTOR:g}x per axis; this image has {[round(v, 3) for v in self.voxel_mm]} mm voxels")
        self.identity = bool(np.all(np.abs(ratio - 1) <= TOLERANCE))
        self.net_shape = self.shape if self.identity else tuple(max(1, int(round(n * r))) for n, r in zip(self.shape, ratio))
        self.net_voxel_mm = tuple(float(v) for v in (self.voxel_mm if self.identity else np.asarray(self.voxel_mm) * np.asarray(self.shape) / np.asarray(self.net_shape)))

    @staticmethod
    def _resize(vol: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
        """(X, Y, Z) or (X, Y, Z, C) float volume -> the same on ``shape``; per axis area or trilinear."""
        v = np.asarray(vol, np.float32)
        x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(v[..., None] if v.ndim == 3 else v, -1, 0)))
        cur = tuple(x.shape[1:])
        # shrink first (box averages), then grow (trilinear), so that each axis gets its own mode
        down = tuple(min(a, b) for a, b in zip(cur, shape))
        if down != cur:
            x = Resize(down, mode="area")(x)
        if down != shape:
            x = Resize(shape, mode="trilinear", align_corners=False)(x)
        out = np.moveaxis(np.asarray(x), 0, -1)
        return out[..., 0] if v.ndim == 3 else out

    def to_network(self, vol: np.ndarray) -> np.ndarray:
        """An image (channels last allowed) on the network grid."""
        return np.asarray(vol, np.float32) if self.identity else self._resize(vol, self.net_shape)

    def mask_to_network(self, mask: np.ndarray) -> np.ndarray:
        """A brain mask on the network grid: voxels at least half inside."""
        return np.asarray(mask, bool) if self.identity else self._resize(np.asarray(mask, np.float32), self.net_shape) > 0.5

    def to_input(self, vol: np.ndarray) -> np.ndarray:
        """A network map (channels last allowed) back on the input grid."""
        return np.asarray(vol, np.float32) if self.identity else self._resize(vol, self.shape)

    def _masked(self, vol, mask, shape, out_mask) -> np.ndarray:
        """Normalised resampling: values inside ``mask`` only (no blending with the zeros outside),
        on ``shape``; voxels of ``out_mask`` no masked value reaches get the masked mean."""
        v = np.asarray(vol, np.float32)
        m = np.asarray(mask, np.float32)
        mv = m[..., None] if v.ndim == 4 else m
        num = self._resize(v * mv, shape)
        w = self._resize(m, shape)
        w = w[..., None] if v.ndim == 4 else w
        mean = (v * mv).sum(axis=(0, 1, 2)) / max(float(m.sum()), 1.0)
        out = np.where(w > 1e-3, num / np.maximum(w, 1e-3), mean)
        om = out_mask[..., None] if v.ndim == 4 else out_mask
        return np.where(om, out, 0.0).astype(np.float32)

    def masked_to_network(self, vol: np.ndarray, mask: np.ndarray, net_mask: np.ndarray) -> np.ndarray:
        """A map defined inside ``mask`` (e.g. QSM, 0 outside) on the network grid, inside ``net_mask``."""
        return np.where(net_mask[..., None] if np.ndim(vol) == 4 else net_mask, vol, 0.0).astype(np.float32) if self.identity else self._masked(vol, mask, self.net_shape, net_mask)

    def masked_to_input(self, vol: np.ndarray, net_mask: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """A network map defined inside ``net_mask`` back on the input grid, inside the input ``mask``."""
        return np.where(mask[..., None] if np.ndim(vol) == 4 else mask, vol, 0.0).astype(np.float32) if self.identity else self._masked(vol, net_mask, self.shape, mask)


def on_network_grid(run, image: np.ndarray, voxel_mm: Sequence[float], target_mm, what: str) -> tuple[np.ndarray, str]:
    """``run`` (a whole-volume network map of an image on the network's grid) on ``image`` of
    ``voxel_mm``: directly when the grids agree, else box-averaged to ``target_mm``, run and the map
    interpolated back -> (map on the input grid, a note for the map's description: "" or what was lost)."""
    grid = NetworkGrid(image.shape, voxel_mm, target_mm, what)
    if grid.identity:
        return run(image), ""
    t = float(np.mean(target_mm))
    note = f"; computed on the {t:g} mm grid of {what} and interpolated to {tuple(round(v, 2) for v in voxel_mm)} mm: no detail finer than {t:g} mm"
    return grid.to_input(run(grid.to_network(image))), note
