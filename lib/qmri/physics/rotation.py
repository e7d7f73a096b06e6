"""Rigid rotations of volumes about their centre, in mm space (for B0 alignment and augmentation)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def rotation_about(axis: int, deg: float) -> np.ndarray:
    """3x3 rotation by ``deg`` degrees about array axis ``axis`` (0, 1 or 2)."""
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def rotation_to_z(b0_dir) -> np.ndarray:
    """Rotation R (3x3) with R @ b0 = (0, 0, 1) (Rodrigues; identity when b0 is already z)."""
    b = np.asarray(b0_dir, dtype=np.float64)
    b = b / np.linalg.norm(b)
    z = np.array([0.0, 0.0, 1.0])
    v = np.cross(b, z)
    s, c = np.linalg.norm(v), float(b @ z)
    if s < 1e-12:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k * ((1 - c) / s**2)


def rotate_volume(vol: np.ndarray, rot: np.ndarray, voxel_size_mm=(1.0, 1.0, 1.0), order: int = 1) -> np.ndarray:
    """``out(p) = vol(R^-1 p)`` about the array centre, with p in mm (handles anisotropic voxels).

    A structure at position x moves to R x: rotating a susceptibility map and B0 by the same R
    leaves their field relation intact. Outside the input the value is 0.
    """
    vs = np.asarray(voxel_size_mm, dtype=np.float64) * np.ones(3)
    m = np.diag(1.0 / vs) @ rot.T @ np.diag(vs)  # output index -> input index (linear part)
    centre = (np.asarray(vol.shape[:3]) - 1) / 2.0
    offset = centre - m @ centre
    return ndimage.affine_transform(vol, m, offset=offset, order=order, mode="constant", cval=0.0)
