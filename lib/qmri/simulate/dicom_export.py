"""Write a phantom multi-echo GRE acquisition as DICOM MR series, as a scanner would (test data for
the DICOM input adapter and the PACS flow; no real patient data exists here).

Two series, magnitude (ImageType ``ORIGINAL\\PRIMARY\\M\\ND``) and phase (``...\\P\\ND``), one file
per slice and echo, with EchoTime, EchoNumbers, MagneticFieldStrength, ImageOrientationPatient and
ImagePositionPatient from the affine (any obliquity), PixelSpacing, SliceThickness and 16-bit
pixels with RescaleSlope/RescaleIntercept. Phases are stored on Siemens' 12-bit scale
(stored 0..4095, slope 2, intercept -4096: -4096..4094 for -pi..pi).

:func:`write_image_dicom` writes one 3D volume as a classic CT (HU), PET (Bq/ml with per-slice
rescale slopes, as scanners store activity) or MR series, for the single-image tasks.

With ``enhanced``, each series is instead one Enhanced MR Image file (as current scanners export):
frames ordered echo by echo, slice by slice, with the geometry, echo time, complex component and
rescale in the functional groups (shared where every frame has the same value, per frame where not).
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, EnhancedMRImageStorage, ExplicitVRLittleEndian, MRImageStorage, PositronEmissionTomographyImageStorage, generate_uid

from ..io.multi_echo import MultiEcho

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _base(study_uid: str, frame_uid: str, series_uid: str, patient_id: str, description: str, number: int) -> dict:
    now = datetime.datetime(2026, 1, 1, 12, 0, 0)
    return {
        "PatientName": f"Phantom^{patient_id}",
        "PatientID": patient_id,
        "PatientBirthDate": "",
        "PatientSex": "O",
        "StudyInstanceUID": study_uid,
        "StudyDate": now.strftime("%Y%m%d"),
        "StudyTime": now.strftime("%H%M%S"),
        "StudyID": "1",
        "AccessionNumber": "",
        "ReferringPhysicianName": "",
        "SeriesInstanceUID": series_uid,
        "SeriesNumber": number,
        "SeriesDescription": description,
        "FrameOfReferenceUID": frame_uid,
        "PositionReferenceIndicator": "",
        "Modality": "MR",
        "Manufacturer": "qmri phantom",
        "ScanningSequence": "GR",
        "SequenceVariant": "SP",
        "ScanOptions": "",
        "MRAcquisitionType": "3D",
        "PatientPosition": "HFS",
    }


def _item(**attributes) -> Sequence:
    ds = Dataset()
    for key, value in attributes.items():
        setattr(ds, key, value)
    return Sequence([ds])


def _file(path: Path, sop_class: str, base: dict) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    for key, value in base.items():
        setattr(ds, key, value)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    return ds


def _pixel_module(ds, rows: int, columns: int, part: str) -> None:
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16 if part == "mag" else 12, 15 if part == "mag" else 11
    ds.PixelRepresentation = 0
    ds.is_little_endian, ds.is_implicit_VR = True, False


def write_multi_echo_dicom(me: MultiEcho, folder: str | Path, patient_id: str = "phantom", field_strength_t: float | None = None, enhanced: bool = False) -> dict:
    """Write ``me`` (magnitude and, if present, phase) under ``folder``; returns the UIDs written.
    ``enhanced``: one Enhanced MR Image file per series instead of one classic file per slice and echo."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, frame_uid = generate_uid(), generate_uid()
    lps = RAS_TO_LPS @ np.asarray(me.affine, float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row_dir, col_dir = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]  # along i (columns), along j (rows)
    nx, ny, nz, ne = me.magnitude.shape
    b0 = field_strength_t if field_strength_t is not None else me.field_strength_t
    mag_max = float(np.max(me.magnitude)) or 1.0
    parts = [("mag", me.magnitude, "M", "mGRE magnitude", 1)] + ([("phase", me.phase, "P", "mGRE phase", 2)] if me.phase is not None else [])
    uids = {"study": study_uid, "frame_of_reference": frame_uid}
    for part, data, letter, description, number in parts:
        series_uid = generate_uid()
        uids[part] = series_uid
        if part == "mag":
            slope, intercept = mag_max / 65535.0, 0.0
            stored = np.clip(np.rint(data / slope), 0, 65535).astype(np.uint16)
        else:
            slope, intercept = 2.0, -4096.0
            stored = np.clip(np.rint((np.asarray(data, float) / math.pi * 4096.0 + 4096.0) / 2.0), 0, 4095).astype(np.uint16)
        base = _base(study_uid, frame_uid, series_uid, patient_id, description, number)
        if enhanced:
            ds = _file(folder / part / "enhanced.dcm", EnhancedMRImageStorage, base)
            ds.ImageType = ["ORIGINAL", "PRIMARY", "M_FFE" if part == "mag" else "P_FFE", "NONE"]
            ds.ComplexImageComponent = "MAGNITUDE" if part == "mag" else "PHASE"
            ds.InstanceNumber = 1
            ds.NumberOfFrames = nz * ne
            ds.EchoTrainLength = ne
            if b0 is not None:
                ds.MagneticFieldStrength = f"{b0:g}"
            ds.SharedFunctionalGroupsSequence = Sequence([Dataset()])
            shared = ds.SharedFunctionalGroupsSequence[0]
            shared.PixelMeasuresSequence = _item(PixelSpacing=[f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"], SliceThickness=f"{spacing[2]:.6f}", SpacingBetweenSlices=f"{spacing[2]:.6f}")
            shared.PlaneOrientationSequence = _item(ImageOrientationPatient=[f"{x:.8f}" for x in np.r_[row_dir, col_dir]])
            shared.PixelValueTransformationSequence = _item(RescaleSlope=f"{slope:.10g}", RescaleIntercept=f"{intercept:g}", RescaleType="US")
            shared.MRImageFrameTypeSequence = _item(
                FrameType=list(ds.ImageType), ComplexImageComponent=ds.ComplexImageComponent, PixelPresentation="MONOCHROME", VolumetricProperties="VOLUME", VolumeBasedCalculationTechnique="NONE", AcquisitionContrast="T2_STAR"
            )
            frames = []
            for e in range(ne):
                for k in range(nz):
                    f = Dataset()
                    f.PlanePositionSequence = _item(ImagePositionPatient=[f"{x:.6f}" for x in (lps @ np.r_[0, 0, k, 1.0])[:3]])
                    f.MREchoSequence = _item(EffectiveEchoTime=float(me.echo_times_ms[e]))
                    f.FrameContentSequence = _item(StackID="1", InStackPositionNumber=k + 1, DimensionIndexValues=[e + 1, k + 1])
                    frames.append(f)
            ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
            _pixel_module(ds, ny, nx, part)
            ds.PixelData = np.ascontiguousarray(np.transpose(stored, (3, 2, 1, 0))).tobytes()  # frames (echo, slice), rows along j, columns along i
            ds.save_as(str(ds.filename), write_like_original=False)
            continue
        instance = 0
        for e in range(ne):
            for k in range(nz):
                instance += 1
                path = folder / part / f"e{e + 1:02d}_{k + 1:04d}.dcm"
                ds = _file(path, MRImageStorage, base)
                ds.ImageType = ["ORIGINAL", "PRIMARY", letter, "ND"]
                ds.InstanceNumber = instance
                ds.EchoTime = f"{me.echo_times_ms[e]:.4f}"
                ds.EchoNumbers = e + 1
                ds.EchoTrainLength = ne
                if b0 is not None:
                    ds.MagneticFieldStrength = f"{b0:g}"
                ds.ImageOrientationPatient = [f"{x:.8f}" for x in np.r_[row_dir, col_dir]]
                ds.ImagePositionPatient = [f"{x:.6f}" for x in (lps @ np.r_[0, 0, k, 1.0])[:3]]
                ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]  # row spacing (along j), column spacing (along i)
                ds.SliceThickness = f"{spacing[2]:.6f}"
                ds.SpacingBetweenSlices = f"{spacing[2]:.6f}"
                _pixel_module(ds, ny, nx, part)
                ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", f"{intercept:g}"
                ds.RescaleType = "US"
                ds.PixelData = np.ascontiguousarray(stored[:, :, k, e].T).tobytes()  # rows along j, columns along i
                ds.save_as(str(path), write_like_original=False)
    return uids


def pet_header(weight_kg: float = 70.0, dose_bq: float = 370e6, injected: str = "100000", series_time: str = "110000", decay: str = "START", units: str = "BQML", half_life_s: float = 6586.2, tracer: str = "Florbetapir") -> dict:
    """The PET attributes SUV needs, for :func:`write_image_dicom`'s ``header``: patient weight (kg),
    injected dose (Bq) and time, the radionuclide's half-life (s; default F-18), the series start
    (times as DICOM TM on 2026-01-01), DecayCorrection and Units."""
    info = Dataset()
    info.Radiopharmaceutical = tracer
    info.RadionuclideTotalDose = f"{dose_bq:g}"
    info.RadionuclideHalfLife = f"{half_life_s:g}"
    info.RadiopharmaceuticalStartTime = injected
    return {"PatientWeight": f"{weight_kg:g}", "RadiopharmaceuticalInformationSequence": Sequence([info]), "SeriesDate": "20260101", "SeriesTime": series_time, "DecayCorrection": decay, "Units": units}


SOP_CLASS = {"CT": CTImageStorage, "PT": PositronEmissionTomographyImageStorage, "MR": MRImageStorage}


def write_image_dicom(
    data: np.ndarray,
    affine: np.ndarray,
    folder: str | Path,
    modality: str,
    patient_id: str = "phantom",
    description: str = "",
    header: dict | None = None,
    number: int = 10,
    study_uid: str | None = None,
    frame_uid: str | None = None,
    series_uid: str | None = None,
) -> str:
    """One (i, j, k) volume as a classic single-frame series under ``folder``; returns its series UID.

    ``modality``: ``CT`` (values in HU: uint16 with intercept -1024, RescaleType HU), ``PT`` (values
    in Bq/ml: uint16 with each slice's own slope, Units BQML) or ``MR`` (a.u.: uint16, one slope).
    ``header``: further attributes (e.g. PatientWeight, RadiopharmaceuticalInformationSequence,
    EchoTime and RepetitionTime), set on every slice; ``study_uid``/``frame_uid``/``series_uid``: put
    the volume in an existing study, frame of reference or series (e.g. a PET time frame; new ones
    when None)."""
    if modality not in SOP_CLASS:
        raise ValueError(f"modality {modality!r}: one of {', '.join(SOP_CLASS)}")
    folder = Path(folder)
    data = np.asarray(data, np.float64)
    lps = RAS_TO_LPS @ np.asarray(affine, float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row_dir, col_dir = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    nx, ny, nz = data.shape
    series_uid = series_uid or generate_uid()
    base = _base(study_uid or generate_uid(), frame_uid or generate_uid(), series_uid, patient_id, description or modality, number)
    base["Modality"] = modality
    if modality != "MR":
        for key in ("ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType"):
            base.pop(key)
    mr_slope = (float(data.max()) or 1.0) / 65535.0
    for k in range(nz):
        plane = data[:, :, k]
        if modality == "CT":
            slope, intercept = 1.0, -1024.0
        elif modality == "PT":
            slope, intercept = max(float(plane.max()), 1e-6) / 32767.0, 0.0
        else:
            slope, intercept = mr_slope, 0.0
        stored = np.clip(np.rint((plane - intercept) / slope), 0, 65535).astype(np.uint16)
        path = folder / f"{modality.lower()}_{k + 1:04d}.dcm"
        ds = _file(path, SOP_CLASS[modality], base)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [f"{x:.8f}" for x in np.r_[row_dir, col_dir]]
        ds.ImagePositionPatient = [f"{x:.6f}" for x in (lps @ np.r_[0, 0, k, 1.0])[:3]]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
        ds.SliceThickness = f"{spacing[2]:.6f}"
        _pixel_module(ds, ny, nx, "mag")
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", f"{intercept:g}"
        if modality == "PT":
            ds.Units = "BQML"  # PET names its units here, not in RescaleType
        else:
            ds.RescaleType = "HU" if modality == "CT" else "US"
        for key, value in (header or {}).items():
            setattr(ds, key, value)
        ds.PixelData = np.ascontiguousarray(stored.T).tobytes()
        ds.save_as(str(path), write_like_original=False)
    return series_uid
