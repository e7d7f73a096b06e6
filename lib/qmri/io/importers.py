"""``qmri import dicom|bids SRC --studies DIR``: scanner data -> studies in the app's layout
(:mod:`qmri.io.study`: ``<id>.nii.gz`` + ``<id>.json`` with the task and acquisition metadata), ready
for ``make serve STUDIES=DIR``, ``qmri infer`` or training.

- DICOM: the folder's multi-echo GRE -> one ``qsm_raw`` study (:mod:`qmri.io.dicom_input`); each
  CT series -> ``synthetic_mr``, PET series -> ``pvc`` (in SUV) and T2-weighted MR series ->
  ``synthetic_ct`` (:mod:`qmri.io.dicom_images`).
- BIDS: every multi-echo GRE -> ``qsm_raw``; every ``T2w`` -> ``synthetic_ct``; every ``ct`` ->
  ``synthetic_mr``; every ``pet`` -> ``pvc`` (with ``psf_fwhm_mm`` from its JSON when given).

Existing studies are kept unless ``overwrite``: an import never replaces what a user stored.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text
from .study import save_nifti

#: The datastore's id rule (apps/qmri/lib/datastore.py): letters, digits, '_', '-', '.'.
ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
log = logging.getLogger(__name__)


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


def import_dicom(source: str | Path, studies: str | Path, study_id: str | None = None, series_uid: str | None = None, overwrite: bool = False, psf_fwhm_mm: float | None = None) -> list[Path]:
    """Every usable acquisition in ``source`` as a study: the multi-echo GRE as ``qsm_raw`` (id: the
    folder's name + ``_qsmraw``), each CT, PET and T2-weighted MR series as ``synthetic_mr``,
    ``pvc`` and ``synthetic_ct`` (id: the folder's name + ``_ct``, ``_pet`` or ``_t2w``, + ``_s`` and
    the series number when the folder holds several of a kind). ``series_uid``: only the acquisition
    containing this series; ``study_id``: the id, when one study is written; ``psf_fwhm_mm``: the PET
    scanner's resolution (mm), recorded for PVC. Series that feed no task are logged; a folder with
    nothing usable raises ValueError naming what each series lacked."""
    from .dicom_images import read_series_images
    from .dicom_input import read_multi_echo

    if psf_fwhm_mm is not None and not 0 < float(psf_fwhm_mm) < 30:
        raise ValueError(f"psf_fwhm_mm {psf_fwhm_mm} must be the PET resolution in mm, between 0 and 30")

    name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(source).name).lstrip("._-") or "dicom"
    found: list[tuple[str, object, object, dict]] = []  # (id suffix, data, affine, sidecar)
    problems: list[str] = []
    try:
        me = read_multi_echo(source, series_uid=series_uid)
        data, meta = me.qsm_raw_study()
        found.append(("qsmraw", data, me.affine, meta))
    except ValueError as e:
        problems.append(f"multi-echo GRE: {e}")
    images, skipped = read_series_images(source)
    problems += skipped
    images = [im for im in images if series_uid is None or im.series_uid == series_uid]
    suffix = {"synthetic_mr": "ct", "pvc": "pet", "synthetic_ct": "t2w"}
    for im in images:
        tag = suffix[im.task]
        if sum(suffix[o.task] == tag for o in images) > 1:
            tag += f"_s{im.meta.get('series_number') or images.index(im) + 1}"
        meta = dict(im.meta)
        if im.task == "pvc" and psf_fwhm_mm is not None:
            meta["psf_fwhm_mm"] = float(psf_fwhm_mm)
        found.append((tag, im.data, im.affine, meta))
    if not found:
        raise ValueError(f"nothing to import from {source}: " + "; ".join(problems))
    for p in problems:
        log.info("not imported: %s", p)
    if study_id is not None and len(found) > 1:
        raise ValueError(f"--id names one study, but {source} holds {len(found)} ({', '.join(t for t, *_ in found)}): choose one with --series-uid")
    return [write_study(studies, study_id or f"{name}_{tag}", data, affine, meta, overwrite) for tag, data, affine, meta in found]


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
