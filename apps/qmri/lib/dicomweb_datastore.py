"""MONAI Label's DICOMweb datastore (a PACS such as Orthanc) for the qmri tasks.

``make serve STUDIES=http://127.0.0.1:8042/dicom-web`` starts the app on a PACS: study ids are
SeriesInstanceUIDs. MONAI Label's own DICOMweb datastore turns one series into one NIfTI, which
cannot make a multi-echo GRE input (echoes, magnitude and phase in separate series). Here an MR
series that belongs to a multi-echo acquisition is fetched with the other MR series of its study,
read by :mod:`qmri.io.dicom_input` and cached as the ``qsm_raw`` study (4D NIfTI + JSON sidecar:
echo times, B0 strength and direction from the headers). A CT, PET or T2-weighted MR series is read by
:mod:`qmri.io.dicom_images` (HU; SUV from the radiopharmaceutical headers, or a 422 naming what
SUV needs; the task in the sidecar); any other series is converted as MONAI Label does. A map can be stored back to the PACS as a DICOM Parametric Map
referencing its source series (:meth:`store_result`, the infer parameter ``store_pm``).

Uploads and labels are refused: on a PACS the images belong to the PACS.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Dict

from fastapi import HTTPException
from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.datastore.utils.dicom import dicom_web_download_series
from pydicom.dataset import Dataset

from qmri.io.atomic import atomic_write_text
from qmri.io.study import save_nifti

logger = logging.getLogger(__name__)

#: A DICOM UID: digits and dots, at most 64 characters.
UID = re.compile(r"[0-9][0-9.]{0,63}")


def check_uid(value: Any) -> str:
    if not isinstance(value, str) or not UID.fullmatch(value) or ".." in value:
        raise HTTPException(status_code=422, detail="a study id on this server is a DICOM SeriesInstanceUID (digits and dots, at most 64)")
    return value


class MultiEchoDICOMWebDatastore(DICOMWebDatastore):
    """See the module docstring."""

    def _series(self, **filters) -> list[Dataset]:
        return [Dataset.from_json(s) for s in self._client.search_for_series(search_filters=filters)]

    def _paths(self, series_uid: str) -> tuple[Path, Path]:
        folder = Path(self._datastore.image_path())
        return folder / f"{series_uid}.nii.gz", folder / f"{series_uid}.dicom"

    def get_image_uri(self, image_id: str) -> str:
        uid = check_uid(image_id)
        nii, dicom_dir = self._paths(uid)
        if nii.exists():
            return str(nii)
        found = self._series(SeriesInstanceUID=uid)
        if not found:
            return ""  # the app answers 404: unknown study
        meta = found[0]
        modality, study = str(meta.get("Modality", "")), str(meta.StudyInstanceUID)
        if modality == "MR":
            for s in self._series(StudyInstanceUID=study, Modality="MR"):
                sib = str(s.SeriesInstanceUID)
                if not (dicom_dir / sib).is_dir():
                    dicom_web_download_series(study, sib, str(dicom_dir / sib), self._client, self._fetch_by_frame)
            image = self._image_task_series(uid, study, dicom_dir / uid, required=False)  # a T2-weighted series
            if image is not None:
                return image
            from qmri.io.dicom_input import read_multi_echo

            try:
                me = read_multi_echo(dicom_dir, series_uid=uid)
            except ValueError as e:
                if "no multi-echo acquisition" not in str(e):
                    raise HTTPException(status_code=422, detail=f"series {uid}: {e}") from None
            else:
                data, sidecar = me.qsm_raw_study()
                sidecar["source"]["study_instance_uid"] = study
                save_nifti(data, me.affine, nii)
                atomic_write_text(nii.with_name(f"{uid}.json"), json.dumps(sidecar, indent=2))
                logger.info("series %s: multi-echo acquisition (%d echoes) cached as a qsm_raw study", uid, me.echoes)
                return str(nii)
        elif modality in ("CT", "PT"):
            series_dir = Path(self._datastore.image_path()) / uid  # where MONAI Label's own conversion keeps a series
            if not series_dir.is_dir() or not any(series_dir.iterdir()):
                dicom_web_download_series(study, uid, str(series_dir), self._client, self._fetch_by_frame)
            return self._image_task_series(uid, study, series_dir, required=True)
        return super().get_image_uri(uid)

    def _image_task_series(self, uid: str, study: str, folder: Path, required: bool) -> str | None:
        """The CT, PET or T2-weighted MR series in ``folder`` cached as its task's study (NIfTI +
        sidecar with the task, units and the source folder); None when it feeds no task and is
        not ``required``, else a 422 naming why (e.g. what SUV needs)."""
        from qmri.io.dicom_images import read_series_images

        nii, _ = self._paths(uid)
        try:
            images, skipped = read_series_images(folder)
        except ValueError as e:
            raise HTTPException(status_code=422, detail=f"series {uid}: {e}") from None
        images = [im for im in images if im.series_uid == uid]
        if not images:
            if not required:
                return None
            raise HTTPException(status_code=422, detail="; ".join(skipped) or f"series {uid}: no image in it")
        image = images[0]
        sidecar = {**image.meta, "source": {**image.meta["source"], "study_instance_uid": study, "folder": folder.name}}
        save_nifti(image.data, image.affine, nii)
        atomic_write_text(nii.with_name(f"{uid}.json"), json.dumps(sidecar, indent=2))
        logger.info("series %s: cached as a %s study", uid, image.task)
        return str(nii)

    def store_result(self, image_id: str, result_file: str, result_json: Dict[str, Any]) -> list[str]:
        """Store the result's first map as a Parametric Map referencing its source: the magnitude series
        (first echo) of a multi-echo acquisition, else the series itself; returns the new SeriesInstanceUIDs."""
        from qmri.io.dicom_input import scan
        from qmri.io.parametric_map import map_dataset

        uid = check_uid(image_id)
        nii, dicom_dir = self._paths(uid)
        side = nii.with_name(f"{uid}.json")
        cached = json.loads(side.read_text()) if side.is_file() else {}
        if cached.get("task") == "qsm_raw":  # a multi-echo acquisition: the map references its magnitude series
            acquisition = set(cached.get("source", {}).get("dicom_series", []))
            mags = sorted({s.series_uid for s in scan(dicom_dir) if s.part == "mag" and s.series_uid in acquisition})
            if len(mags) != 1:
                raise ValueError(f"series {uid}: no single magnitude series to reference ({len(mags)} found)")
            source, reference = dicom_dir, mags[0]
        else:  # a single series: the map references that series
            source, reference = (dicom_dir / uid if (dicom_dir / uid).is_dir() else Path(self._datastore.image_path()) / uid), uid
            if not source.is_dir():
                raise ValueError(f"series {uid} is not in the cache: infer it first")
        ds = map_dataset(result_file, source, series_uid=reference, maps=result_json.get("maps"))
        self._client.store_instances([ds])
        return [str(ds.SeriesInstanceUID)]

    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        raise HTTPException(status_code=403, detail="this server reads its studies from a PACS (DICOMweb): store images in the PACS, not here")

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        raise HTTPException(status_code=403, detail="this server reads its studies from a PACS (DICOMweb): labels cannot be stored here")
