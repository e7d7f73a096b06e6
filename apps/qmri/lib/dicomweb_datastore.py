"""MONAI Label's DICOMweb datastore (a PACS such as Orthanc) for the qmri tasks.

``make serve STUDIES=http://127.0.0.1:8042/dicom-web`` starts the app on a PACS: study ids are
SeriesInstanceUIDs. MONAI Label's own DICOMweb datastore turns one series into one NIfTI, which
cannot make a multi-echo GRE input (echoes, magnitude and phase in separate series). Here an MR
series that belongs to a multi-echo acquisition is fetched with the other MR series of its study,
read by :mod:`qmri.io.dicom_input` and cached as the ``qsm_raw`` study (4D NIfTI + JSON sidecar:
echo times, B0 strength and direction from the headers); any other series (a T2w, a CT, a PET) is
converted as MONAI Label does. A map can be stored back to the PACS as a DICOM Parametric Map
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
        if str(meta.get("Modality", "")) == "MR":
            study = str(meta.StudyInstanceUID)
            for s in self._series(StudyInstanceUID=study, Modality="MR"):
                sib = str(s.SeriesInstanceUID)
                if not (dicom_dir / sib).is_dir():
                    dicom_web_download_series(study, sib, str(dicom_dir / sib), self._client, self._fetch_by_frame)
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
        return super().get_image_uri(uid)

    def store_result(self, image_id: str, result_file: str, result_json: Dict[str, Any]) -> list[str]:
        """Store the result's first map as a Parametric Map referencing its source: the magnitude series
        (first echo) of a multi-echo acquisition, else the series itself; returns the new SeriesInstanceUIDs."""
        from qmri.io.dicom_input import scan
        from qmri.io.parametric_map import map_dataset

        uid = check_uid(image_id)
        _, dicom_dir = self._paths(uid)
        if dicom_dir.is_dir():  # a multi-echo acquisition: the map references its magnitude series
            mags = sorted({s.series_uid for s in scan(dicom_dir) if s.part == "mag"})
            if len(mags) != 1:
                raise ValueError(f"series {uid}: no single magnitude series to reference ({len(mags)} found)")
            source, reference = dicom_dir, mags[0]
        else:  # a single series converted as MONAI Label does: the map references that series
            source, reference = Path(self._datastore.image_path()) / uid, uid
            if not source.is_dir():
                raise ValueError(f"series {uid} is not in the cache: infer it first")
        ds = map_dataset(result_file, source, series_uid=reference, maps=result_json.get("maps"))
        self._client.store_instances([ds])
        return [str(ds.SeriesInstanceUID)]

    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        raise HTTPException(status_code=403, detail="this server reads its studies from a PACS (DICOMweb): store images in the PACS, not here")

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        raise HTTPException(status_code=403, detail="this server reads its studies from a PACS (DICOMweb): labels cannot be stored here")
