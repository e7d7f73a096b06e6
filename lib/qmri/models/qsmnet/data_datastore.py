"""QSMnet training volumes from studies (local field image + ``labels/final`` susceptibility target)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import nibabel as nib
import numpy as np

from ...io.study import image_id, isotropic_task_studies
from ...physics.rotation import rotate_volume, rotation_to_z
from .data import QSMVolume


def volumes_from_studies(pairs: Iterable[tuple[str | Path, str | Path]]) -> list[QSMVolume]:
    """One :class:`QSMVolume` per ``qsm`` study (sidecar task "qsm"); other studies are skipped.

    The brain mask is where the local field is non-zero; the target chi (ppm) is rotated so that
    B0 lies along the array's z axis (the network's convention) when the sidecar's B0_dir is oblique.
    """
    out = []
    for image, label, meta, img, vs in isotropic_task_studies(pairs, "qsm"):
        mask = np.asarray(img.dataobj, dtype=np.float32) != 0
        chi = nib.load(str(label)).get_fdata(dtype=np.float32)
        if chi.shape != mask.shape:
            raise ValueError(f"target of {Path(image).name} has shape {chi.shape}, image {mask.shape}")
        rot = rotation_to_z(meta.get("B0_dir", (0.0, 0.0, 1.0)))
        if not np.allclose(rot, np.eye(3)):
            chi = rotate_volume(chi, rot, (vs,) * 3, order=1)
            mask = rotate_volume(mask.astype(np.float32), rot, (vs,) * 3, order=1) > 0.5
        out.append(QSMVolume(np.where(mask, chi, 0.0).astype(np.float32), mask, vs, image_id(image)))
    return out
