"""MONAI Label on a real PACS (issue 29): the app with a DICOMweb datastore on a local Orthanc.

A phantom multi-echo GRE (magnitude and phase series) is stored in Orthanc; the server, started
with ``--studies http://127.0.0.1:PORT/dicom-web``, infers ``qsm_raw`` by the magnitude series' UID
and stores the susceptibility map back to Orthanc as a DICOM Parametric Map. Skipped where the
Debian packages ``orthanc`` and ``orthanc-dicomweb`` are not installed (.ci/run installs them when
it can)."""

from __future__ import annotations

import gzip
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests

from conftest import REPO, SAMPLE
from qmri.bench.serve import start_server, stop_server
from qmri.io.multi_echo import MultiEcho
from qmri.simulate.dicom_export import write_multi_echo_dicom
from qmri.tasks.registry import task_spec

sys.path.insert(0, str(REPO / "slicer_extension" / "QuantitativeMaps"))
from QuantitativeMapsLib.client import parse_multipart  # noqa: E402  (the client's parser, as Slicer uses it)

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(shutil.which("Orthanc") is None or not PLUGIN.exists(), reason="Orthanc with its DICOMweb plugin is not installed (Debian: apt-get install orthanc orthanc-dicomweb)"),
]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    root = tmp_path_factory.mktemp("orthanc")
    port = _port()
    conf = {
        "Name": "qmri-test",
        "StorageDirectory": str(root / "db"),
        "IndexDirectory": str(root / "db"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (root / "orthanc.json").write_text(json.dumps(conf))
    log = open(root / "orthanc.log", "w")
    proc = subprocess.Popen(["Orthanc", str(root / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(60):
        try:
            if requests.get(f"{url}/system", timeout=1).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"Orthanc did not start: {(root / 'orthanc.log').read_text()[-2000:]}")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def stored_acquisition(orthanc, tmp_path_factory):
    img = nib.load(SAMPLE / "studies" / "sub-1000_qsmraw.nii.gz")
    meta = json.loads((SAMPLE / "studies" / "sub-1000_qsmraw.json").read_text())
    d = img.get_fdata(dtype=np.float32)[22:58, 28:72, 34:50]
    aff = img.affine.copy()
    aff[:3, 3] += aff[:3, :3] @ [22, 28, 34]
    phase = ((np.rint((d[..., 4:8] / np.pi * 4096 + 4096) / 2).clip(0, 4095) * 2 - 4096) / 4096 * np.pi).astype(np.float32)
    me = MultiEcho(d[..., :4].copy(), phase, aff, meta["echo_times_ms"], 3.0)
    folder = tmp_path_factory.mktemp("dicom")
    uids = write_multi_echo_dicom(me, folder / "classic")
    uids["enhanced"] = write_multi_echo_dicom(me, folder / "enhanced", patient_id="phantom-mf", enhanced=True)
    # a PET in Bq/ml with what SUV needs, and one without the patient's weight
    from qmri.simulate.dicom_export import pet_header, write_image_dicom

    pet = nib.load(SAMPLE / "studies" / "sub-1000_pet.nii.gz")
    suv = np.asarray(pet.dataobj, np.float32)[..., 0][30:62, 30:70, 30:54].copy()
    factor = 70_000.0 / (370e6 * 2.0 ** (-3600.0 / 6586.2))
    uids["pet"] = write_image_dicom(suv / factor, pet.affine, folder / "pet", "PT", patient_id="phantom-pet", description="Amyloid PET", header=pet_header())
    uids["pet_no_weight"] = write_image_dicom(suv / factor, pet.affine, folder / "pet2", "PT", patient_id="phantom-pet2", description="PET without weight", header=pet_header(weight_kg=0.0))
    uids["suv"], uids["pet_affine"] = suv, pet.affine
    # a T2-weighted series in the multi-echo GRE's study and frame of reference, on another grid
    t2 = nib.load(SAMPLE / "studies" / "sub-1000_t2w.nii.gz")
    uids["t2w_block"] = np.asarray(t2.dataobj, np.float32)[20:70, 20:80, 20:60].copy()
    uids["t2w"] = write_image_dicom(uids["t2w_block"], t2.affine, folder / "t2", "MR", description="T2 TSE", header={"EchoTime": "100", "RepetitionTime": "5000"}, study_uid=uids["study"], frame_uid=uids["frame_of_reference"])
    for f in sorted(folder.rglob("*.dcm")):
        assert requests.post(f"{orthanc}/instances", data=f.read_bytes(), timeout=30).ok
    return uids, me, d[..., -1] > 0


def test_infer_a_pacs_series_and_store_the_map_back(orthanc, stored_acquisition, model_dir, tmp_path):
    uids, me, mask = stored_acquisition
    proc, url = start_server(f"{orthanc}/dicom-web", model_dir, tmp_path / "server.log", env={"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(tmp_path / "cache")}, conf={"skip_trainers": "true"})
    try:
        r = requests.post(f"{url}/infer/qsm_raw", params={"image": uids["mag"], "output": "all"}, data={"params": json.dumps({"method": "tkd", "store_pm": True})}, timeout=300)
        assert r.status_code == 200, r.text[:500]
        parts = parse_multipart(r.headers["content-type"], r.content)
        result = json.loads(parts.pop("params")[1])
        assert result["maps"][0]["units"] == "ppm" and "store_error" not in result, result
        (pm_series,) = result["stored_series"]
        # the same map as the task code on the acquisition's own arrays (the study built from the headers)
        raw = next(iter(parts.values()))[1]
        chi = nib.Nifti1Image.from_bytes(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).get_fdata()[..., 0]
        sidecar = {"echo_times_ms": me.echo_times_ms, "B0_T": 3.0, "B0_dir": [0.0, 0.0, 1.0], "units": ["a.u."] * 4 + ["rad"] * 4 + ["1"]}
        ref = task_spec("qsm_raw").call(np.concatenate([me.magnitude, me.phase, mask[..., None]], -1), me.affine, sidecar, "tkd", {})[0].data
        assert np.linalg.norm(chi[mask] - ref[mask]) / np.linalg.norm(ref[mask]) < 1e-4
        # the Parametric Map is in Orthanc, referencing the magnitude series
        from dicomweb_client.api import DICOMwebClient

        pacs = DICOMwebClient(f"{orthanc}/dicom-web")
        (found,) = pacs.search_for_series(search_filters={"SeriesInstanceUID": pm_series})
        (pm,) = pacs.retrieve_series(uids["study"], pm_series)
        assert pm.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30" and pm.ReferencedSeriesSequence[0].SeriesInstanceUID == uids["mag"]
        unit = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0].MeasurementUnitsCodeSequence[0]
        assert unit.CodeValue == "ppm" and unit.CodingSchemeDesignator == "UCUM"
        # the same acquisition stored as enhanced multi-frame files gives the same map
        r = requests.post(f"{url}/infer/qsm_raw", params={"image": uids["enhanced"]["mag"], "output": "image"}, data={"params": json.dumps({"method": "tkd"})}, timeout=300)
        assert r.status_code == 200, r.text[:500]
        chi_mf = nib.Nifti1Image.from_bytes(gzip.decompress(r.content) if r.content[:2] == b"\x1f\x8b" else r.content).get_fdata()[..., 0]
        assert np.linalg.norm(chi_mf[mask] - ref[mask]) / np.linalg.norm(ref[mask]) < 1e-4
        # a PET series from the PACS is mapped in SUV (from its radiopharmaceutical headers), and its map stored back
        psf = json.dumps({"method": "van_cittert", "sidecar": {"psf_fwhm_mm": 6.5}, "store_pm": True})
        r = requests.post(f"{url}/infer/pvc", params={"image": uids["pet"], "output": "all"}, data={"params": psf}, timeout=300)
        assert r.status_code == 200, r.text[:500]
        parts = parse_multipart(r.headers["content-type"], r.content)
        result = json.loads(parts.pop("params")[1])
        raw = next(iter(parts.values()))[1]
        got = nib.Nifti1Image.from_bytes(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).get_fdata()
        got = got[..., 0] if got.ndim == 4 else got
        ref = task_spec("pvc").call(uids["suv"], uids["pet_affine"], {"psf_fwhm_mm": 6.5}, "van_cittert", {})[0].data
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-3
        (pm_series,) = result["stored_series"]
        (pm,) = pacs.retrieve_series(pacs.search_for_series(search_filters={"SeriesInstanceUID": pm_series})[0]["0020000D"]["Value"][0], pm_series)
        assert pm.ReferencedSeriesSequence[0].SeriesInstanceUID == uids["pet"]
        r = requests.post(f"{url}/infer/pvc", params={"image": uids["pet_no_weight"], "output": "json"}, data={"params": psf}, timeout=120)
        assert r.status_code == 422 and "PatientWeight" in r.text, r.text[:300]
        # the T2w beside the multi-echo GRE is its own synthetic-CT input, not a part of the GRE
        r = requests.post(f"{url}/infer/synthetic_ct", params={"image": uids["t2w"], "output": "image"}, data={"params": json.dumps({"method": "bulk_density"})}, timeout=300)
        assert r.status_code == 200, r.text[:500]
        sct = nib.Nifti1Image.from_bytes(gzip.decompress(r.content) if r.content[:2] == b"\x1f\x8b" else r.content)
        assert sct.shape[:3] == uids["t2w_block"].shape
        # hostile and unknown ids; no uploads to a PACS-backed server
        assert requests.post(f"{url}/infer/qsm_raw", params={"image": "../../etc", "output": "json"}, timeout=30).status_code == 422
        assert requests.post(f"{url}/infer/qsm_raw", params={"image": "1.2.3.4.5", "output": "json"}, timeout=60).status_code == 404
        up = requests.put(f"{url}/datastore/image", params={"image": "x1"}, files={"file": ("x.nii.gz", b"0" * 400)}, data={"params": "{}"}, timeout=30)
        assert up.status_code in (403, 422), up.text
    finally:
        stop_server(proc)
