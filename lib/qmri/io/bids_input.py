"""Inputs from a BIDS dataset (as dcm2niix and BIDS converters write it).

- **Multi-echo GRE** (``anat/sub-<s>[_ses-<x>]..._echo-<n>_part-mag|phase_MEGRE.nii[.gz]`` with a JSON
  sidecar holding ``EchoTime`` in s and ``MagneticFieldStrength`` in T): grouped per subject,
  session and the other entities (acq, run, ...) into one :class:`~qmri.io.multi_echo.MultiEcho`;
  a brain mask ``..._desc-brain_mask.nii[.gz]`` with the same entities (no echo/part) in the same
  folder is used when present.
- **T2w**, **CT** and **PET** images (``anat/*_T2w``, ``ct/*_ct`` or ``anat/*_ct``, ``pet/*_pet``) for the
  synthesis and PVC tasks; a PET's PSF comes from its JSON (``psf_fwhm_mm``, mm) when given.

Sidecars are read beside each image, then overlaid on any less specific JSON up the tree with the
same suffix (BIDS' inheritance principle, simplified to the file's own folder and the dataset root).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from .multi_echo import MultiEcho, phase_to_radians

ENTITY = re.compile(r"([a-zA-Z]+)-([a-zA-Z0-9]+)")
NII = (".nii.gz", ".nii")


def _stem(path: Path) -> str:
    for ext in NII:
        if path.name.endswith(ext):
            return path.name[: -len(ext)]
    return path.stem


def parse_name(path: Path) -> tuple[dict[str, str], str]:
    """(entities in order, suffix) of a BIDS file name."""
    parts = _stem(path).split("_")
    entities = {}
    for p in parts[:-1]:
        m = ENTITY.fullmatch(p)
        if m is None:
            raise ValueError(f"{path.name}: '{p}' is not a BIDS entity (key-value)")
        entities[m.group(1)] = m.group(2)
    return entities, parts[-1]


def sidecar(path: Path, root: Path) -> dict[str, Any]:
    """The JSON metadata of an image: the dataset root's ``<suffix>.json`` / ``<entities>_<suffix>.json``
    files that match it, overlaid by the JSON beside it."""
    entities, suffix = parse_name(path)
    meta: dict[str, Any] = {}
    for cand in sorted(root.glob(f"*{suffix}.json")):
        ents, suf = parse_name(cand)
        if suf == suffix and all(entities.get(k) == v for k, v in ents.items()):
            meta.update(json.loads(cand.read_text()))
    own = path.with_name(_stem(path) + ".json")
    if own.is_file():
        meta.update(json.loads(own.read_text()))
    return meta


@dataclass
class BidsAcquisition:
    """One multi-echo GRE acquisition in a dataset."""

    subject: str
    session: str | None
    entities: dict[str, str]  # all but echo and part
    magnitudes: list[Path]
    phases: list[Path]
    mask: Path | None

    @property
    def name(self) -> str:
        """The acquisition's BIDS prefix, e.g. ``sub-01_ses-1_acq-qsm``."""
        return prefix(self.entities)


def find_megre(root: str | Path) -> list[BidsAcquisition]:
    """Every multi-echo GRE acquisition under ``root`` (a BIDS dataset), sorted by name."""
    root = Path(root).expanduser()
    if not (root / "dataset_description.json").is_file():
        raise ValueError(f"{root} is not a BIDS dataset (no dataset_description.json)")
    groups: dict[tuple, dict[str, dict[int, Path]]] = defaultdict(lambda: {"mag": {}, "phase": {}})
    for f in sorted(root.glob("sub-*/**/anat/*_MEGRE.nii*")):
        if "derivatives" in f.relative_to(root).parts:
            continue
        ents, _ = parse_name(f)
        part = ents.pop("part", "mag")
        echo = ents.pop("echo", None)
        if echo is None:
            raise ValueError(f"{f.name}: a MEGRE file without an echo entity")
        if part not in ("mag", "phase"):
            continue  # real/imag parts are not used
        groups[(f.parent, tuple(ents.items()))][part][int(echo)] = f
    out = []
    for (folder, ents), parts in sorted(groups.items(), key=lambda kv: str(kv[0])):
        ents = dict(ents)
        mags = [parts["mag"][e] for e in sorted(parts["mag"])]
        phases = [parts["phase"][e] for e in sorted(parts["phase"])]
        stem = prefix(ents)
        mask = next((folder / f"{stem}_desc-brain_mask{ext}" for ext in NII if (folder / f"{stem}_desc-brain_mask{ext}").is_file()), None)
        out.append(BidsAcquisition(ents.get("sub", "?"), ents.get("ses"), ents, mags, phases, mask))
    return out


def _echo_time_ms(path: Path, root: Path) -> float:
    meta = sidecar(path, root)
    te = meta.get("EchoTime")
    if not isinstance(te, (int, float)) or isinstance(te, bool) or not te > 0:
        raise ValueError(f"{path.name}: its JSON sidecar has no positive EchoTime (seconds)")
    return float(te) * 1000.0


def read_megre(acq: BidsAcquisition, root: str | Path) -> MultiEcho:
    """The acquisition's magnitudes, phases (rad), affine, echo times (ms) and field strength (T)."""
    root = Path(root).expanduser()
    if not acq.magnitudes:
        raise ValueError(f"{acq.name}: phase images but no magnitudes (part-mag)")
    te = [_echo_time_ms(p, root) for p in acq.magnitudes]
    imgs = [nib.load(str(p)) for p in acq.magnitudes]
    affine = imgs[0].affine
    for p, img in zip(acq.magnitudes, imgs):
        if img.shape != imgs[0].shape or not np.allclose(img.affine, affine, atol=1e-3):
            raise ValueError(f"{p.name} is not on the grid of {acq.magnitudes[0].name}")
    mag = np.stack([np.asarray(i.dataobj, dtype=np.float32) for i in imgs], axis=-1)
    phase = None
    if acq.phases:
        if len(acq.phases) != len(acq.magnitudes):
            raise ValueError(f"{acq.name}: {len(acq.magnitudes)} magnitude echoes but {len(acq.phases)} phase echoes")
        pte = [_echo_time_ms(p, root) for p in acq.phases]
        if not np.allclose(pte, te, atol=1e-3):
            raise ValueError(f"{acq.name}: phase echo times {pte} ms differ from the magnitudes' {te} ms")
        arrays = []
        for p in acq.phases:
            img = nib.load(str(p))
            if img.shape != imgs[0].shape or not np.allclose(img.affine, affine, atol=1e-3):
                raise ValueError(f"{p.name} is not on the grid of the magnitudes")
            arrays.append(phase_to_radians(np.asarray(img.dataobj, dtype=np.float32), p.name))
        phase = np.stack(arrays, axis=-1)
    b0 = sidecar(acq.magnitudes[0], root).get("MagneticFieldStrength")
    b0 = float(b0) if isinstance(b0, (int, float)) and not isinstance(b0, bool) and b0 > 0 else None
    source = {"bids": [str(p.relative_to(root)) for p in acq.magnitudes + acq.phases]}
    return MultiEcho(mag, phase, affine, te, b0, source)


def read_mask(acq: BidsAcquisition, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray | None:
    """The acquisition's brain mask, if the dataset has one on its grid."""
    if acq.mask is None:
        return None
    img = nib.load(str(acq.mask))
    if img.shape[:3] != tuple(shape) or not np.allclose(img.affine, affine, atol=1e-3):
        raise ValueError(f"{acq.mask.name} is not on the grid of the echoes")
    return np.asarray(img.dataobj) > 0


#: Single-image inputs: BIDS suffix -> the task they feed.
IMAGE_TASKS = {"T2w": "synthetic_ct", "ct": "synthetic_mr", "pet": "pvc"}


def prefix(entities: dict[str, str]) -> str:
    """The BIDS name prefix of these entities, e.g. ``sub-01_ses-1_acq-qsm``."""
    return "_".join(f"{k}-{v}" for k, v in entities.items())


def read_image(path: Path, root: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(float32 array, affine, study sidecar) of a T2w, ct or pet image: the task it feeds and, for
    PET, the PSF FWHM (mm) from its JSON's ``psf_fwhm_mm`` when given."""
    _, suf = parse_name(path)
    if suf not in IMAGE_TASKS:
        raise ValueError(f"{path.name}: a {suf} image feeds no task; expected one of {', '.join(IMAGE_TASKS)}")
    root = Path(root).expanduser()
    img = nib.load(str(path))
    meta: dict[str, Any] = {"task": IMAGE_TASKS[suf], "modality": suf, "source": {"bids": [str(path.relative_to(root))]}}
    side = sidecar(path, root)
    if suf == "pet" and "psf_fwhm_mm" in side:
        meta["psf_fwhm_mm"] = side["psf_fwhm_mm"]
    return np.asarray(img.dataobj, dtype=np.float32), img.affine, meta


def find_images(root: str | Path, suffix: str) -> list[Path]:
    """Images with ``suffix`` (``T2w``, ``ct``, ``pet``) in the raw dataset, sorted."""
    root = Path(root).expanduser()
    return sorted(f for f in root.glob(f"sub-*/**/*_{suffix}.nii*") if "derivatives" not in f.relative_to(root).parts)
