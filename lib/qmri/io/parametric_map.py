"""A quantitative map as a DICOM Parametric Map (highdicom): float pixels with a real-world value
mapping whose unit is a UCUM code, referencing the source series, for a PACS and DICOM viewers.

The map must lie on the source series' grid (one frame per source slice, same orientation and
positions): a map computed from an imported DICOM study is. Source slices are read with pydicom
and ordered along the slice normal as :mod:`qmri.io.dicom_input` orders them, so frame ``k`` of the
Parametric Map is the map's slice ``k``.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom

import qmri

#: The maps' units as UCUM codes (code value, meaning) for the real-world value mapping.
UCUM = {
    "ppm": ("ppm", "parts per million"),
    "%": ("%", "percent"),
    "1/s": ("/s", "per second"),
    "HU": ("[hnsf'U]", "Hounsfield unit"),
    "SUV": ("{SUVbw}g/ml", "Standardized Uptake Value body weight"),
    "input units (SUV)": ("{SUVbw}g/ml", "Standardized Uptake Value body weight"),
    "fraction": ("1", "no units"),
    "a.u.": ("1", "no units"),
    "rad": ("rad", "radian"),
}


def source_slices(source: str | Path, series_uid: str, echo_number: int | None = 1) -> tuple[list[pydicom.Dataset], list]:
    """The slices of one series (and echo) in ``source``, ordered along the slice normal: the
    source datasets to reference (one per file: a multi-frame file holds many slices) and the
    slices (:class:`qmri.io.dicom_input.Slice`, their geometry)."""
    from .dicom_input import scan

    chosen = [s for s in scan(source, modalities=None) if s.series_uid == series_uid and (echo_number is None or s.echo_number in (echo_number, -1))]
    if not chosen:
        raise ValueError(f"no slices of series {series_uid}" + (f" echo {echo_number}" if echo_number else "") + f" in {source}")
    normal = np.cross(chosen[0].orientation[:3], chosen[0].orientation[3:])
    chosen.sort(key=lambda s: float(np.dot(s.position, normal)))
    paths = list(dict.fromkeys(s.path for s in chosen))
    return [pydicom.dcmread(str(p)) for p in paths], chosen


def parametric_map(values: np.ndarray, affine: np.ndarray, units: str, name: str, sources: Sequence[pydicom.Dataset], slices: Sequence, description: str = ""):
    """The (i, j, k) float map as a Parametric Map dataset referencing ``sources`` (classic images,
    one per slice, or multi-frame images), on the grid of ``slices`` (:func:`source_slices`: the
    source's slices or frames in order, one per map slice)."""
    import highdicom as hd

    from .dicom_input import LPS_TO_RAS

    values = np.asarray(values, dtype=np.float32)
    n = len(slices)
    if values.ndim != 3 or values.shape[2] != n:
        raise ValueError(f"the map has shape {values.shape}: one slice per source image ({n}) is needed")
    first = sources[0]
    if (int(first.Columns), int(first.Rows)) != values.shape[:2]:
        raise ValueError(f"the map's slices are {values.shape[:2]}, the source images {int(first.Columns)} x {int(first.Rows)} (columns x rows)")
    # the source grid's affine: the map must lie on it
    if slices[0].pixel_spacing is None:
        raise ValueError("the source images carry no PixelSpacing")
    iop, (dr, dc) = slices[0].orientation, slices[0].pixel_spacing
    p0, p1 = slices[0].position, slices[-1].position
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = iop[:3] * dc, iop[3:] * dr
    lps[:3, 2] = (p1 - p0) / max(n - 1, 1) if n > 1 else np.cross(iop[:3], iop[3:]) * float(getattr(first, "SliceThickness", 1.0))
    lps[:3, 3] = p0
    if not np.allclose(LPS_TO_RAS @ lps, affine, atol=1e-3):
        raise ValueError("the map is not on the source series' grid (its affine differs from the series' orientation, spacing and positions)")
    if units not in UCUM:
        raise ValueError(f"no UCUM code known for units '{units}'; known: {', '.join(UCUM)}")
    code, meaning = UCUM[units]
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=name[:16],
        lut_explanation=(description or name)[:64],
        unit=hd.sr.CodedConcept(code, "UCUM", meaning),
        value_range=(lo, hi),
        slope=1.0,
        intercept=0.0,
    )
    frames = np.ascontiguousarray(np.transpose(values, (2, 1, 0)))  # (slices, rows along j, columns along i)
    geometry = {}
    if any(s.frame is not None for s in slices):
        # a multi-frame source holds more frames than the map (all echoes): the map's frame
        # positions are given, the orientation is the source's. They are plain pydicom sequences
        # because highdicom 0.22 compares them with the source's plain sequences and its own
        # PlanePositionSequence refuses that comparison (TypeError)
        from pydicom.dataset import Dataset
        from pydicom.sequence import Sequence as DicomSequence

        def position(p):
            item = Dataset()
            item.ImagePositionPatient = [float(x) for x in p]
            return DicomSequence([item])

        gap = float(np.linalg.norm(lps[:3, 2]))
        geometry = {"pixel_measures": hd.PixelMeasuresSequence(pixel_spacing=(dr, dc), slice_thickness=gap, spacing_between_slices=gap), "plane_positions": [position(s.position) for s in slices]}
    pm = hd.pm.ParametricMap(
        source_images=list(sources),
        pixel_array=frames,
        series_instance_uid=hd.UID(),
        series_number=int(getattr(first, "SeriesNumber", 1) or 1) + 100,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="qmri",
        manufacturer_model_name="qmri",
        software_versions=str(getattr(qmri, "__version__", "0")),
        device_serial_number="0",
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        window_center=(lo + hi) / 2.0,
        window_width=hi - lo,
        content_description=(description or name)[:64],
        content_label=name.upper().replace(" ", "_")[:16] or "MAP",
        **geometry,
    )
    pm.ContentDate = datetime.date.today().strftime("%Y%m%d")
    return pm


def map_dataset(map_path: str | Path, source: str | Path, map_name: str | None = None, series_uid: str | None = None, maps: list | None = None):
    """One map of a result NIfTI as a Parametric Map dataset referencing the source series (default:
    the folder's only magnitude series, first echo). The maps' names and units come from ``maps``
    (a result JSON's ``maps``), else from ``qmri infer``'s JSON beside the file, else, for a 3D NIfTI,
    from its intent name."""
    import json

    import nibabel as nib

    from .dicom_input import scan

    map_path = Path(map_path)
    img = nib.load(str(map_path))
    data = np.asarray(img.dataobj, dtype=np.float32)
    stem = map_path.name[: -len(".nii.gz")] if map_path.name.endswith(".nii.gz") else map_path.stem
    js = map_path.with_name(stem + ".json")
    if maps is None and js.is_file():
        maps = json.loads(js.read_text()).get("maps", [])
    if maps is not None:
        chosen = next((m for m in maps if map_name in (None, m.get("name"))), None)
        if chosen is None:
            raise ValueError(f"no map {map_name!r} in the result; maps: {', '.join(m.get('name', '?') for m in maps)}")
        values = data if data.ndim == 3 else data[..., int(chosen.get("channel", 0))]
        name, units, description = chosen["name"], chosen.get("units", ""), chosen.get("description", "")
    else:
        if data.ndim != 3:
            raise ValueError(f"{map_path.name} has {data.shape[3]} maps and no result JSON beside it to name them")
        units = img.header.get_intent()[2]
        name, values, description = map_name or stem, data, ""
        if not units:
            raise ValueError(f"{map_path.name} names no units (NIfTI intent name) and has no result JSON beside it")
    if series_uid is None:
        mags = sorted({s.series_uid for s in scan(source) if s.part == "mag"})
        if len(mags) != 1:
            raise ValueError(f"{len(mags)} magnitude series in {source}: choose the source with --series-uid")
        series_uid = mags[0]
    sources, slices = source_slices(source, series_uid)
    return parametric_map(values, img.affine, units, name, sources, slices, description)


def export_map(map_path: str | Path, source: str | Path, out: str | Path, map_name: str | None = None, series_uid: str | None = None) -> Path:
    """``qmri export-pm``: :func:`map_dataset` written to ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    map_dataset(map_path, source, map_name, series_uid).save_as(str(out))
    return out
