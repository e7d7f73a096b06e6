"""Write a phantom multi-echo GRE acquisition as a BIDS dataset, as dcm2niix would (test data for
the BIDS input adapter and ``qmri infer --bids``; no real patient data exists here).

``sub-<s>[/ses-<x>]/anat/sub-<s>[_ses-<x>]_echo-<n>_part-mag|phase_MEGRE.nii.gz`` with JSON sidecars
(``EchoTime`` in s, ``MagneticFieldStrength`` in T, ``EchoNumber``); phases on the scanner's 12-bit
scale (-4096..4094 for -pi..pi), as dcm2niix keeps them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np

from ..io.multi_echo import MultiEcho

BIDS_VERSION = "1.10.0"


def write_dataset_description(root: str | Path, name: str = "qmri phantoms") -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "dataset_description.json"
    if not path.exists():
        path.write_text(json.dumps({"Name": name, "BIDSVersion": BIDS_VERSION, "DatasetType": "raw", "License": "CC0"}, indent=2))
    return path


def write_bids_megre(me: MultiEcho, root: str | Path, subject: str, session: str | None = None, mask: np.ndarray | None = None) -> list[Path]:
    """Write ``me`` into the BIDS dataset ``root``; returns the image files written."""
    root = Path(root)
    write_dataset_description(root)
    folder = root / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
    folder.mkdir(parents=True, exist_ok=True)
    prefix = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    written = []
    for e in range(me.echoes):
        parts = [("mag", me.magnitude[..., e])]
        if me.phase is not None:
            parts.append(("phase", np.rint(np.asarray(me.phase[..., e], float) / math.pi * 4096.0).clip(-4096, 4094).astype(np.int16)))
        for part, data in parts:
            path = folder / f"{prefix}_echo-{e + 1}_part-{part}_MEGRE.nii.gz"
            img = nib.Nifti1Image(np.asarray(data), me.affine)
            img.set_qform(me.affine, code=1)
            img.set_sform(me.affine, code=1)
            nib.save(img, str(path))
            meta = {"EchoTime": me.echo_times_ms[e] / 1000.0, "EchoNumber": e + 1, "MagneticFieldStrength": me.field_strength_t, "Modality": "MR", "ImageType": ["ORIGINAL", "PRIMARY", "M" if part == "mag" else "P", "ND"]}
            path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps(meta, indent=2))
            written.append(path)
    if mask is not None:
        path = folder / f"{prefix}_desc-brain_mask.nii.gz"
        nib.save(nib.Nifti1Image((np.asarray(mask) > 0).astype(np.uint8), me.affine), str(path))
        written.append(path)
    return written
