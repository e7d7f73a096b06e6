"""``qmri import dicom|bids SRC --studies DIR``: scanner data -> studies in the app's layout
(:mod:`qmri.io.study`: ``<id>.nii.gz`` + ``<id>.json`` with the task and acquisition metadata), ready
for ``make serve STUDIES=DIR``, ``qmri infer`` or training.

- DICOM: the folder's multi-echo GRE -> one ``qsm_raw`` study (:mod:`qmri.io.dicom_input`).
- BIDS: every multi-echo GRE -> ``qsm_raw``; every ``T2w`` -> ``synthetic_ct``; every ``ct`` ->
  ``synthetic_mr``; every ``pet`` -> ``pvc`` (with ``psf_fwhm_mm`` from its JSON when given).

Existing studies are kept unless ``overwrite``: an import never replaces what a user stored.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text
from .study import save_nifti

#: The datastore's id rule (apps/qmri/lib/datastore.py): letters, digits, '_', '-', '.'.
ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _check_id(study_id: str) -> str:
    if not ID.fullmatch(study_id) or ".." in study_id:
        raise ValueError(f"invalid study id {study_id!r}: use 1-128 letters, digits, '_', '-' or '.', starting with a letter or digit")
    return study_id


def write_study(studies: str | Path, study_id: str, data: np.ndarray, affine: np.ndarray, sidecar: dict, overwrite: bool = False) -> Path:
    """Write one study (float32 NIfTI + JSON sidecar); FileExistsError when it exists and not ``overwrite``."""
    studies = Path(studies).expanduser()
    path = studies / f"{_check_id(study_id)}.nii.gz"
    if path.exists() and not overwrite:
        raise FileExistsError(f"study {study_id} already exists in {studies}: pass --overwrite to replace it")
    studies.mkdir(parents=True, exist_ok=True)
    save_nifti(np.asarray(data, dtype=np.float32), affine, path)
    atomic_write_text(studies / f"{study_id}.json", json.dumps(sidecar, indent=2))
    return path


def import_dicom(source: str | Path, studies: str | Path, study_id: str | None = None, series_uid: str | None = None, overwrite: bool = False) -> list[Path]:
    """The multi-echo GRE in ``source`` as a ``qsm_raw`` study (id: the patient's folder name + ``_qsmraw``
    unless given)."""
    from .dicom_input import read_multi_echo

    me = read_multi_echo(source, series_uid=series_uid)
    data, meta = me.qsm_raw_study()
    study_id = study_id or re.sub(r"[^A-Za-z0-9_.-]", "_", Path(source).name).lstrip("._-") + "_qsmraw"
    return [write_study(studies, study_id, data, me.affine, meta, overwrite)]


def import_bids(dataset: str | Path, studies: str | Path, overwrite: bool = False) -> list[Path]:
    """Every usable acquisition of a BIDS dataset as studies (ids: the BIDS prefix + the task)."""
    from . import bids_input as bi

    dataset = Path(dataset).expanduser()
    written = []
    for acq in bi.find_megre(dataset):
        me = bi.read_megre(acq, dataset)
        data, meta = me.qsm_raw_study(bi.read_mask(acq, me.magnitude.shape[:3], me.affine))
        written.append(write_study(studies, f"{acq.name}_qsmraw", data, me.affine, meta, overwrite))
    for suffix in bi.IMAGE_TASKS:
        for path in bi.find_images(dataset, suffix):
            data, affine, meta = bi.read_image(path, dataset)
            written.append(write_study(studies, f"{bi.prefix(bi.parse_name(path)[0])}_{suffix.lower()}", data, affine, meta, overwrite))
    if not written:
        raise ValueError(f"nothing to import from {dataset}: no multi-echo GRE (MEGRE), T2w, ct or pet images")
    return written
