"""The Slicer extension's server client against the real qmri server on the sample studies."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import REPO, SAMPLE, served_weights_moved_aside

sys.path.insert(0, str(REPO / "slicer_extension" / "QuantitativeMaps"))

from QuantitativeMapsLib.client import (  # noqa: E402
    ConsentRequired,
    Job,
    QMRIClient,
    QMRIClientError,
    add_training_case,
    parse_multipart,
    run_task,
    training_progress,
)

STUDIES = SAMPLE / "studies"


def _block(study, half):
    """A small central block of a sample study, with its own affine (keeps server work to seconds)."""
    st = nib.load(STUDIES / f"{study}.nii.gz")
    d = st.get_fdata(dtype=np.float32)
    c = [n // 2 for n in d.shape[:3]]
    box = tuple(slice(x - half, x + half) for x in c)
    aff = st.affine.copy()
    aff[:3, 3] += aff[:3, :3] @ np.array([b.start for b in box])
    return d[box], aff, json.loads((STUDIES / f"{study}.json").read_text())


def test_connect_lists_tasks_from_info(server):
    url, _ = server
    client = QMRIClient(url)
    tasks = client.tasks()
    assert {"oef", "qsm", "qsm_raw", "pvc", "synthetic_ct", "synthetic_mr"} <= set(tasks)
    for name, t in tasks.items():
        assert t["description"], name
        assert t["default_method"] in t["methods"], name
        assert all("units" in o for o in t["outputs"].values()), name
    assert client.info()["name"].startswith("qmri")


def test_bad_addresses_are_plain_errors():
    with pytest.raises(QMRIClientError, match="must start with http"):
        QMRIClient("localhost:8000")
    with pytest.raises(QMRIClientError, match="cannot reach the server"):
        QMRIClient("http://127.0.0.1:9").info()


def test_upload_refused_without_consent(server, tmp_path):
    url, studies = server
    f = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), f)
    client = QMRIClient(url)
    with pytest.raises(ConsentRequired, match="only after you agree"):
        client.upload_image("no_consent", f)
    with pytest.raises(ConsentRequired):
        client.upload_label("no_consent", f)
    with pytest.raises(ConsentRequired):
        run_task(client, "qsm", f)
    assert not (studies / "no_consent.nii.gz").exists()


def _tree(folder):
    """Every file under ``folder`` with its bytes' hash: the datastore as a user would compare it."""
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_infer_by_sending_the_file_leaves_the_datastore_untouched(server, tmp_path):
    """Run as the module does: the inputs travel with the request; the datastore stays byte-identical
    and the server keeps no temporary copy of the image."""
    import tempfile

    url, studies = server
    data, aff, meta = _block("sub-1000_oef", 4)
    f = tmp_path / "slicer_oef.nii.gz"
    nib.save(nib.Nifti1Image(data, aff), f)
    client = QMRIClient(url)
    client.grant_consent()
    before = _tree(studies)
    temps = set(Path(tempfile.gettempdir()).glob("qmri_upload_*"))
    res = run_task(client, "oef", f, None, {"sidecar": meta})
    assert _tree(studies) == before
    for _ in range(50):  # the server deletes its copy once the answer is sent
        if set(Path(tempfile.gettempdir()).glob("qmri_upload_*")) <= temps:
            break
        time.sleep(0.1)
    assert set(Path(tempfile.gettempdir()).glob("qmri_upload_*")) <= temps
    assert res.map_names == ["OEF", "S0", "R2", "Y", "v", "chi_nb", "OEF_sd"]
    img = res.image()
    assert img.shape == (*data.shape[:3], 7) and np.allclose(img.affine, aff)
    assert img.get_data_dtype() == np.float32
    oef = img.get_fdata()[..., 0]
    mask = data[..., -1] != 0
    assert np.all((oef[mask] >= 0) & (oef[mask] <= 100)) and np.all(oef[~mask] == 0)
    out = res.save(tmp_path / "r.nii.gz")
    np.testing.assert_array_equal(nib.load(out).get_fdata(), img.get_fdata())


@pytest.mark.parametrize(
    "task, study, params, name, units",
    [
        ("qsm", "sub-1000_qsm", {"method": "tkd"}, "chi", "ppm"),
        ("pvc", "sub-1000_pet", {"method": "rbv"}, "PVC", "SUV"),
        ("synthetic_ct", "sub-1000_t2w", {}, "sCT", "HU"),
        ("synthetic_mr", "sub-1000_ct", {}, "sMR", "a.u."),
    ],
)
def test_every_task_on_a_sample_study(server, task, study, params, name, units):
    url, _ = server
    client = QMRIClient(url)  # no consent needed: nothing leaves the machine for a server-side study
    res = client.infer(task, study, params)
    assert res.map_names[0] == name and res.meta["maps"][0]["units"] == units
    ref = nib.load(STUDIES / f"{study}.nii.gz")
    img = res.image()
    assert img.shape[:3] == ref.shape[:3] and np.allclose(img.affine, ref.affine)
    assert np.all(np.isfinite(img.get_fdata()))


def test_qsm_raw_on_an_uploaded_block(server, tmp_path):
    url, _ = server
    data, aff, meta = _block("sub-1000_qsmraw", 12)
    f = tmp_path / "raw.nii.gz"
    nib.save(nib.Nifti1Image(data, aff), f)
    client = QMRIClient(url, consent=True)
    res = run_task(client, "qsm_raw", f, None, {"method": "tkd", "sidecar": meta})
    assert res.map_names == ["chi", "local_field"] and res.image().shape == (*data.shape[:3], 2)
    assert np.allclose(res.image().affine, aff)


def test_server_rejection_is_a_clear_error(server):
    url, _ = server
    client = QMRIClient(url)
    with pytest.raises(QMRIClientError) as e:
        client.infer("pvc", "sub-1000_pet", {"method": "deconvolve_harder"})
    assert e.value.status == 422
    assert "rejected the input" in str(e.value) and "unknown method 'deconvolve_harder'" in str(e.value)
    with pytest.raises(QMRIClientError) as e:
        client.infer("synthetic_ct", "sub-1000_pet", {})
    assert e.value.status == 422 and "3D volume" in str(e.value)
    with pytest.raises(QMRIClientError) as e:
        client.infer("no_such_task", "sub-1000_pet", {})
    assert e.value.status == 404 and "unknown task 'no_such_task'" in str(e.value)


def test_job_runs_in_background_and_can_be_cancelled(server):
    url, _ = server
    client = QMRIClient(url)
    # the classical method: this test is about the worker thread, and the network's sCT (tested above) takes
    # tens of seconds on 2 CPU cores, which would hold the server's queue for the requests below
    fast = {"method": "bulk_density"}
    job = Job(lambda j: run_task(client, "synthetic_ct", None, "sub-1000_t2w", fast, j)).start()
    assert job.wait(60) and job.error is None and job.stage == "done"
    assert job.result.map_names == ["sCT"]
    # cancel: the UI is released at once, the late result is discarded
    # events, not sleeps: the request starts only after the cancel, and the test waits for the worker
    go = threading.Event()
    slow = Job(lambda j: (go.wait(60), client.infer("synthetic_ct", "sub-1000_t2w", fast))[1]).start()
    slow.cancel()
    assert slow.done and slow.stage == "cancelled" and not go.is_set()  # released before any request
    go.set()
    slow._thread.join(120)  # the abandoned request finished in its thread ...
    assert not slow._thread.is_alive()
    assert slow.result is None and "cancelled" in str(slow.error) and slow.stage == "cancelled"  # ... and was discarded
    # errors raised in the worker reach the UI thread as the job's error
    bad = Job(lambda j: client.infer("pvc", "sub-1000_pet", {"method": "nope"})).start()
    assert bad.wait(30) and isinstance(bad.error, QMRIClientError) and bad.error.status == 422


def test_training_case_and_train_without_trainer(server, tmp_path):
    url, studies = server
    client = QMRIClient(url)
    ref = nib.load(STUDIES / "sub-1000_qsm.nii.gz")
    img, lab = tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz"
    nib.save(nib.Nifti1Image(ref.get_fdata(dtype=np.float32)[:8, :8, :8], ref.affine), img)
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), ref.affine), lab)
    with pytest.raises(ConsentRequired):
        add_training_case(client, "slicer_case", img, lab)
    client.grant_consent()
    add_training_case(client, "slicer_case", img, lab, sidecar={"B0_T": 3.0, "B0_dir": [0, 0, 1]})
    assert (studies / "slicer_case.nii.gz").exists()
    assert (studies / "labels" / "final" / "slicer_case.nii.gz").exists()
    untrainable = sorted(set(client.tasks()) - set(client.trainers()))
    assert untrainable, "every task has a trainer now: pick a model name that has none"
    with pytest.raises(QMRIClientError, match=f"cannot train '{untrainable[0]}': it has no trainer"):
        client.train_start(untrainable[0])
    status = client.train_status()
    assert status is None or status.get("status") in ("SUBMITTED", "RUNNING", "DONE", "ERROR", "STOPPED")


def test_multipart_parser():
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="params"\r\nContent-Type: application/json\r\n\r\n'
        b'{"maps": []}\r\n--XyZ\r\nContent-Disposition: form-data; name="image"; filename="r.nii.gz"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n\x1f\x8b\x00\r\n\x01\r\n--XyZ--\r\n"
    )
    parts = parse_multipart('multipart/form-data; boundary="XyZ"', body)
    assert json.loads(parts["params"][1]) == {"maps": []}
    assert parts["image"][1] == b"\x1f\x8b\x00\r\n\x01"
    with pytest.raises(QMRIClientError, match="expected a multipart"):
        parse_multipart("application/json", b"{}")


def test_retrain_flow_with_the_qsm_trainer(server, model_dir, tmp_path):
    """The extension's retrain path: a new annotated study, training started and watched, new model used."""
    url, studies = server
    client = QMRIClient(url, consent=True)
    assert "qsm" in client.trainers()
    src = STUDIES / "sub-1001_qsm.nii.gz"
    ref = STUDIES / "labels" / "final" / "sub-1001_qsm.nii.gz"
    sidecar = json.loads((STUDIES / "sub-1001_qsm.json").read_text())  # task qsm, tilted B0
    add_training_case(client, "slicer_retrain_qsm", src, ref, sidecar=sidecar, task="qsm")  # checked by the qsm trainer's reader
    assert json.loads((studies / "slicer_retrain_qsm.json").read_text())["B0_dir"] == sidecar["B0_dir"]  # layout kept
    weights = model_dir / "qsmnet" / "qsmnet.pt"
    with served_weights_moved_aside(weights):
        client.train_start("qsm", {"max_epochs": 2, "steps_per_epoch": 2, "batch_size": 2})
        seen = []
        final = client.wait_for_training(poll_s=0.3, timeout_s=600, on_status=seen.append)
        assert final.get("status") == "DONE", final
        # progress was visible while it ran: epoch of epochs, steps, the training loss, the validation metric
        running = [s["progress"] for s in seen if s.get("status") == "RUNNING" and s.get("progress")]
        assert running, [s.get("status") for s in seen]
        assert {p["epochs"] for p in running if "epochs" in p} == {2} and max(p.get("epoch") or 0 for p in running) >= 1
        assert any(p.get("stage") == "epoch done" or p.get("epoch") == 2 for p in running), running
        after_epoch = [p for p in running if p.get("epoch") == 2 or p.get("stage") == "epoch done"]
        assert all(np.isfinite(p["loss"]) for p in after_epoch if "loss" in p)
        assert any(isinstance(p.get("value"), float) and p.get("metric") for p in after_epoch), running
        fraction, text = training_progress(next(s for s in seen if s.get("progress")))
        assert text.startswith("qsm: RUNNING") and (fraction is None or 0 <= fraction <= 1)
        assert training_progress(final) == (1.0, "qsm: DONE")
        assert "progress" not in client.train_status()  # the file is gone once training ends
        assert weights.exists()  # published
        stats = client.info(refresh=True)["train_stats"]["qsm"]
        assert stats["published"]
        assert "slicer_retrain_qsm" in stats["train_studies"] + stats["val_studies"]  # the uploaded case was used
        res = client.infer("qsm", "slicer_retrain_qsm", {"method": "qsmnet"})
    assert res.meta["maps"][0]["units"] == "ppm" and res.meta["method"] == "qsmnet"
    assert res.image().shape == nib.load(src).shape


def test_a_training_case_the_trainer_would_skip_is_refused_with_the_reason(server, tmp_path):
    """Issue 28: a case sent for training is checked by its trainer's reader before it is stored;
    the Slicer client fills the sidecar's task, so a case with only B0 keys is used, not dropped."""
    url, studies = server
    client = QMRIClient(url, consent=True)
    ref = nib.load(STUDIES / "sub-1000_qsm.nii.gz")
    field = ref.get_fdata(dtype=np.float32)
    chi = nib.load(STUDIES / "labels" / "final" / "sub-1000_qsm.nii.gz").get_fdata(dtype=np.float32)
    img, lab = tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz"
    nib.save(nib.Nifti1Image(field, ref.affine), img)
    nib.save(nib.Nifti1Image(chi, ref.affine), lab)
    add_training_case(client, "slicer_case_ok", img, lab, sidecar={"B0_T": 3.0, "B0_dir": [0, 0, 1]}, task="qsm")
    assert json.loads((studies / "slicer_case_ok.json").read_text())["task"] == "qsm"
    assert (studies / "labels" / "final" / "slicer_case_ok.nii.gz").exists()
    # anisotropic voxels: the qsm trainer skips them, so the case is refused and no label is stored
    aniso = ref.affine @ np.diag([1.0, 1.0, 1.5, 1.0])
    nib.save(nib.Nifti1Image(field, aniso), img)
    nib.save(nib.Nifti1Image(chi, aniso), lab)
    with pytest.raises(QMRIClientError) as e:
        add_training_case(client, "slicer_case_aniso", img, lab, sidecar={"B0_T": 3.0, "B0_dir": [0, 0, 1]}, task="qsm")
    assert e.value.status == 422 and "would skip this case" in str(e.value) and "anisotropic" in str(e.value)
    assert not (studies / "labels" / "final" / "slicer_case_aniso.nii.gz").exists()
    # a study whose sidecar names no task, declared for training over REST
    with pytest.raises(QMRIClientError) as e:
        client.upload_label("slicer_case_aniso", lab, params={"train_for": "qsm", "overwrite": True})
    assert e.value.status == 422
    client.upload_image("slicer_case_notask", img, {"B0_dir": [0, 0, 1]})
    with pytest.raises(QMRIClientError) as e:
        client.upload_label("slicer_case_notask", lab, params={"train_for": "qsm"})
    assert e.value.status == 422 and "names no task" in str(e.value)
    with pytest.raises(QMRIClientError) as e:
        client.upload_label("slicer_case_notask", lab, params={"train_for": "qsm_raw"})
    assert e.value.status == 422 and "no trainer learns from 'qsm_raw' studies" in str(e.value)


def test_regional_oef_of_segments_sent_as_a_label_map(server, tmp_path):
    """The client sends a label map with an OEF request (consent first): each label comes back with
    its regional OEF, its mirror region's and their difference."""
    url, _ = server
    st = nib.load(STUDIES / "sub-1000_oef.nii.gz")
    mask = np.asarray(st.dataobj[..., -1]) != 0
    labels = np.zeros(mask.shape, np.int16)
    c = [n // 2 for n in mask.shape]
    labels[c[0] + 8 : c[0] + 20, c[1] - 6 : c[1] + 6, c[2] - 6 : c[2] + 6] = 3  # a 24 mm block right of the midline
    labels[~mask] = 0
    f = tmp_path / "segments.nii.gz"
    nib.save(nib.Nifti1Image(labels, st.affine), f)
    meta = json.loads((STUDIES / "sub-1000_oef.json").read_text())
    client = QMRIClient(url)
    with pytest.raises(ConsentRequired):
        client.infer("oef", "sub-1000_oef", {"sidecar": meta, "map": "OEF"}, label=f)
    client.grant_consent()
    res = client.infer("oef", "sub-1000_oef", {"sidecar": meta, "map": "OEF"}, label=f)
    (region,) = res.meta["regions"]
    assert region["label"] == 3 and region["n_voxels"] == int((labels == 3).sum())
    assert 0 < region["OEF"] < 100 and region["ci95"][0] < region["OEF"] < region["ci95"][1]
    assert region["mirror"]["n_voxels"] > 100 and "difference" in region
