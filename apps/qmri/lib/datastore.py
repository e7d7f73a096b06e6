"""MONAI Label's local datastore, hardened, keeping the project's study layout for uploads.

MONAI Label's ``LocalDatastore`` joins client-given ids, tags and file names into paths, replaces
an existing study (dropping its labels from the index) and copies files in place. This subclass
keeps its index and folder layout but refuses, with a 4xx naming the problem:

- ids that are not plain names (:data:`ID_PATTERN`: no ``/``, ``..``, NUL, newline, absolute path);
- files that are not ``.nii``/``.nii.gz`` NIfTI, and images whose header declares more voxels or
  bytes than the server's limits (checked on the header before anything is stored);
- label tags outside the allow-list (``final``), and labels whose grid differs from their image;
- replacing an existing study or ``final`` label unless the upload's params say ``"overwrite": true``;
- deleting anything unless the server enables it (``QMRI_ENABLE_DELETE``).

An upload's params may hold ``sidecar`` (a JSON object of acquisition metadata: echo times, B0
direction, PSF FWHM...), which is written as the JSON sidecar beside the study (the tasks and
trainers read it, :mod:`qmri.io.study`), and ``overwrite``. Every file is written atomically: a
temporary file in the destination folder, then ``os.replace``; a failed write leaves nothing.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Dict

import nibabel as nib
import numpy as np
from fastapi import HTTPException
from filelock import FileLock
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore

from qmri.io.atomic import atomic_copy, atomic_write_text
from qmri.io.nifti_input import InputTooLarge, check_input_header, check_nifti_complete, check_nifti_header
from qmri.io.study import NIFTI_EXTS
from qmri.training.training_case import check_training_case

from .server.policy import POLICY, ServerPolicy

logger = logging.getLogger(__name__)

#: A study id: a plain file-name stem (letters, digits, ``_``, ``-``, ``.``; no ``..``), 1-128 chars.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
#: Keys an upload's params may carry (MONAI Label's client adds ``user``/``client_id``).
UPLOAD_PARAMS = {"sidecar", "overwrite", "user", "client_id", "train_for"}
MAX_SIDECAR_BYTES = 64 * 1024


def _show(value: Any, n: int = 60) -> str:
    s = repr(value)
    return s if len(s) <= n else s[: n - 3] + "..."


def check_id(value: Any, what: str = "study id") -> str:
    """``value`` if it is a valid id, else HTTP 422 naming the rule."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value) or ".." in value or value.endswith((".nii", ".nii.gz", ".json")):
        shown = "(a path)" if isinstance(value, str) and ("/" in value or "\\" in value) else _show(value)  # paths are not echoed
        raise HTTPException(status_code=422, detail=f"invalid {what} {shown}: use 1-128 letters, digits, '_', '-' or '.', starting with a letter or digit, no '..', no path, no file extension")
    return value


def nifti_ext(filename: str) -> str:
    """The NIfTI extension of an uploaded file's name, else HTTP 415."""
    for ext in NIFTI_EXTS:
        if filename.endswith(ext):
            return ext
    raise HTTPException(status_code=415, detail=f"only NIfTI files (.nii or .nii.gz) can be stored; got a file named {_show(os.path.basename(filename))}")


def upload_params(info: Dict[str, Any] | None) -> tuple[dict | None, bool]:
    """(sidecar or None, overwrite) from an upload's params; HTTP 422 for anything else."""
    info = dict(info or {})
    for k in ("ts", "name", "checksum"):  # MONAI Label's own bookkeeping, never a client's
        info.pop(k, None)
    unknown = sorted(set(info) - UPLOAD_PARAMS)
    if unknown:
        raise HTTPException(status_code=422, detail=f"unknown upload parameter(s) {_show(unknown)}; allowed: sidecar (JSON object), overwrite (true/false), train_for (a label's training task)")
    overwrite = info.get("overwrite", False)
    if not isinstance(overwrite, bool):
        raise HTTPException(status_code=422, detail=f"upload parameter 'overwrite' must be true or false, got {_show(overwrite)}")
    sidecar = info.get("sidecar")
    if isinstance(sidecar, str):
        try:
            sidecar = json.loads(sidecar)
        except json.JSONDecodeError as e:
            raise HTTPException(status_code=422, detail=f"upload parameter 'sidecar' is not valid JSON: {e.msg}") from None
        except RecursionError:
            raise HTTPException(status_code=422, detail="upload parameter 'sidecar' is nested too deeply") from None
    if sidecar is not None:
        if not isinstance(sidecar, dict):
            raise HTTPException(status_code=422, detail=f"upload parameter 'sidecar' must be a JSON object, got {type(sidecar).__name__}")
        try:
            text = json.dumps(sidecar, allow_nan=False)
        except ValueError:
            raise HTTPException(status_code=422, detail="upload parameter 'sidecar' contains NaN or Infinity") from None
        except RecursionError:
            raise HTTPException(status_code=422, detail="upload parameter 'sidecar' is nested too deeply") from None
        if len(text) > MAX_SIDECAR_BYTES:
            raise HTTPException(status_code=413, detail=f"upload parameter 'sidecar' is {len(text)} bytes; the limit is {MAX_SIDECAR_BYTES}")
    return sidecar, overwrite


def check_upload(path: str, policy: ServerPolicy):
    """The header of an uploaded NIfTI, checked against the policy's limits and the tasks' input
    rules (real numbers, 3D/4D...); no voxel data is read."""
    try:
        info = check_nifti_header(path, max_bytes=policy.max_image_mb * 1024 * 1024)
        header = nib.load(path).header  # header only: the size was checked above
        check_input_header(header, max_voxels=policy.max_voxels)
        check_nifti_complete(path, info)  # a truncated upload would fail only when first used
        return header
    except InputTooLarge as e:
        raise HTTPException(status_code=413, detail=str(e)) from None
    except ValueError as e:
        raise HTTPException(status_code=422, detail=str(e)) from None


class SidecarDatastore(LocalDatastore):
    def __init__(self, *args, policy: ServerPolicy = POLICY, **kwargs):
        super().__init__(*args, **kwargs)
        self.policy = policy

    # --- writes -------------------------------------------------------------------------------
    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        image_id = check_id(image_id)
        ext = nifti_ext(image_filename)
        sidecar, overwrite = upload_params(image_info)
        if "train_for" in (image_info or {}):
            raise HTTPException(status_code=422, detail="upload parameter 'train_for' belongs to the label upload (PUT /datastore/label), not the image")
        check_upload(image_filename, self.policy)
        folder = Path(self._datastore.image_path())
        dest = folder / f"{image_id}{ext}"
        with FileLock(self._lock_file):
            old = self._datastore.objects.get(image_id)
            if (old is not None or dest.exists()) and not overwrite:
                raise HTTPException(status_code=409, detail=f"study '{image_id}' already exists; upload with params {{\"overwrite\": true}} to replace its image (its labels are kept)")
            atomic_copy(image_filename, dest)
            if old is not None and old.image.ext != ext:  # the replaced image had the other extension
                (folder / f"{image_id}{old.image.ext}").unlink(missing_ok=True)
            if sidecar is not None:
                atomic_write_text(folder / f"{image_id}.json", json.dumps(sidecar, indent=2))
                logger.info("sidecar of %s written from the upload's params", image_id)
            info = {"ts": int(time.time()), "name": dest.name, **({"user": image_info["user"]} if isinstance((image_info or {}).get("user"), str) else {})}
            self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=ext), labels=old.labels if old is not None else {})
            self._update_datastore_file(lock=False)
        return image_id

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        image_id = check_id(image_id)
        if label_tag not in self.policy.label_tags:
            raise HTTPException(status_code=422, detail=f"label tag {_show(label_tag)} is not accepted; allowed: {', '.join(self.policy.label_tags)}")
        obj = self._datastore.objects.get(image_id)
        if obj is None:
            raise HTTPException(status_code=404, detail=f"unknown study '{image_id}': upload the image first")
        ext = nifti_ext(label_filename)
        _, overwrite = upload_params(label_info)
        header = check_upload(label_filename, self.policy)
        image_header = nib.load(self.get_image_uri(image_id)).header
        if tuple(header.get_data_shape()[:3]) != tuple(image_header.get_data_shape()[:3]) or not np.allclose(header.get_best_affine(), image_header.get_best_affine(), atol=1e-3):
            raise HTTPException(status_code=422, detail=f"the label's grid (shape {tuple(header.get_data_shape())}) differs from study '{image_id}' (shape {tuple(image_header.get_data_shape())}) or its affine: a label must lie on its image's grid")
        train_for = (label_info or {}).get("train_for")
        if train_for is not None:  # a case sent for training: refuse what the trainer would skip
            if label_tag != "final" or not isinstance(train_for, str):
                raise HTTPException(status_code=422, detail="upload parameter 'train_for' names a training task (a string), for a 'final' label")
            try:
                check_training_case(train_for, self.get_image_uri(image_id), label_filename)
            except ValueError as e:
                raise HTTPException(status_code=422, detail=f"study '{image_id}' is not a usable training case: {e}") from None
        folder = Path(self._datastore.label_path(label_tag))
        dest = folder / f"{image_id}{ext}"
        with FileLock(self._lock_file):
            if (label_tag in obj.labels or dest.exists()) and not overwrite:
                raise HTTPException(status_code=409, detail=f"study '{image_id}' already has a '{label_tag}' label; upload with params {{\"overwrite\": true}} to replace it")
            folder.mkdir(parents=True, exist_ok=True)
            atomic_copy(label_filename, dest)
            obj.labels[label_tag] = DataModel(info={"ts": int(time.time()), "name": dest.name}, ext=ext)
            self._update_datastore_file(lock=False)
        return image_id

    def remove_image(self, image_id: str) -> None:
        self._require_delete()
        image_id = check_id(image_id)
        if image_id not in self._datastore.objects:
            raise HTTPException(status_code=404, detail=f"unknown study '{image_id}'")
        super().remove_image(image_id)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        self._require_delete()
        label_id = check_id(label_id)
        if not self._datastore.label(label_id, label_tag):
            raise HTTPException(status_code=404, detail=f"study '{label_id}' has no label tagged {_show(label_tag)}")
        super().remove_label(label_id, label_tag)

    def get_dataset_archive(self, limit_cases):
        if not self.policy.enable_dataset_download:
            raise HTTPException(status_code=403, detail="dataset download is disabled on this server (QMRI_ENABLE_DATASET_DOWNLOAD=1 enables it)")
        return super().get_dataset_archive(limit_cases)

    # --- reads: no server paths in answers ------------------------------------------------------
    def get_image_info(self, image_id: str) -> Dict[str, Any]:
        info = super().get_image_info(image_id)
        info.pop("path", None)
        return info

    def get_label_info(self, label_id: str, label_tag: str) -> Dict[str, Any]:
        info = super().get_label_info(label_id, label_tag)
        info.pop("path", None)
        return info

    # --- helpers --------------------------------------------------------------------------------
    def _require_delete(self) -> None:
        if not self.policy.enable_delete:
            raise HTTPException(status_code=403, detail="deleting studies or labels is disabled on this server (QMRI_ENABLE_DELETE=1 enables it)")
