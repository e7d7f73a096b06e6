"""BIDS derivatives: where a task's maps go in ``<dataset>/derivatives/qmri/`` and what their JSON says.

File names keep the source's entities (sub, ses, acq, run, ...), add ``desc-<method>`` and take the
BIDS quantitative-MRI suffix where one exists (``Chimap`` for susceptibility, ``R2map``, ``S0map``);
maps BIDS has no suffix for (OEF, venous oxygenation, blood volume, ...) get ``<name>map`` and say so
in their JSON (``"BIDSStandardSuffix": false``). Every map has a JSON sidecar with its ``Units``, the
method, the weights it ran with (sha256) and its ``Sources`` (BIDS URIs of the inputs).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

from .atomic import atomic_write_text

PIPELINE = "qmri"
#: Map name -> BIDS suffix (BIDS 1.10 quantitative maps).
BIDS_SUFFIX = {"chi": "Chimap", "R2": "R2map", "S0": "S0map"}
BIDS_VERSION = "1.10.0"


def suffix(map_name: str) -> tuple[str, bool]:
    """(suffix, whether BIDS defines it) for a map."""
    if map_name in BIDS_SUFFIX:
        return BIDS_SUFFIX[map_name], True
    return re.sub(r"[^A-Za-z0-9]", "", map_name) + "map", False


def derivatives_root(dataset: str | Path) -> Path:
    return Path(dataset) / "derivatives" / PIPELINE


def write_dataset_description(dataset: str | Path, version: str) -> Path:
    """``derivatives/qmri/dataset_description.json`` (kept when it exists)."""
    root = derivatives_root(dataset)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "dataset_description.json"
    if not path.exists():
        desc = {
            "Name": "qmri quantitative maps",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": PIPELINE, "Version": version, "Description": "OEF, QSM, PET PVC and synthetic CT/MR maps (MONAI Label app)"}],
            "SourceDatasets": [{"URL": "../../"}],
        }
        atomic_write_text(path, json.dumps(desc, indent=2))
    return path


def map_path(dataset: str | Path, subject: str, session: str | None, entities: Mapping[str, str], datatype: str, method: str, map_name: str) -> Path:
    """Where one map of one acquisition goes."""
    ents = {k: v for k, v in entities.items() if k not in ("echo", "part", "desc")}
    ents["desc"] = re.sub(r"[^A-Za-z0-9]", "", method)
    stem = "_".join(f"{k}-{v}" for k, v in ents.items()) + "_" + suffix(map_name)[0]
    folder = derivatives_root(dataset) / f"sub-{subject}" / (f"ses-{session}" if session else "") / datatype
    return folder / f"{stem}.nii.gz"


def map_sidecar(map_info: Mapping[str, Any], task: str, method: str, weights: Any, sources: list[str], seconds: float) -> dict[str, Any]:
    """The JSON beside one derivative map."""
    name = str(map_info["name"])
    suf, standard = suffix(name)
    return {
        "Units": map_info.get("units", ""),
        "Description": map_info.get("description") or name,
        "MapName": name,
        "Task": task,
        "Method": method,
        "Weights": weights,
        "Sources": [f"bids:raw:{s}" for s in sources],
        "BIDSStandardSuffix": standard,
        "ProcessingSeconds": round(float(seconds), 3),
    }
