"""Multi-echo GRE from DICOM: a folder (or files) of MR images -> :class:`~qmri.io.multi_echo.MultiEcho`.

Headers are read with pydicom (no pixel data) and grouped into series (SeriesInstanceUID), echoes
(EchoNumbers, else EchoTime) and magnitude/phase (ImageType value 3: ``M`` or ``P``, also when a
scanner stores both in one series); each echo's slices are sorted along the slice normal and read
by SimpleITK (pixel data, rescale slope/intercept, geometry in LPS), then turned into nibabel's
(i, j, k) arrays with a RAS+ affine. Echo times come from EchoTime (ms), B0 from
MagneticFieldStrength (T); phases are converted to radians (:func:`~qmri.io.multi_echo.phase_to_radians`).

Errors name what is missing or inconsistent: no MR images, several multi-echo acquisitions without
a series chosen, no phase, echoes with different slice counts or orientations, unequal slice gaps,
real/imaginary instead of magnitude/phase, and enhanced multi-frame files (not read here: dcm2niix
converts them, then ``qmri import bids``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pydicom
import SimpleITK as sitk

from .multi_echo import MultiEcho, phase_to_radians

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Slice:
    path: Path
    series_uid: str
    series_description: str
    frame_of_reference: str
    part: str  # "mag" or "phase"
    echo_number: int
    echo_time_ms: float
    position: np.ndarray  # ImagePositionPatient (LPS, mm)
    orientation: np.ndarray  # ImageOrientationPatient (6 values)
    field_strength_t: float | None


ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


def _part(ds) -> str:
    """ "mag", "phase", "real" or "imag" from ImageType (value 3 on Siemens/Philips, words elsewhere)."""
    image_type = [str(x).upper() for x in getattr(ds, "ImageType", [])]
    flags = set(image_type[2:]) | {t for t in image_type if len(t) > 1}
    if flags & {"P", "PHASE"}:
        return "phase"
    if flags & {"R", "REAL"}:
        return "real"
    if flags & {"I", "IMAGINARY"}:
        return "imag"
    return "mag"


def _files(source: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(source, (str, Path)):
        p = Path(source).expanduser()
        if p.is_dir():
            return sorted(f for f in p.rglob("*") if f.is_file())
        if p.is_file():
            return [p]
        raise FileNotFoundError(f"{p}: no such file or folder")
    return [Path(f) for f in source]


def scan(source: str | Path | Iterable[str | Path], modalities: tuple[str, ...] | None = ("MR",)) -> list[Slice]:
    """The image slices among the files of these modalities (None: any); others, e.g. DICOMDIR or
    non-DICOM files, are skipped."""
    out, enhanced = [], 0
    for f in _files(source):
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError):
            continue
        if getattr(ds, "Modality", "") == "MR" and (str(getattr(ds, "SOPClassUID", "")) == ENHANCED_MR or int(getattr(ds, "NumberOfFrames", 1) or 1) > 1):
            enhanced += 1
            continue
        if (modalities is not None and getattr(ds, "Modality", "") not in modalities) or "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            continue
        te = float(getattr(ds, "EchoTime", 0) or 0)
        echo = getattr(ds, "EchoNumbers", None)
        strength = getattr(ds, "MagneticFieldStrength", None)
        out.append(
            Slice(
                path=f,
                series_uid=str(ds.SeriesInstanceUID),
                series_description=str(getattr(ds, "SeriesDescription", "")),
                frame_of_reference=str(getattr(ds, "FrameOfReferenceUID", "")),
                part=_part(ds),
                echo_number=int(echo) if echo not in (None, "") else -1,
                echo_time_ms=te,
                position=np.array([float(x) for x in ds.ImagePositionPatient]),
                orientation=np.array([float(x) for x in ds.ImageOrientationPatient]),
                field_strength_t=float(strength) if strength not in (None, "") else None,
            )
        )
    if enhanced and not out:
        raise ValueError(
            f"{enhanced} enhanced multi-frame MR file(s) (one file per series) and no single-frame MR images: this reader takes classic single-frame series; convert the enhanced files with dcm2niix (BIDS output, then 'qmri import bids') or export classic images from the scanner"
        )
    return out


def _read_echo(slices: list[Slice], what: str) -> tuple[np.ndarray, np.ndarray]:
    """One echo's slices -> ((i, j, k) float32 array, RAS affine)."""
    iop = slices[0].orientation
    if any(not np.allclose(s.orientation, iop, atol=1e-4) for s in slices):
        raise ValueError(f"{what}: slices with different orientations (ImageOrientationPatient); one acquisition has one")
    normal = np.cross(iop[:3], iop[3:])
    order = sorted(slices, key=lambda s: float(np.dot(s.position, normal)))
    d = np.diff([float(np.dot(s.position, normal)) for s in order])
    if d.size and (np.any(d <= 1e-6) or np.ptp(d) > 1e-3 * max(1.0, float(d.mean()))):
        raise ValueError(f"{what}: slice positions are duplicated or unevenly spaced (gaps {np.round(d, 3).tolist()[:6]} mm)")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(s.path) for s in order])
    img = reader.Execute()
    arr = np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0)).astype(np.float32)  # (k, j, i) -> (i, j, k)
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(img.GetDirection()).reshape(3, 3) @ np.diag(img.GetSpacing())
    lps[:3, 3] = img.GetOrigin()
    return arr, LPS_TO_RAS @ lps


def acquisitions(slices: list[Slice]) -> dict[str, list[Slice]]:
    """Multi-echo acquisitions by frame of reference + orientation (magnitude and phase series of
    one acquisition share them); a key names the series in it."""
    groups: dict[str, list[Slice]] = defaultdict(list)
    for s in slices:
        groups[f"{s.frame_of_reference}|{np.round(s.orientation, 3).tolist()}"].append(s)
    return {k: v for k, v in groups.items() if len({(s.echo_number, s.echo_time_ms) for s in v}) > 1}


def read_multi_echo(source: str | Path | Iterable[str | Path], series_uid: str | None = None) -> MultiEcho:
    """The multi-echo GRE acquisition in ``source`` (a folder or files). ``series_uid``: pick the
    acquisition containing this series when the folder holds several."""
    slices = scan(source)
    if not slices:
        raise ValueError(f"no MR images with position and orientation were found in {source}")
    if series_uid is not None:
        chosen = [s for s in slices if s.series_uid == series_uid]
        if not chosen:
            raise ValueError(f"no MR series {series_uid} in {source}")
        ref = chosen[0]
        slices = [s for s in slices if s.frame_of_reference == ref.frame_of_reference and np.allclose(s.orientation, ref.orientation, atol=1e-4)]
    groups = acquisitions(slices)
    if not groups:
        raise ValueError(f"no multi-echo acquisition in {source}: every series has a single echo time")
    if len(groups) > 1:
        names = sorted({f"{s.series_uid} ({s.series_description})" for g in groups.values() for s in g})
        raise ValueError(f"{len(groups)} multi-echo acquisitions in {source}; choose one by series UID: {', '.join(names[:6])}")
    slices = next(iter(groups.values()))
    by: dict[tuple[str, int, float], list[Slice]] = defaultdict(list)
    for s in slices:
        by[(s.part, s.echo_number, round(s.echo_time_ms, 4))].append(s)
    if any(k[0] in ("real", "imag") for k in by):
        raise ValueError("the acquisition is stored as real and imaginary images: give magnitude and phase series (scanner export option, or dcm2niix then 'qmri import bids')")
    mags = sorted((k for k in by if k[0] == "mag"), key=lambda k: k[2])
    phases = sorted((k for k in by if k[0] == "phase"), key=lambda k: k[2])
    if not mags:
        raise ValueError("the acquisition has phase images but no magnitude images")
    te = [k[2] for k in mags]
    if len(set(te)) != len(te):
        raise ValueError(f"two magnitude echoes share an echo time ({te} ms)")
    if any(t <= 0 for t in te):
        raise ValueError("EchoTime is missing or zero in the magnitude images")
    counts = {len(by[k]) for k in mags + phases}
    if len(counts) > 1:
        raise ValueError(f"the echoes have different numbers of slices ({sorted(counts)}): an incomplete series")
    mag_arrays, affine = [], None
    for k in mags:
        a, aff = _read_echo(by[k], f"magnitude echo {k[1]} (TE {k[2]} ms)")
        if affine is not None and not np.allclose(aff, affine, atol=1e-3):
            raise ValueError(f"magnitude echo {k[1]} lies on another grid than echo 1")
        affine = aff if affine is None else affine
        mag_arrays.append(a)
    phase = None
    if phases:
        if [k[2] for k in phases] != te:
            raise ValueError(f"phase echo times {[k[2] for k in phases]} ms differ from the magnitudes' {te} ms")
        arrays = []
        for k in phases:
            a, aff = _read_echo(by[k], f"phase echo {k[1]} (TE {k[2]} ms)")
            if not np.allclose(aff, affine, atol=1e-3):
                raise ValueError(f"phase echo {k[1]} lies on another grid than the magnitudes")
            arrays.append(phase_to_radians(a, f"phase echo {k[1]}"))
        phase = np.stack(arrays, axis=-1)
    strengths = {s.field_strength_t for s in slices if s.field_strength_t}
    if len(strengths) > 1:
        raise ValueError(f"the series disagree on MagneticFieldStrength: {sorted(strengths)} T")
    source_info = {"dicom_series": sorted({s.series_uid for s in slices}), "frame_of_reference": slices[0].frame_of_reference}
    return MultiEcho(np.stack(mag_arrays, axis=-1), phase, affine, te, next(iter(strengths)) if strengths else None, source_info)
