"""Multi-echo GRE from DICOM: a folder (or files) of MR images -> :class:`~qmri.io.multi_echo.MultiEcho`.

Headers are read with pydicom (no pixel data) and grouped into series (SeriesInstanceUID), echoes
(EchoNumbers, else EchoTime) and magnitude/phase (ImageType value 3: ``M`` or ``P``, also when a
scanner stores both in one series); each echo's slices are sorted along the slice normal and read
by SimpleITK (pixel data, rescale slope/intercept, geometry in LPS), then turned into nibabel's
(i, j, k) arrays with a RAS+ affine. Echo times come from EchoTime (ms), B0 from
MagneticFieldStrength (T); phases are converted to radians (:func:`~qmri.io.multi_echo.phase_to_radians`).

Enhanced (and legacy-converted enhanced) multi-frame MR files, one file per series as current
scanners export them, are read frame by frame from their functional groups (per-frame, else
shared): PlanePositionSequence, PlaneOrientationSequence, PixelMeasuresSequence,
MREchoSequence.EffectiveEchoTime, MRImageFrameTypeSequence.ComplexImageComponent (so magnitude
and phase may share one file) and PixelValueTransformationSequence; the pixels are decoded by
pydicom. Each frame then takes the path of a classic slice (echo numbers are the rank of the echo
time within the file), so both kinds of series meet the same checks.

Errors name what is missing or inconsistent: no MR images, several multi-echo acquisitions without
a series chosen, no phase, echoes with different slice counts or orientations, unequal slice gaps,
real/imaginary instead of magnitude/phase, multi-frame files without per-frame geometry, and pixel
data compressed in a transfer syntax no installed decoder reads.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pydicom
import SimpleITK as sitk

from .multi_echo import MultiEcho, phase_to_radians
from .nifti_input import DEFAULT_MAX_VOXELS

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
PROGRESS_EVERY = 1000  # files between two progress lines of a folder scan
log = logging.getLogger(__name__)


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
    pixel_spacing: tuple[float, float] | None = None  # PixelSpacing (row spacing, column spacing), mm
    frame: int | None = None  # 0-based frame of a multi-frame file; None for a classic slice
    rescale: tuple[float, float] = (1.0, 0.0)  # (slope, intercept) of a frame; classic slices: SimpleITK applies it
    modality: str = "MR"
    matrix: tuple[int, int] = (0, 0)  # (Rows, Columns) of the image (frame)


#: Multi-frame image storage classes read frame by frame (other multi-frame objects, e.g. Parametric
#: Maps or segmentations stored beside the images, are not source images and are skipped).
MULTI_FRAME_IMAGES = {
    str(u)
    for u in (
        pydicom.uid.EnhancedMRImageStorage,
        pydicom.uid.LegacyConvertedEnhancedMRImageStorage,
        pydicom.uid.EnhancedCTImageStorage,
        pydicom.uid.LegacyConvertedEnhancedCTImageStorage,
        pydicom.uid.EnhancedPETImageStorage,
        pydicom.uid.LegacyConvertedEnhancedPETImageStorage,
    )
}


COMPLEX_COMPONENT = {"MAGNITUDE": "mag", "PHASE": "phase", "REAL": "real", "IMAGINARY": "imag"}


def _part(ds, attribute: str = "ImageType") -> str:
    """ "mag", "phase", "real" or "imag" from ImageType (value 3 on Siemens/Philips, words elsewhere)."""
    image_type = [str(x).upper() for x in getattr(ds, attribute, [])]
    flags = set(image_type[2:]) | {t for t in image_type if len(t) > 1}
    if flags & {"P", "PHASE"}:
        return "phase"
    if flags & {"R", "REAL"}:
        return "real"
    if flags & {"I", "IMAGINARY"}:
        return "imag"
    return "mag"


def _spacing(value) -> tuple[float, float] | None:
    return (float(value[0]), float(value[1])) if value is not None and len(value) == 2 else None


def _group(ds, frame: int, sequence: str):
    """The item of functional group ``sequence`` for ``frame``: per-frame, else shared; None if absent."""
    per = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    if per is not None and frame < len(per) and sequence in per[frame] and len(per[frame][sequence].value):
        return per[frame][sequence].value[0]
    shared = getattr(ds, "SharedFunctionalGroupsSequence", None)
    if shared is not None and len(shared) and sequence in shared[0] and len(shared[0][sequence].value):
        return shared[0][sequence].value[0]
    return None


def _series_fields(ds, path: Path) -> dict:
    """The Slice fields every image (or frame) of a file shares: file, series, geometry frame, B0."""
    strength = getattr(ds, "MagneticFieldStrength", None)
    return {
        "path": path,
        "series_uid": str(ds.SeriesInstanceUID),
        "series_description": str(getattr(ds, "SeriesDescription", "")),
        "frame_of_reference": str(getattr(ds, "FrameOfReferenceUID", "")),
        "field_strength_t": float(strength) if strength not in (None, "") else None,
        "modality": str(getattr(ds, "Modality", "")),
        "matrix": (int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)),
    }


def _frames(ds, path: Path) -> list[Slice]:
    """The frames of a multi-frame MR (or CT, PET) file as slices, from its functional groups."""
    n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    per = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    if per is None or len(per) != n:
        raise ValueError(f"multi-frame file {path.name}: {n} frames but {0 if per is None else len(per)} per-frame functional groups; positions of its frames are unknown")
    shared = _series_fields(ds, path)
    top_component = str(getattr(ds, "ComplexImageComponent", "") or "").upper()
    out = []
    for i in range(n):
        plane, orient, measures = (_group(ds, i, q) for q in ("PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence"))
        if plane is None or orient is None or "ImagePositionPatient" not in plane or "ImageOrientationPatient" not in orient:
            raise ValueError(f"multi-frame file {path.name}: frame {i + 1} has no plane position or orientation in its functional groups")
        echo = _group(ds, i, "MREchoSequence")
        te = float(getattr(echo, "EffectiveEchoTime", None) or getattr(ds, "EchoTime", 0) or 0)
        ftype = _group(ds, i, "MRImageFrameTypeSequence")
        component = str(getattr(ftype, "ComplexImageComponent", "") or "").upper() if ftype is not None else ""
        component = component if component in COMPLEX_COMPONENT else top_component
        part = COMPLEX_COMPONENT.get(component) or (_part(ftype, "FrameType") if ftype is not None and "FrameType" in ftype else _part(ds))
        pvt = _group(ds, i, "PixelValueTransformationSequence")
        slope = float(getattr(pvt, "RescaleSlope", None) or getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(pvt, "RescaleIntercept", None) or getattr(ds, "RescaleIntercept", 0) or 0)
        out.append(
            Slice(
                **shared,
                part=part,
                echo_number=-1,
                echo_time_ms=te,
                position=np.array([float(x) for x in plane.ImagePositionPatient]),
                orientation=np.array([float(x) for x in orient.ImageOrientationPatient]),
                pixel_spacing=_spacing(getattr(measures, "PixelSpacing", None)) if measures is not None else None,
                frame=i,
                rescale=(slope, intercept),
            )
        )
    for part in {s.part for s in out}:  # echo numbers: rank of the echo time within the file
        tes = sorted({round(s.echo_time_ms, 4) for s in out if s.part == part})
        for s in out:
            if s.part == part:
                s.echo_number = tes.index(round(s.echo_time_ms, 4)) + 1
    return out


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
    out = []
    files = _files(source)
    for n, f in enumerate(files, 1):
        if n % PROGRESS_EVERY == 0:
            log.info("DICOM headers read: %d of %d files", n, len(files))
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError):
            continue
        modality = str(getattr(ds, "Modality", ""))
        if modalities is not None and modality not in modalities:
            continue
        if "PerFrameFunctionalGroupsSequence" in ds or int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            if str(getattr(ds, "SOPClassUID", "")) in MULTI_FRAME_IMAGES:
                out.extend(_frames(ds, f))
            continue
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            continue
        te = float(getattr(ds, "EchoTime", 0) or 0)
        echo = getattr(ds, "EchoNumbers", None)
        out.append(
            Slice(
                **_series_fields(ds, f),
                part=_part(ds),
                echo_number=int(echo) if echo not in (None, "") else -1,
                echo_time_ms=te,
                position=np.array([float(x) for x in ds.ImagePositionPatient]),
                orientation=np.array([float(x) for x in ds.ImageOrientationPatient]),
                pixel_spacing=_spacing(getattr(ds, "PixelSpacing", None)),
            )
        )
    return out


def _frame_pixels(path: Path, cache: dict) -> np.ndarray:
    """(frames, rows, columns) stored pixels of a multi-frame file (decoded once per read)."""
    if path not in cache:
        ds = pydicom.dcmread(str(path))
        if int(getattr(ds, "SamplesPerPixel", 1) or 1) != 1:
            raise ValueError(f"multi-frame file {path.name}: {ds.SamplesPerPixel} samples per pixel; a greyscale image has one")
        try:
            arr = ds.pixel_array
        except Exception as err:  # pydicom raises several types for an undecodable transfer syntax
            raise ValueError(f"multi-frame file {path.name}: its pixel data ({ds.file_meta.get('TransferSyntaxUID', '?')}) could not be decoded ({type(err).__name__}); convert it with dcm2niix, then 'qmri import bids'") from None
        cache.clear()  # one file at a time: an echo's frames lie in one file
        cache[path] = arr.reshape((int(getattr(ds, "NumberOfFrames", 1) or 1),) + arr.shape[-2:])
    return cache[path]


def check_size(volumes: list[list[Slice]], what: str, max_voxels: int = DEFAULT_MAX_VOXELS) -> None:
    """Refuse, before any pixel is decoded, volumes whose headers claim more than ``max_voxels``
    values in all (the limit of the NIfTI inputs: one request cannot exhaust memory)."""
    n = sum(s.matrix[0] * s.matrix[1] for v in volumes for s in v)
    if n > max_voxels:
        rows, cols = volumes[0][0].matrix
        raise ValueError(f"{what}: the headers claim {n:,} voxel values ({rows} x {cols} per slice, {sum(len(v) for v in volumes)} slices), more than the limit of {max_voxels:,}")


def read_volume(slices: list[Slice], what: str, cache: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One volume's slices (an echo, or a single-volume series) -> ((i, j, k) float32 array, RAS affine)."""
    check_size([slices], what)
    iop = slices[0].orientation
    if any(not np.allclose(s.orientation, iop, atol=1e-4) for s in slices):
        raise ValueError(f"{what}: slices with different orientations (ImageOrientationPatient); one acquisition has one")
    normal = np.cross(iop[:3], iop[3:])
    order = sorted(slices, key=lambda s: float(np.dot(s.position, normal)))
    d = np.diff([float(np.dot(s.position, normal)) for s in order])
    if d.size and (np.any(d <= 1e-6) or np.ptp(d) > 1e-3 * max(1.0, float(d.mean()))):
        raise ValueError(f"{what}: slice positions are duplicated or unevenly spaced (gaps {np.round(d, 3).tolist()[:6]} mm)")
    if order[0].frame is not None:
        return _read_frames(order, iop, normal, d, what, {} if cache is None else cache)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(s.path) for s in order])
    reader.SetOutputPixelType(sitk.sitkFloat32)  # each slice's own rescale (PET slopes differ per slice) kept in float
    img = reader.Execute()
    arr = np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0)).astype(np.float32)  # (k, j, i) -> (i, j, k)
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(img.GetDirection()).reshape(3, 3) @ np.diag(img.GetSpacing())
    lps[:3, 3] = img.GetOrigin()
    return arr, LPS_TO_RAS @ lps


def _read_frames(order: list[Slice], iop: np.ndarray, normal: np.ndarray, gaps: np.ndarray, what: str, cache: dict) -> tuple[np.ndarray, np.ndarray]:
    """Frames of multi-frame files, sorted along the normal -> ((i, j, k) float32 array, RAS affine)."""
    spacing = order[0].pixel_spacing
    if spacing is None or any(s.pixel_spacing != spacing for s in order):
        raise ValueError(f"{what}: frames without PixelSpacing in their PixelMeasuresSequence, or with different pixel spacings")
    planes = []
    for s in order:
        pix = _frame_pixels(s.path, cache)
        if s.frame >= pix.shape[0]:
            raise ValueError(f"{what}: frame {s.frame + 1} is missing from the pixel data of {s.path.name}")
        planes.append(pix[s.frame].T.astype(np.float32) * np.float32(s.rescale[0]) + np.float32(s.rescale[1]))  # (rows j, columns i) -> (i, j)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = iop[:3] * spacing[1], iop[3:] * spacing[0]  # along i: column spacing; along j: row spacing
    lps[:3, 2] = normal * (float(gaps.mean()) if gaps.size else 1.0)
    lps[:3, 3] = order[0].position
    return np.stack(planes, axis=-1), LPS_TO_RAS @ lps


def acquisitions(slices: list[Slice]) -> dict[str, list[Slice]]:
    """Multi-echo acquisitions: series with the same frame of reference, orientation and slice
    positions (the magnitude and phase series of one acquisition, or its per-echo series, share
    them; a T2w of the same session on another grid does not) holding more than one echo."""
    by_series: dict[str, list[Slice]] = defaultdict(list)
    for s in slices:
        by_series[s.series_uid].append(s)
    groups: dict[str, list[Slice]] = defaultdict(list)
    for series in by_series.values():
        grid = sorted({tuple(np.round(s.position, 1)) for s in series})  # 0.1 mm
        groups[f"{series[0].frame_of_reference}|{np.round(series[0].orientation, 3).tolist()}|{grid}"] += series
    return {k: v for k, v in groups.items() if len({(s.echo_number, s.echo_time_ms) for s in v}) > 1}


def read_multi_echo(source: str | Path | Iterable[str | Path], series_uid: str | None = None) -> MultiEcho:
    """The multi-echo GRE acquisition in ``source`` (a folder or files). ``series_uid``: pick the
    acquisition containing this series when the folder holds several."""
    slices = scan(source)
    if not slices:
        raise ValueError(f"no MR images with position and orientation were found in {source}")
    if series_uid is not None:
        if not any(s.series_uid == series_uid for s in slices):
            raise ValueError(f"no MR series {series_uid} in {source}")
    groups = acquisitions(slices)
    if series_uid is not None:
        groups = {k: v for k, v in groups.items() if any(s.series_uid == series_uid for s in v)}
        if not groups:
            raise ValueError(f"no multi-echo acquisition in {source} holds series {series_uid}: it has a single echo time and shares no grid with a multi-echo series")
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
    check_size([by[k] for k in mags + phases], "the multi-echo acquisition")
    counts = {len(by[k]) for k in mags + phases}
    if len(counts) > 1:
        raise ValueError(f"the echoes have different numbers of slices ({sorted(counts)}): an incomplete series")
    mag_arrays, affine, cache = [], None, {}
    for k in mags:
        a, aff = read_volume(by[k], f"magnitude echo {k[1]} (TE {k[2]} ms)", cache)
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
            a, aff = read_volume(by[k], f"phase echo {k[1]} (TE {k[2]} ms)", cache)
            if not np.allclose(aff, affine, atol=1e-3):
                raise ValueError(f"phase echo {k[1]} lies on another grid than the magnitudes")
            arrays.append(phase_to_radians(a, f"phase echo {k[1]}"))
        phase = np.stack(arrays, axis=-1)
    strengths = {s.field_strength_t for s in slices if s.field_strength_t}
    if len(strengths) > 1:
        raise ValueError(f"the series disagree on MagneticFieldStrength: {sorted(strengths)} T")
    source_info = {"dicom_series": sorted({s.series_uid for s in slices}), "frame_of_reference": slices[0].frame_of_reference}
    return MultiEcho(np.stack(mag_arrays, axis=-1), phase, affine, te, next(iter(strengths)) if strengths else None, source_info)
