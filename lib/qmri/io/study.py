"""The project's study layout: a flat MONAI Label studies folder with JSON sidecars.

A *study* is one image in the MONAI Label datastore::

    <studies>/<id>.nii.gz              the input image; several inputs of one acquisition are one
                                       4D NIfTI with channels last (e.g. 8 echo magnitudes + QSM)
    <studies>/<id>.json                the sidecar: acquisition metadata and channel names/units
    <studies>/labels/final/<id>.nii.gz the reference map used as training target (3D or 4D,
                                       channels last), described by the sidecar's "target" entry

MONAI Label's LocalDatastore lists only ``*.nii.gz``/``*.nii`` in the studies folder, so sidecars
sit beside their image without becoming studies. Sidecar keys (all optional unless a task needs
them; units in the key name or in "units"):

    task              "anatomy" | "oef" | "qsm" | "qsm_raw" | "pvc" | "synthetic_ct" | "synthetic_mr"
    subject           phantom subject id (e.g. "sub-000")
    modality          e.g. "T1w", "mGRE", "local_field", "PET", "T2w", "CT"
    channels          names of the 4D channels in order (e.g. ["mag_e1", ..., "mag_e8", "qsm"])
    units             units of each channel (list) or of the 3D image (string)
    voxel_size_mm     [x, y, z] voxel size in mm
    B0_T              main field strength in tesla
    B0_dir            unit vector of B0 in the image's array axes
    echo_times_ms     echo times in ms
    psf_fwhm_mm       PET point-spread function FWHM per axis in mm
    target            {"channels": [...], "units": [...], "description": "..."}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

LABEL_DIR = Path("labels") / "final"
NIFTI_EXTS = (".nii.gz", ".nii")


class StudyError(ValueError):
    """A study or its sidecar is missing or inconsistent; the message names the problem."""


def image_id(path: str | Path) -> str:
    """Datastore id of an image file (its name without the NIfTI extension)."""
    name = Path(path).name
    for ext in NIFTI_EXTS:
        if name.endswith(ext):
            return name[: -len(ext)]
    raise StudyError(f"{name} is not a NIfTI file (.nii or .nii.gz)")


def sidecar_path(image_path: str | Path) -> Path:
    p = Path(image_path)
    return p.with_name(image_id(p) + ".json")


def read_sidecar(image_path: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read the JSON sidecar beside an image; raise :class:`StudyError` naming what is missing."""
    sc = sidecar_path(image_path)
    if not sc.exists():
        raise StudyError(f"missing sidecar {sc.name} beside {Path(image_path).name}")
    try:
        meta = json.loads(sc.read_text())
    except json.JSONDecodeError as e:
        raise StudyError(f"sidecar {sc.name} is not valid JSON: {e}") from None
    missing = [k for k in required if k not in meta]
    if missing:
        raise StudyError(f"sidecar {sc.name} lacks required key(s): {', '.join(missing)}")
    return meta


def resolve_sidecar(image_path: str | Path, given: Any = None, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A study's sidecar for inference: ``given`` (a dict or its JSON text, e.g. from a request or
    ``--sidecar``) or else the JSON beside the image (none beside it: ``{}`` for a task that requires
    no key). Raises :class:`StudyError` / ValueError naming what is wrong or missing."""
    meta = given
    if isinstance(meta, (str, bytes)):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError as e:
            raise ValueError(f"the sidecar is not valid JSON: {e}") from None
    if meta is None:
        if not sidecar_path(image_path).exists() and not required:
            return {}
        meta = read_sidecar(image_path)
    if not isinstance(meta, dict):
        raise ValueError("the sidecar must be a JSON object")
    missing = [k for k in required if k not in meta]
    if missing:
        raise StudyError(f"sidecar lacks required key(s): {', '.join(missing)}")
    return meta


def task_studies(pairs, task: str):
    """Yield ``(image, label, sidecar)`` for the (image, label) path pairs whose sidecar names
    ``task``; studies without a readable sidecar or of other tasks are skipped (a datastore holds
    every task's studies side by side)."""
    for image, label in pairs:
        try:
            meta = read_sidecar(image)
        except ValueError:
            continue
        if meta.get("task") == task:
            yield image, label, meta


def load_isotropic(image) -> tuple[nib.Nifti1Image, float] | None:
    """``(image, voxel size in mm)`` of a NIfTI with isotropic voxels, or None (with a logged
    warning) when its voxels are anisotropic: the networks train on isotropic grids."""
    import logging

    img = nib.load(str(image))
    vs = np.asarray(voxel_size_mm(img.affine))
    if not np.allclose(vs, vs[0], rtol=1e-3):
        logging.getLogger(__name__).warning("skipping %s: anisotropic voxels %s mm", image, vs)
        return None
    return img, float(vs[0])


def isotropic_task_studies(pairs, task: str):
    """:func:`task_studies` restricted to images with isotropic voxels (others skipped by
    :func:`load_isotropic`): yields ``(image, label, sidecar, loaded NIfTI, voxel size in mm)``."""
    for image, label, meta in task_studies(pairs, task):
        loaded = load_isotropic(image)
        if loaded is not None:
            yield (image, label, meta) + loaded


def voxel_size_mm(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size (mm) per array axis from the affine's column norms."""
    return tuple(float(v) for v in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0)))


def save_nifti(array: np.ndarray, affine: np.ndarray, path: str | Path, compact: bool = False, descrip: str | None = None, intent_name: str | None = None) -> Path:
    """Save an array (3D, or 4D channels last) as NIfTI with spatial units of mm.

    ``descrip`` (at most 79 characters kept) and ``intent_name`` (at most 15; the intent is then
    NIFTI_INTENT_ESTIMATE, a parameter estimate) carry what a viewer should show beside the values:
    the maps' names and units.

    ``compact=True`` stores float data as int16 with the NIfTI scaling slope (max |value| / 32767):
    readers that apply scl_slope (nibabel, ITK, MONAI, Slicer) get the float values back to a
    relative precision of 3e-5 of the maximum, far below simulated noise, at a third of the size.
    """
    array = np.asarray(array)
    if compact and np.issubdtype(array.dtype, np.floating):
        peak = float(np.max(np.abs(array))) if array.size else 0.0
        slope = peak / 32767.0 if peak > 0 else 1.0
        img = nib.Nifti1Image(np.rint(array / slope).astype(np.int16), np.asarray(affine, dtype=np.float64))
        img.header.set_slope_inter(slope, 0.0)
    else:
        img = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm")
    if descrip:
        img.header["descrip"] = descrip.encode("ascii", "replace")[:79]
    if intent_name:
        img.header.set_intent("estimate", (), name=intent_name.encode("ascii", "replace")[:15].decode())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


def write_study(
    studies: str | Path,
    study_id: str,
    image: np.ndarray,
    affine: np.ndarray,
    sidecar: dict[str, Any],
    target: np.ndarray | None = None,
    compact: bool = False,
) -> Path:
    """Write one study (image, sidecar and optional ``labels/final`` target); returns the image path.

    ``compact`` stores float arrays as scaled int16 (see :func:`save_nifti`).
    """
    studies = Path(studies)
    meta = dict(sidecar)
    meta.setdefault("voxel_size_mm", list(voxel_size_mm(affine)))
    path = save_nifti(image, affine, studies / f"{study_id}.nii.gz", compact)
    (studies / f"{study_id}.json").write_text(json.dumps(meta, indent=2))
    if target is not None:
        save_nifti(target, affine, studies / LABEL_DIR / f"{study_id}.nii.gz", compact)
    return path
