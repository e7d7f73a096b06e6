"""Scanner data in: a phantom multi-echo GRE written as DICOM series (oblique, magnitude and phase
series, 12-bit phase) and as a BIDS dataset, read back by the input adapters, imported as studies
and inferred; BIDS derivatives out (issue 29)."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from conftest import SAMPLE
from qmri.cli import main
from qmri.io.bids_input import find_megre, read_mask, read_megre
from qmri.io.dicom_input import read_multi_echo
from qmri.io.multi_echo import MultiEcho, b0_direction, phase_to_radians
from qmri.simulate.bids_export import write_bids_megre
from qmri.simulate.dicom_export import pet_header, write_multi_echo_dicom
from qmri.tasks.registry import task_spec

E = 4


def _rot(axis, deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


@pytest.fixture(scope="module")
def phantom():
    """A 36 x 44 x 30 block of the sample raw-QSM study with an oblique affine (15 deg about S,
    10 deg about R), so B0 in array axes is not (0, 0, 1)."""
    img = nib.load(SAMPLE / "studies" / "sub-1000_qsmraw.nii.gz")
    meta = json.loads((SAMPLE / "studies" / "sub-1000_qsmraw.json").read_text())
    d = img.get_fdata(dtype=np.float32)[22:58, 28:72, 28:58]
    aff = img.affine.copy()
    aff[:3, 3] += aff[:3, :3] @ [22, 28, 28]
    aff[:3, :3] = _rot(2, 15) @ _rot(0, 10) @ aff[:3, :3]
    # the phases a scanner records: on the 12-bit grid (what DICOM and dcm2niix store), so a round trip is exact
    phase = ((np.rint((d[..., E : 2 * E] / np.pi * 4096 + 4096) / 2).clip(0, 4095) * 2 - 4096) / 4096 * np.pi).astype(np.float32)
    return MultiEcho(d[..., :E].copy(), phase, aff, meta["echo_times_ms"], 3.0), d[..., -1] > 0


def test_b0_direction_of_an_oblique_slab_and_phase_scales():
    aff = np.eye(4)
    aff[:3, :3] = _rot(0, 20) @ np.diag([1.0, 1.0, 2.0])
    np.testing.assert_allclose(b0_direction(aff), [0, np.sin(np.radians(20)), np.cos(np.radians(20))], atol=1e-12)
    np.testing.assert_allclose(phase_to_radians(np.array([-4096.0, 0.0, 2048.0])), [-np.pi, 0, np.pi / 2], atol=1e-6)
    np.testing.assert_allclose(phase_to_radians(np.array([0.0, 2048.0, 4095.0])), [-np.pi, 0, np.pi - 2 * np.pi / 4096], atol=1e-6)
    with pytest.raises(ValueError, match="neither radians"):
        phase_to_radians(np.array([0.0, 70000.0]))


@pytest.mark.parametrize("enhanced", [False, True], ids=["classic", "enhanced"])
def test_dicom_round_trip_keeps_geometry_echo_times_and_values(phantom, tmp_path, enhanced):
    me, _ = phantom
    uids = write_multi_echo_dicom(me, tmp_path / "dicom", enhanced=enhanced)
    assert len(list((tmp_path / "dicom").rglob("*.dcm"))) == (2 if enhanced else 2 * E * me.magnitude.shape[2])
    back = read_multi_echo(tmp_path / "dicom")
    np.testing.assert_allclose(back.affine, me.affine, atol=1e-5)  # exact up to the header's decimals
    assert back.echo_times_ms == me.echo_times_ms and back.field_strength_t == 3.0
    np.testing.assert_allclose(back.magnitude, me.magnitude, atol=2e-5 * me.magnitude.max())  # 16-bit
    np.testing.assert_allclose(back.phase, me.phase, atol=1e-5)  # Siemens' 12-bit phase scale, read back exactly
    np.testing.assert_allclose(back.sidecar("qsm_raw")["B0_dir"], b0_direction(me.affine), atol=1e-6)
    assert abs(back.sidecar("qsm_raw")["B0_dir"][2]) < 0.99  # oblique: not the array's third axis
    assert set(back.source["dicom_series"]) == {uids["mag"], uids["phase"]}


def test_dicom_problems_are_named(phantom, tmp_path):
    me, _ = phantom
    small = MultiEcho(me.magnitude[:8, :8, :4], me.phase[:8, :8, :4], me.affine, me.echo_times_ms, 3.0)
    write_multi_echo_dicom(small, tmp_path / "a")
    shutil.rmtree(tmp_path / "a" / "phase")
    with pytest.raises(ValueError, match="no phase images"):
        read_multi_echo(tmp_path / "a").qsm_raw_study()
    next((tmp_path / "a" / "mag").glob("e02_0002.dcm")).unlink()  # an incomplete echo
    with pytest.raises(ValueError, match="different numbers of slices"):
        read_multi_echo(tmp_path / "a")
    # real/imaginary images instead of magnitude/phase, and an enhanced multi-frame file: named, not misread
    import pydicom

    write_multi_echo_dicom(small, tmp_path / "ri")
    for f in (tmp_path / "ri").rglob("*.dcm"):
        ds = pydicom.dcmread(str(f))
        ds.ImageType = ["ORIGINAL", "PRIMARY", "R" if "mag" in f.parts else "I", "ND"]
        ds.save_as(str(f))
    with pytest.raises(ValueError, match="real and imaginary"):
        read_multi_echo(tmp_path / "ri")
    one = pydicom.dcmread(str(next((tmp_path / "ri").rglob("*.dcm"))))
    one.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR Image Storage
    one.NumberOfFrames = 2
    (tmp_path / "enhanced").mkdir()
    one.save_as(str(tmp_path / "enhanced" / "mf.dcm"))
    with pytest.raises(ValueError, match="2 frames but 0 per-frame functional groups"):
        read_multi_echo(tmp_path / "enhanced")
    # an enhanced file whose frames lost their positions, or whose pixel data is cut short
    write_multi_echo_dicom(small, tmp_path / "mf", enhanced=True)
    mag = tmp_path / "mf" / "mag" / "enhanced.dcm"
    ds = pydicom.dcmread(str(mag))
    del ds.PerFrameFunctionalGroupsSequence[3].PlanePositionSequence
    ds.save_as(str(tmp_path / "cut.dcm"))
    with pytest.raises(ValueError, match="frame 4 has no plane position"):
        read_multi_echo(tmp_path / "cut.dcm")
    ds = pydicom.dcmread(str(mag))
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(str(mag))
    with pytest.raises(ValueError, match="could not be decoded"):
        read_multi_echo(tmp_path / "mf")
    (tmp_path / "nothing_here").mkdir()
    with pytest.raises(ValueError, match="no MR images"):
        read_multi_echo(tmp_path / "nothing_here")


def test_one_enhanced_file_with_magnitude_and_phase_frames(phantom, tmp_path):
    """Philips-style: magnitude and phase frames in one multi-frame file, told apart per frame by
    ComplexImageComponent, each with its own rescale; read as the two-series export is."""
    import copy

    import pydicom

    me, _ = phantom
    small = MultiEcho(me.magnitude[:10, :12, :5], me.phase[:10, :12, :5], me.affine, me.echo_times_ms, 3.0)
    write_multi_echo_dicom(small, tmp_path / "two", enhanced=True)
    mag, phase = (pydicom.dcmread(str(tmp_path / "two" / p / "enhanced.dcm")) for p in ("mag", "phase"))
    mixed = copy.deepcopy(mag)
    mixed.ComplexImageComponent = "MIXED"
    del mixed.SharedFunctionalGroupsSequence[0].MRImageFrameTypeSequence
    del mixed.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence
    frames = []
    for src in (mag, phase):
        shared = src.SharedFunctionalGroupsSequence[0]
        for f in src.PerFrameFunctionalGroupsSequence:
            f = copy.deepcopy(f)
            f.MRImageFrameTypeSequence = copy.deepcopy(shared.MRImageFrameTypeSequence)
            f.PixelValueTransformationSequence = copy.deepcopy(shared.PixelValueTransformationSequence)
            frames.append(f)
    mixed.PerFrameFunctionalGroupsSequence = pydicom.sequence.Sequence(frames)
    mixed.NumberOfFrames = len(frames)
    mixed.PixelData = mag.PixelData + phase.PixelData
    (tmp_path / "one").mkdir()
    mixed.save_as(str(tmp_path / "one" / "mixed.dcm"))
    a, b = read_multi_echo(tmp_path / "one"), read_multi_echo(tmp_path / "two")
    assert a.echo_times_ms == b.echo_times_ms == small.echo_times_ms
    np.testing.assert_array_equal(a.magnitude, b.magnitude)
    np.testing.assert_array_equal(a.phase, b.phase)
    np.testing.assert_allclose(a.phase, small.phase, atol=1e-5)
    np.testing.assert_allclose(a.affine, small.affine, atol=1e-5)


def test_dicom_import_then_infer_matches_the_native_study(phantom, tmp_path):
    me, mask = phantom
    write_multi_echo_dicom(me, tmp_path / "patient7")
    assert main(["import", "dicom", str(tmp_path / "patient7"), "--studies", str(tmp_path / "studies")]) == 0
    study = tmp_path / "studies" / "patient7_qsmraw.nii.gz"
    meta = json.loads(study.with_name("patient7_qsmraw.json").read_text())
    assert meta["task"] == "qsm_raw" and meta["echo_times_ms"] == me.echo_times_ms and meta["B0_T"] == 3.0
    img = nib.load(study)
    np.testing.assert_allclose(img.affine, me.affine, atol=1e-5)
    assert img.shape == (*me.magnitude.shape[:3], 2 * E + 1)
    np.testing.assert_array_equal(img.dataobj[..., -1] > 0, mask)  # the magnitude mask finds the phantom's brain
    spec = task_spec("qsm_raw")
    native = spec.call(np.concatenate([me.magnitude, me.phase, mask[..., None]], -1), me.affine, {**meta, "B0_dir": list(b0_direction(me.affine))}, "tkd", {})
    imported = spec.call(np.asarray(img.dataobj, np.float32), img.affine, meta, "tkd", {})
    a, b = native[0].data[mask], imported[0].data[mask]
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 1e-4  # float tolerance
    assert main(["import", "dicom", str(tmp_path / "patient7"), "--studies", str(tmp_path / "studies")]) == 2  # kept


def test_bids_round_trip_import_and_derivatives(phantom, tmp_path):
    me, mask = phantom
    root = tmp_path / "bids"
    write_bids_megre(me, root, "07", session="pre", mask=mask)
    (acq,) = find_megre(root)
    assert acq.name == "sub-07_ses-pre" and len(acq.magnitudes) == E and acq.mask is not None
    back = read_megre(acq, root)
    assert back.echo_times_ms == pytest.approx(me.echo_times_ms) and back.field_strength_t == 3.0
    np.testing.assert_allclose(back.affine, me.affine, atol=1e-5)
    np.testing.assert_allclose(back.phase, me.phase, atol=1e-5)
    np.testing.assert_array_equal(read_mask(acq, back.magnitude.shape[:3], back.affine), mask)

    assert main(["import", "bids", str(root), "--studies", str(tmp_path / "studies")]) == 0
    assert json.loads((tmp_path / "studies" / "sub-07_ses-pre_qsmraw.json").read_text())["task"] == "qsm_raw"

    assert main(["infer", "qsm_raw", "--bids", str(root), "--method", "tkd"]) == 0
    deriv = root / "derivatives" / "qmri"
    desc = json.loads((deriv / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "qmri"
    chi = deriv / "sub-07" / "ses-pre" / "anat" / "sub-07_ses-pre_desc-tkd_Chimap.nii.gz"
    side = json.loads(chi.with_name(chi.name.replace(".nii.gz", ".json")).read_text())
    assert side["Units"] == "ppm" and side["Method"] == "tkd" and side["BIDSStandardSuffix"] is True
    assert any(s.endswith("_echo-1_part-phase_MEGRE.nii.gz") for s in side["Sources"])
    img = nib.load(chi)
    assert img.shape == mask.shape and np.allclose(img.affine, me.affine, atol=1e-5)
    assert img.header.get_intent()[2] == "ppm" and np.all(img.get_fdata()[~mask] == 0)
    before = chi.stat().st_mtime_ns
    assert main(["infer", "qsm_raw", "--bids", str(root), "--method", "tkd"]) == 0  # resumable: nothing redone
    assert chi.stat().st_mtime_ns == before
    # OEF from the echoes and the susceptibility derivative (the classical fit: any echo times)
    assert main(["infer", "oef", "--bids", str(root), "--method", "qq_fit", "--chi-method", "tkd"]) == 0
    oef = deriv / "sub-07" / "ses-pre" / "anat" / "sub-07_ses-pre_desc-qqfit_OEFmap.nii.gz"
    oside = json.loads(oef.with_name(oef.name.replace(".nii.gz", ".json")).read_text())
    assert oside["Units"] == "%" and oside["BIDSStandardSuffix"] is False
    v = nib.load(oef).get_fdata()[mask]
    assert 0 <= v.min() and v.max() <= 100 and np.isfinite(v).all()
    from bids_validator import BIDSValidator

    validator = BIDSValidator()  # the BIDS schema's path rules (bidsschematools)
    for f in root.rglob("*"):  # the raw dataset the phantom was written as is valid BIDS
        if f.is_file() and "derivatives" not in f.parts and "desc-brain" not in f.name:
            assert validator.is_bids("/" + str(f.relative_to(root))), f
    for f in deriv.rglob("*.nii.gz"):  # every map has its JSON; a BIDS suffix map is a valid BIDS path but for desc-
        assert f.with_name(f.name.replace(".nii.gz", ".json")).is_file()
        parts = f.name[: -len(".nii.gz")].split("_")
        assert parts[0] == "sub-07" and all("-" in p for p in parts[:-1]) and parts[-1].endswith("map")
        if json.loads(f.with_name(f.name.replace(".nii.gz", ".json")).read_text())["BIDSStandardSuffix"]:
            plain = "_".join(p for p in parts if not p.startswith("desc-")) + ".nii.gz"
            assert validator.is_bids("/" + str(f.relative_to(deriv).with_name(plain))), f


def test_bids_problems_are_reported_per_acquisition(phantom, tmp_path):
    me, _ = phantom
    root = tmp_path / "bids"
    write_bids_megre(MultiEcho(me.magnitude, None, me.affine, me.echo_times_ms, 3.0), root, "08")
    assert main(["infer", "qsm_raw", "--bids", str(root), "--method", "tkd"]) == 1  # no phase: reported, not a crash
    assert main(["infer", "qsm", "--bids", str(root)]) == 2  # a local field map is no raw BIDS image
    assert main(["infer", "oef", "--bids", str(root), "--method", "qq_fit"]) == 1  # no susceptibility yet


@pytest.mark.parametrize("enhanced", [False, True], ids=["classic", "enhanced"])
def test_a_map_from_an_imported_dicom_study_as_a_parametric_map(phantom, tmp_path, enhanced):
    """DICOM in -> qmri infer -> Parametric Map out: float values and UCUM units read back with
    pydicom, referencing the magnitude series, on the source's grid (for an enhanced source the
    frames' positions are written from the source's first-echo frames)."""
    import pydicom

    me, _ = phantom
    small = MultiEcho(me.magnitude[:, :, 6:22], me.phase[:, :, 6:22], me.affine, me.echo_times_ms, 3.0)
    uids = write_multi_echo_dicom(small, tmp_path / "p9", enhanced=enhanced)
    assert main(["import", "dicom", str(tmp_path / "p9"), "--studies", str(tmp_path / "s")]) == 0
    assert main(["infer", "qsm_raw", str(tmp_path / "s" / "p9_qsmraw.nii.gz"), "--method", "tkd", "--out", str(tmp_path / "maps")]) == 0
    result = tmp_path / "maps" / "p9_qsmraw_qsm_raw_tkd.nii.gz"
    out = tmp_path / "chi_pm.dcm"
    assert main(["export-pm", str(result), "--source", str(tmp_path / "p9"), "--out", str(out)]) == 0
    pm = pydicom.dcmread(str(out))
    assert pm.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
    assert int(pm.NumberOfFrames) == small.magnitude.shape[2]
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "ppm" and mapping.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator == "UCUM"
    chi = nib.load(result).get_fdata(dtype=np.float32)[..., 0]
    frames = pm.pixel_array.astype(np.float32) * float(mapping.RealWorldValueSlope) + float(mapping.RealWorldValueIntercept)
    np.testing.assert_allclose(np.transpose(frames, (2, 1, 0)), chi, atol=1e-6)
    assert pm.ReferencedSeriesSequence[0].SeriesInstanceUID == uids["mag"]
    positions = np.array([[float(x) for x in f.PlanePositionSequence[0].ImagePositionPatient] for f in pm.PerFrameFunctionalGroupsSequence])
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ small.affine
    np.testing.assert_allclose(positions, [(lps @ [0, 0, k, 1.0])[:3] for k in range(small.magnitude.shape[2])], atol=1e-4)
    with pytest.raises(SystemExit) as e:  # never overwrites: a usage error
        main(["export-pm", str(result), "--source", str(tmp_path / "p9"), "--out", str(out)])
    assert e.value.code == 2


def test_bids_t2w_and_pet_images_become_synthesis_and_pvc_inputs(tmp_path):
    from qmri.simulate.bids_export import write_dataset_description

    root = tmp_path / "bids"
    write_dataset_description(root)
    t2 = nib.load(SAMPLE / "studies" / "sub-1000_t2w.nii.gz")
    (root / "sub-03" / "anat").mkdir(parents=True)
    nib.save(t2, root / "sub-03" / "anat" / "sub-03_T2w.nii.gz")
    pet = nib.load(SAMPLE / "studies" / "sub-1000_pet.nii.gz")
    (root / "sub-03" / "pet").mkdir(parents=True)
    pet_3d = np.asarray(pet.dataobj, dtype=np.float32)
    pet_3d = pet_3d[..., 0] if pet_3d.ndim == 4 else pet_3d  # a BIDS PET is the PET alone (the sample study adds tissue maps)
    nib.save(nib.Nifti1Image(pet_3d, pet.affine), root / "sub-03" / "pet" / "sub-03_pet.nii.gz")
    psf = json.loads((SAMPLE / "studies" / "sub-1000_pet.json").read_text())["psf_fwhm_mm"]
    (root / "sub-03" / "pet" / "sub-03_pet.json").write_text(json.dumps({"TracerName": "PiB", "psf_fwhm_mm": psf}))
    assert main(["import", "bids", str(root), "--studies", str(tmp_path / "studies")]) == 0
    assert json.loads((tmp_path / "studies" / "sub-03_t2w.json").read_text())["task"] == "synthetic_ct"
    assert json.loads((tmp_path / "studies" / "sub-03_pet.json").read_text())["psf_fwhm_mm"] == psf
    assert main(["infer", "synthetic_ct", "--bids", str(root), "--method", "bulk_density"]) == 0
    sct = root / "derivatives" / "qmri" / "sub-03" / "anat" / "sub-03_desc-bulkdensity_sCTmap.nii.gz"
    assert json.loads(sct.with_name(sct.name.replace(".nii.gz", ".json")).read_text())["Units"] == "HU"
    assert main(["infer", "pvc", "--bids", str(root), "--method", "rbv"]) == 1  # RBV needs tissue maps: reported, not a crash
    assert main(["infer", "pvc", "--bids", str(root), "--method", "van_cittert"]) == 0  # PET-only, PSF from the PET's JSON
    assert (root / "derivatives" / "qmri" / "sub-03" / "pet" / "sub-03_desc-vancittert_PVCmap.nii.gz").is_file()


def test_dicom_ct_pet_and_t2w_series_become_image_task_studies(tmp_path):
    """A patient folder with a CT, a PET in Bq/ml (per-slice slopes), a T2-weighted MR and a T1w MR:
    the first three become synthetic_mr, pvc (in SUV) and synthetic_ct studies with their values and
    geometry; the T1w is named as not imported."""
    from qmri.simulate.dicom_export import write_image_dicom

    def block(study):
        img = nib.load(SAMPLE / "studies" / f"{study}.nii.gz")
        d = np.asarray(img.dataobj, np.float32)
        return (d[..., 0] if d.ndim == 4 else d)[30:62, 30:70, 30:54].copy(), img.affine.copy()

    ct, ct_aff = block("sub-1000_ct")
    suv, pet_aff = block("sub-1000_pet")
    t2, t2_aff = block("sub-1000_t2w")
    factor = 70_000.0 / (370e6 * 2.0 ** (-3600.0 / 6586.2))  # SUV per Bq/ml: 70 kg, 370 MBq injected 60 min before the scan
    src = tmp_path / "p5"
    write_image_dicom(ct, ct_aff, src / "ct", "CT", description="Head CT")
    write_image_dicom(suv / factor, pet_aff, src / "pet", "PT", description="Amyloid PET", header=pet_header())
    write_image_dicom(t2, t2_aff, src / "t2", "MR", description="T2 TSE axial", header={"EchoTime": "100", "RepetitionTime": "5000"})
    write_image_dicom(t2, t2_aff, src / "t1", "MR", description="T1 MPRAGE", header={"EchoTime": "3", "RepetitionTime": "2300"})
    out = tmp_path / "studies"
    assert main(["import", "dicom", str(src), "--studies", str(out), "--psf-fwhm-mm", "6.5"]) == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["p5_ct.nii.gz", "p5_pet.nii.gz", "p5_t2w.nii.gz"]
    for study, ref, aff, task, atol in (("p5_ct", ct, ct_aff, "synthetic_mr", 0.5), ("p5_pet", suv, pet_aff, "pvc", 1e-4 * suv.max()), ("p5_t2w", t2, t2_aff, "synthetic_ct", t2.max() / 65535)):
        img = nib.load(out / f"{study}.nii.gz")
        meta = json.loads((out / f"{study}.json").read_text())
        assert meta["task"] == task
        np.testing.assert_allclose(img.affine, aff, atol=1e-4)
        np.testing.assert_allclose(np.asarray(img.dataobj), ref, atol=atol)
    pet_meta = json.loads((out / "p5_pet.json").read_text())
    assert pet_meta["psf_fwhm_mm"] == 6.5 and pet_meta["units"] == ["SUV"] and pet_meta["suv_factor"] == pytest.approx(factor, rel=1e-9)
    # the imported PET maps as the original SUV volume does
    spec = task_spec("pvc")
    a = spec.call(suv, pet_aff, {"psf_fwhm_mm": 6.5}, "van_cittert", {})[0].data
    b = spec.call(np.asarray(nib.load(out / "p5_pet.nii.gz").dataobj, np.float32), pet_aff, pet_meta, "van_cittert", {})[0].data
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 1e-3


def test_pet_without_what_suv_needs_is_refused_with_the_reason(tmp_path):
    import pydicom

    from qmri.io.dicom_images import suv_factor
    from qmri.io.importers import import_dicom
    from qmri.simulate.dicom_export import write_image_dicom

    def header(**kw):
        ds = pydicom.Dataset()
        for k, v in pet_header(**kw).items():
            setattr(ds, k, v)
        return ds

    assert suv_factor(header(decay="ADMIN")) == pytest.approx(70_000 / 370e6)  # already decay corrected to the injection
    assert suv_factor(header(units="GML")) == 1.0
    for kw, reason in (
        ({"units": "CNTS"}, "Units CNTS"),
        ({"weight_kg": 0.0}, "PatientWeight"),
        ({"dose_bq": 0.0}, "RadionuclideTotalDose"),
        ({"decay": "NONE"}, "DecayCorrection NONE"),
        ({"injected": "120000"}, "after the injection"),
        ({"injected": "1o0000"}, "not DICOM DA / TM"),
    ):
        with pytest.raises(ValueError, match=reason):
            suv_factor(header(**kw))
    d = np.ones((6, 5, 4), np.float32) * 1000.0
    write_image_dicom(d, np.eye(4), tmp_path / "pet", "PT", header=pet_header(units="CNTS"))
    with pytest.raises(ValueError, match="nothing to import.*Units CNTS"):
        import_dicom(tmp_path / "pet", tmp_path / "studies")
    assert not (tmp_path / "studies").exists()
    with pytest.raises(ValueError, match="psf_fwhm_mm"):
        import_dicom(tmp_path / "pet", tmp_path / "studies", psf_fwhm_mm=-3)


def test_a_t2w_of_the_same_session_is_not_read_as_an_echo(phantom, tmp_path):
    """A T2-weighted series in the multi-echo GRE's study and frame of reference (same orientation,
    another grid) is its own synthetic-CT study; the GRE is read as before."""
    from qmri.simulate.dicom_export import write_image_dicom

    me, _ = phantom
    small = MultiEcho(me.magnitude[:12, :14, :6], me.phase[:12, :14, :6], me.affine, me.echo_times_ms, 3.0)
    uids = write_multi_echo_dicom(small, tmp_path / "p6")
    t2 = np.random.default_rng(1).uniform(100, 900, (12, 14, 9)).astype(np.float32)
    write_image_dicom(t2, me.affine, tmp_path / "p6" / "t2", "MR", description="T2 TSE", header={"EchoTime": "100", "RepetitionTime": "5000"}, study_uid=uids["study"], frame_uid=uids["frame_of_reference"])
    assert read_multi_echo(tmp_path / "p6").magnitude.shape == small.magnitude.shape
    assert main(["import", "dicom", str(tmp_path / "p6"), "--studies", str(tmp_path / "s")]) == 0
    assert sorted(p.name for p in (tmp_path / "s").glob("*.nii.gz")) == ["p6_qsmraw.nii.gz", "p6_t2w.nii.gz"]
    assert nib.load(tmp_path / "s" / "p6_t2w.nii.gz").shape == t2.shape


@pytest.mark.parametrize(
    "description, te, tr, inversion, kind",
    [
        ("T2 TSE", 100, 5000, None, "T2w"),
        ("ax T2 FSE", 90, 4000, None, "T2w"),
        ("T2 star", 20, 600, None, None),
        ("T2*", 20, 600, None, None),
        ("t2_flair", 120, 9000, 2500, None),
        ("T2 SWI", 20, 30, None, None),
        ("T1 MPRAGE", 3, 2300, 900, None),
        ("", 100, 5000, None, "T2w"),  # no description: long TE and TR, no inversion
        ("", 100, 9000, 2500, None),  # FLAIR-like
        ("", 20, 600, None, None),
    ],
)
def test_which_mr_series_is_taken_for_a_t2w(description, te, tr, inversion, kind):
    import types

    from qmri.io.dicom_images import mr_kind

    ds = types.SimpleNamespace(SeriesDescription=description, ProtocolName="", EchoTime=str(te), RepetitionTime=str(tr), InversionTime=inversion)
    assert mr_kind(ds, 1) == kind
    assert mr_kind(ds, 4) is None  # several echoes: not a T2w input


def test_a_pet_in_time_frames_becomes_their_duration_weighted_mean(tmp_path):
    """Amyloid PET reconstructed as time frames (each slice position once per frame): the study is
    the frames' mean weighted by ActualFrameDuration, in SUV; frames on different grids are refused."""
    from qmri.io.importers import import_dicom
    from qmri.simulate.dicom_export import write_image_dicom

    rng = np.random.default_rng(3)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    frames = [rng.uniform(0.5, 2.5, (10, 12, 8)).astype(np.float32) for _ in range(2)]  # SUV
    durations_ms = [200_000.0, 400_000.0]
    factor = 70_000.0 / (370e6 * 2.0 ** (-3600.0 / 6586.2))
    series = "1.2.826.0.1.3680043.8.498.1"
    for i, (suv, d) in enumerate(zip(frames, durations_ms)):
        header = {**pet_header(), "FrameReferenceTime": f"{(i + 0.5) * d:g}", "ActualFrameDuration": f"{d:g}"}
        write_image_dicom(suv / factor, aff, tmp_path / "pet" / f"frame{i + 1}", "PT", header=header, series_uid=series)
    (study,) = import_dicom(tmp_path / "pet", tmp_path / "studies")
    expected = (frames[0] * durations_ms[0] + frames[1] * durations_ms[1]) / sum(durations_ms)
    np.testing.assert_allclose(np.asarray(nib.load(study).dataobj), expected, atol=2e-4 * expected.max())
    assert json.loads(study.with_name("pet_pet.json").read_text())["time_frames_s"] == [200.0, 400.0]
    # a second frame on another grid
    write_image_dicom(frames[0][:, :, :6] / factor, aff, tmp_path / "bad" / "frame1", "PT", header={**pet_header(), "FrameReferenceTime": "100"}, series_uid=series)
    write_image_dicom(frames[1] / factor, aff, tmp_path / "bad" / "frame2", "PT", header={**pet_header(), "FrameReferenceTime": "300"}, series_uid=series)
    with pytest.raises(ValueError, match="time frame 2 lies on another grid"):
        import_dicom(tmp_path / "bad", tmp_path / "studies2")


def test_headers_claiming_huge_images_are_refused_before_decoding(phantom, tmp_path):
    """A series whose headers claim far more pixels than it holds (hostile or broken) is refused by
    the NIfTI inputs' voxel limit before any pixel data is decoded."""
    import pydicom

    from qmri.io.importers import import_dicom
    from qmri.simulate.dicom_export import write_image_dicom

    write_image_dicom(np.zeros((6, 5, 4), np.float32), np.eye(4), tmp_path / "ct", "CT")
    me, _ = phantom
    write_multi_echo_dicom(MultiEcho(me.magnitude[:6, :5, :4], me.phase[:6, :5, :4], me.affine, me.echo_times_ms, 3.0), tmp_path / "gre")
    for f in (tmp_path / "ct").glob("*.dcm"):
        ds = pydicom.dcmread(str(f))
        ds.Rows = ds.Columns = 65535
        ds.save_as(str(f))
    with pytest.raises(ValueError, match="headers claim 17,179,344,900 voxel values"):
        import_dicom(tmp_path / "ct", tmp_path / "studies")
    for f in (tmp_path / "gre" / "mag").glob("*.dcm"):
        ds = pydicom.dcmread(str(f))
        ds.Rows = ds.Columns = 20000
        ds.save_as(str(f))
    with pytest.raises(ValueError, match="the multi-echo acquisition: the headers claim"):
        read_multi_echo(tmp_path / "gre")


def test_a_folder_scan_reports_progress(tmp_path, monkeypatch, caplog):
    import logging

    from qmri.io import dicom_input
    from qmri.simulate.dicom_export import write_image_dicom

    write_image_dicom(np.zeros((6, 5, 5), np.float32), np.eye(4), tmp_path / "ct", "CT")
    monkeypatch.setattr(dicom_input, "PROGRESS_EVERY", 2)
    with caplog.at_level(logging.INFO, logger="qmri.io.dicom_input"):
        assert len(dicom_input.scan(tmp_path, modalities=None)) == 5
    assert [r.getMessage() for r in caplog.records] == ["DICOM headers read: 2 of 5 files", "DICOM headers read: 4 of 5 files"]


def test_oef_from_a_dicom_study_computes_its_susceptibility_first(phantom, tmp_path, capsys):
    """DICOM in -> qsm_raw study -> `qmri infer oef --chi-method tkd`: the OEF maps equal the task's
    own on (magnitudes + TKD susceptibility); the result names the chi method; misuse is named."""
    me, mask = phantom
    small = MultiEcho(me.magnitude[4:28, 6:30, 8:22], me.phase[4:28, 6:30, 8:22], me.affine, me.echo_times_ms, 3.0)
    write_multi_echo_dicom(small, tmp_path / "p8")
    assert main(["import", "dicom", str(tmp_path / "p8"), "--studies", str(tmp_path / "s")]) == 0
    study = tmp_path / "s" / "p8_qsmraw.nii.gz"
    assert main(["infer", "oef", str(study), "--method", "qq_fit", "--chi-method", "tkd", "--out", str(tmp_path / "maps")]) == 0
    result = json.loads((tmp_path / "maps" / "p8_qsmraw_oef_qq_fit.json").read_text())
    assert result["chi_method"] == "tkd" and result["maps"][0]["name"] == "OEF"
    raw = np.asarray(nib.load(study).dataobj, np.float32)
    meta = json.loads(study.with_name("p8_qsmraw.json").read_text())
    chi = task_spec("qsm_raw").call(raw, nib.load(study).affine, meta, "tkd", {})[0].data
    brain = raw[..., -1] != 0
    oef_in = np.concatenate([raw[..., :E], np.where(brain, chi, 0)[..., None]], -1)
    ref = task_spec("oef").call(oef_in, nib.load(study).affine, {"echo_times_ms": meta["echo_times_ms"], "B0_T": 3.0, "B0_dir": meta["B0_dir"]}, "qq_fit", {})[0].data
    got = nib.load(tmp_path / "maps" / "p8_qsmraw_oef_qq_fit.nii.gz").get_fdata()[..., 0]
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert main(["infer", "oef", str(study), "--method", "qq_fit", "--chi-method", "nope", "--out", str(tmp_path / "m2")]) == 2
    assert "unknown --chi-method 'nope'" in capsys.readouterr().err
    assert main(["infer", "qsm_raw", str(study), "--method", "tkd", "--chi-method", "tkd", "--out", str(tmp_path / "m3")]) == 2
    assert "--chi-method applies to oef" in capsys.readouterr().err
