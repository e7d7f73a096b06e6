"""Write a phantom multi-echo GRE acquisition as DICOM MR series, as a scanner would (test data for
the DICOM input adapter and the PACS flow; no real patient data exists here).

Two series, magnitude (ImageType ``ORIGINAL\\PRIMARY\\M\\ND``) and phase (``...\\P\\ND``), one file
per slice and echo, with EchoTime, EchoNumbers, MagneticFieldStrength, ImageOrientationPatient and
ImagePositionPatient from the affine (any obliquity), PixelSpacing, SliceThickness and 16-bit
pixels with RescaleSlope/RescaleIntercept. Phases are stored on Siemens' 12-bit scale
(stored 0..4095, slope 2, intercept -4096: -4096..4094 for -pi..pi).
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

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


def write_multi_echo_dicom(me: MultiEcho, folder: str | Path, patient_id: str = "phantom", field_strength_t: float | None = None) -> dict:
    """Write ``me`` (magnitude and, if present, phase) under ``folder``; returns the UIDs written."""
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
        instance = 0
        for e in range(ne):
            for k in range(nz):
                instance += 1
                meta = FileMetaDataset()
                meta.MediaStorageSOPClassUID = MRImageStorage
                meta.MediaStorageSOPInstanceUID = generate_uid()
                meta.TransferSyntaxUID = ExplicitVRLittleEndian
                path = folder / part / f"e{e + 1:02d}_{k + 1:04d}.dcm"
                path.parent.mkdir(parents=True, exist_ok=True)
                ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
                for key, value in _base(study_uid, frame_uid, series_uid, patient_id, description, number).items():
                    setattr(ds, key, value)
                ds.SOPClassUID = MRImageStorage
                ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
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
                ds.Rows, ds.Columns = ny, nx
                ds.SamplesPerPixel = 1
                ds.PhotometricInterpretation = "MONOCHROME2"
                ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16 if part == "mag" else 12, 15 if part == "mag" else 11
                ds.PixelRepresentation = 0
                ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", f"{intercept:g}"
                ds.RescaleType = "US"
                ds.PixelData = np.ascontiguousarray(stored[:, :, k, e].T).tobytes()  # rows along j, columns along i
                ds.is_little_endian, ds.is_implicit_VR = True, False
                ds.save_as(str(path), write_like_original=False)
    return uids
