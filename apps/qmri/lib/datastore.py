"""MONAI Label's local datastore, keeping the project's study layout for uploads.

An upload (``PUT /datastore/image``) carries the study's acquisition metadata as its ``params``
(echo times, B0 direction, PSF FWHM, task...). MONAI Label keeps params only in its index; the
tasks and trainers read the JSON sidecar beside each study (:mod:`qmri.io.study`), so the params are
also written there.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict

from monailabel.datastore.local import LocalDatastore

logger = logging.getLogger(__name__)

BOOKKEEPING = {"ts", "name", "user", "client_id", "checksum"}  # MONAI Label's own info keys


class SidecarDatastore(LocalDatastore):
    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        meta = {k: v for k, v in dict(image_info or {}).items() if k not in BOOKKEEPING}
        if isinstance(meta.get("sidecar"), dict):
            meta = meta["sidecar"]
        image_id = super().add_image(image_id, image_filename, image_info)
        if meta:
            path = Path(self._datastore.image_path()) / f"{image_id}.json"
            path.write_text(json.dumps(meta, indent=2))
            logger.info("sidecar of %s written from the upload's params", image_id)
        return image_id
