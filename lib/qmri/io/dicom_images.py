"""Single-volume DICOM series -> inputs of the image tasks: CT (HU) for ``synthetic_mr``, a
T2-weighted MR for ``synthetic_ct``, PET (SUV, body weight) for ``pvc``.

Series are found by :func:`qmri.io.dicom_input.scan` (classic single-frame or enhanced multi-frame)
and read by its slice reader, with the same geometry checks as the multi-echo GRE (one orientation,
evenly spaced slices, RAS+ affine). What each series feeds:

* CT: the stored values' rescale gives HU.
* PET: activity concentration (``Units`` BQML, Bq/ml) is converted to SUVbw (g/ml)::

      SUV = C [Bq/ml] x PatientWeight [g] / (RadionuclideTotalDose [Bq] x 2^(-dt / RadionuclideHalfLife [s]))

  with ``dt`` from the injection (RadiopharmaceuticalStartDateTime, else StartTime on the series
  date) to the series start (SeriesDate/SeriesTime, else AcquisitionDate/Time) when
  ``DecayCorrection`` is START, and dt = 0 when it is ADMIN (the images are already decay
  corrected to the injection). ``Units`` GML is SUV already. Anything else (counts, no weight, no
  dose, DecayCorrection NONE) is refused with what is missing: a PVC map in unknown units is not
  comparable with anything. No maintained Python library computes SUV from DICOM headers (PET
  vendors' and Slicer's SUV Factor Calculator are C++/GUI), so the formula is written here.
* A PET reconstructed in time frames (e.g. amyloid PET as 4 x 5 min: every slice position once
  per frame, told apart by FrameReferenceTime) is the frames' mean weighted by their
  ActualFrameDuration (each frame is decay corrected to the same reference, so this is the static
  image of the whole acquisition).
* MR: a T2-weighted series, told by its description (``T2`` but not T2*, FLAIR, SWI or GRE) or,
  without one, by TE >= 60 ms, TR >= 1500 ms and no inversion. Other MR series (T1w, localisers;
  multi-echo GRE, which :func:`qmri.io.dicom_input.read_multi_echo` reads) are not image-task inputs.

Values: HU for CT, SUV (g/ml) for PET, the scanner's units (a.u.) for MR; times in the DICOM
headers are local wall-clock times, compared within one study.
"""

from __future__ import annotations

import datetime
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from .dicom_input import Slice, check_size, read_volume, scan

#: modality or MR kind -> the task it feeds
IMAGE_TASK = {"CT": "synthetic_mr", "T2w": "synthetic_ct", "PT": "pvc"}
T2_DESCRIPTION = re.compile(r"t2", re.I)
NOT_T2 = re.compile(r"t2\s*(\*|star)|t2s\b|flair|swi|gre|fl3d|medic|qsm", re.I)
T2_MIN_TE_MS, T2_MIN_TR_MS = 60.0, 1500.0


@dataclass
class SeriesImage:
    """One image-task input read from a DICOM series."""

    series_uid: str
    description: str
    task: str
    data: np.ndarray  # (i, j, k) float32: HU, SUV or a.u.
    affine: np.ndarray  # RAS+, mm
    meta: dict[str, Any] = field(default_factory=dict)


def _dicom_datetime(date: str, time: str) -> datetime.datetime:
    """A DICOM DA + TM (``HHMMSS.ffffff``, ``HHMM`` or ``HH``) as a naive datetime."""
    date, time = str(date).strip(), str(time).strip()
    if not re.fullmatch(r"\d{8}", date) or not re.fullmatch(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?", time):
        raise ValueError(f"date {date!r} / time {time!r} are not DICOM DA / TM values")
    hh, mm, ss = int(time[0:2]), int(time[2:4] or 0), float(time[4:] or 0)
    return datetime.datetime(int(date[:4]), int(date[4:6]), int(date[6:8])) + datetime.timedelta(hours=hh, minutes=mm, seconds=ss)


def _injection_time(info, series_date: str) -> datetime.datetime:
    dt = str(getattr(info, "RadiopharmaceuticalStartDateTime", "") or "").strip()
    if dt:
        return _dicom_datetime(dt[:8], dt[8:].split("+")[0].split("-")[0])
    start = str(getattr(info, "RadiopharmaceuticalStartTime", "") or "").strip()
    if not start:
        raise ValueError("the injection time (RadiopharmaceuticalStartDateTime or StartTime) is missing")
    return _dicom_datetime(series_date, start)


def suv_factor(ds) -> float:
    """The factor from a PET series' rescaled values to SUVbw (g/ml); see the module doc."""
    units = str(getattr(ds, "Units", "") or "").upper()
    if units == "GML":
        return 1.0
    if units != "BQML":
        raise ValueError(f"PET Units {units or '(missing)'}: only BQML (activity concentration, converted to SUV) or GML (already SUV) can be used for PVC")
    weight = float(getattr(ds, "PatientWeight", 0) or 0)
    if not 0.5 <= weight <= 500:
        raise ValueError(f"PatientWeight {weight:g} kg is missing or implausible: SUV needs the patient's weight")
    seq = getattr(ds, "RadiopharmaceuticalInformationSequence", None)
    if not seq:
        raise ValueError("RadiopharmaceuticalInformationSequence is missing: SUV needs the injected dose and the radionuclide's half-life")
    info = seq[0]
    dose = float(getattr(info, "RadionuclideTotalDose", 0) or 0)
    half_life = float(getattr(info, "RadionuclideHalfLife", 0) or 0)
    if dose <= 0 or half_life <= 0:
        raise ValueError(f"RadionuclideTotalDose {dose:g} Bq and RadionuclideHalfLife {half_life:g} s must both be positive for SUV")
    decay = str(getattr(ds, "DecayCorrection", "") or "").upper()
    if decay == "ADMIN":
        return weight * 1000.0 / dose
    if decay != "START":
        raise ValueError(f"DecayCorrection {decay or '(missing)'}: SUV is computed for images decay corrected to the scan start (START) or the injection (ADMIN)")
    date = str(getattr(ds, "SeriesDate", "") or getattr(ds, "AcquisitionDate", "") or "")
    time = str(getattr(ds, "SeriesTime", "") or getattr(ds, "AcquisitionTime", "") or "")
    dt = (_dicom_datetime(date, time) - _injection_time(info, date)).total_seconds()
    if not 0 <= dt <= 24 * 3600:
        raise ValueError(f"the scan starts {dt / 60:.0f} min after the injection: check SeriesTime and RadiopharmaceuticalStartTime")
    return weight * 1000.0 / (dose * 2.0 ** (-dt / half_life))


def mr_kind(ds, echoes: int) -> str | None:
    """``T2w`` for a T2-weighted series, else None."""
    if echoes > 1:
        return None
    text = f"{getattr(ds, 'SeriesDescription', '')} {getattr(ds, 'ProtocolName', '')}".strip()
    if text:
        return "T2w" if T2_DESCRIPTION.search(text) and not NOT_T2.search(text) else None
    te, tr = float(getattr(ds, "EchoTime", 0) or 0), float(getattr(ds, "RepetitionTime", 0) or 0)
    return "T2w" if te >= T2_MIN_TE_MS and tr >= T2_MIN_TR_MS and not getattr(ds, "InversionTime", None) else None


def _time_frames(slices: list[Slice]) -> list[tuple[float, list[Slice]]]:
    """A PET series' slices grouped by time frame (FrameReferenceTime), each with its duration
    (ActualFrameDuration, ms; 1 when absent); one group for a static series."""
    frames: dict[float, list[Slice]] = defaultdict(list)
    duration: dict[float, float] = {}
    for s in slices:
        h = pydicom.dcmread(str(s.path), stop_before_pixels=True, specific_tags=["FrameReferenceTime", "ActualFrameDuration"])
        t = round(float(getattr(h, "FrameReferenceTime", 0) or 0), 3)
        frames[t].append(s)
        duration[t] = float(getattr(h, "ActualFrameDuration", 0) or 0) or 1.0
    return [(duration[t], frames[t]) for t in sorted(frames)]


def _pet_volume(slices: list[Slice], what: str) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """A PET series as one volume: a static series as read, a framed one as the duration-weighted
    mean of its frames (which must lie on one grid); returns (volume, affine, frame durations ms)."""
    frames = _time_frames(slices) if len({tuple(np.round(s.position, 2)) for s in slices}) < len(slices) else [(1.0, slices)]
    check_size([group for _, group in frames], what)
    total, affine, durations = None, None, []
    for i, (d, group) in enumerate(frames):
        vol, aff = read_volume(group, f"{what}, time frame {i + 1}")
        if affine is not None and (vol.shape != total.shape or not np.allclose(aff, affine, atol=1e-3)):
            raise ValueError(f"{what}: time frame {i + 1} lies on another grid than frame 1")
        total, affine = (vol * np.float32(d), aff) if total is None else (total + vol * np.float32(d), affine)
        durations.append(d)
    return total / np.float32(sum(durations)), affine, durations


def read_series_images(source: str | Path) -> tuple[list[SeriesImage], list[str]]:
    """The CT, PET and T2-weighted MR series in ``source`` as task inputs, and a line for each
    series that feeds no task (or could not be read: its reason)."""
    by: dict[str, list[Slice]] = defaultdict(list)
    for s in scan(source, modalities=("CT", "PT", "MR")):
        by[s.series_uid].append(s)
    images, skipped = [], []
    for uid, slices in sorted(by.items()):
        ds = pydicom.dcmread(str(slices[0].path), stop_before_pixels=True)
        what = f"series {uid} ({getattr(ds, 'SeriesDescription', '') or slices[0].modality})"
        kind = slices[0].modality
        if kind == "MR":
            kind = mr_kind(ds, len({round(s.echo_time_ms, 4) for s in slices}))
            if kind is None:
                skipped.append(f"{what}: an MR series that is not T2-weighted (multi-echo GRE is read as qsm_raw)")
                continue
        try:
            data, affine, durations = _pet_volume(slices, what) if kind == "PT" else (*read_volume(slices, what), [])
            meta: dict[str, Any] = {"task": IMAGE_TASK[kind], "modality": {"CT": "ct", "PT": "pet"}.get(kind, kind), "source": {"dicom_series": [uid]}, "series_number": int(getattr(ds, "SeriesNumber", 0) or 0)}
            if len(durations) > 1:
                meta["time_frames_s"] = [round(d / 1000.0, 3) for d in durations]
            if kind == "PT":
                factor = suv_factor(ds)
                data = data * np.float32(factor)
                meta["units"] = ["SUV"]
                meta["suv_factor"] = factor
                meta["tracer"] = str(getattr(ds.RadiopharmaceuticalInformationSequence[0], "Radiopharmaceutical", "") or "") if "RadiopharmaceuticalInformationSequence" in ds else ""
            elif kind == "CT":
                meta["units"] = ["HU"]
        except ValueError as e:
            skipped.append(f"{what}: {e}")
            continue
        images.append(SeriesImage(uid, str(getattr(ds, "SeriesDescription", "")), IMAGE_TASK[kind], data.astype(np.float32), affine, meta))
    return images, skipped
