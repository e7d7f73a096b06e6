"""The server under hostile and careless use: the bad-input catalogue, load, limits, shutdown, training.

Every catalogue case is sent to the real server (``make serve``'s command) and must get its 4xx with
a message naming the problem and no server path, while every file under the studies, the served
weights and the app folder stays byte-identical. A second server with small limits is loaded with
parallel requests, and is stopped with SIGTERM and SIGKILL while it works.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import signal
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil
import pytest
import requests

from conftest import REPO, SAMPLE, start_server, stop_server
from qmri.bench import hostile_requests as hc
from qmri.bench.serve import answer_detail

APP = REPO / "apps" / "qmri"


def _files(*roots: Path) -> list[Path]:
    out = []
    for root in roots:
        for p in sorted(Path(root).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts and not (root == APP and p.relative_to(root).parts[0] == "logs"):
                out.append(p)
    return out


def stat_fingerprint(*roots: Path) -> dict:
    """Every file's size and modification time: cheap, taken after each case."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in _files(*roots)}


def sha_fingerprint(*roots: Path) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in _files(*roots)}


# --- the catalogue on the session server ----------------------------------------------------------
CASES = hc.cases(SAMPLE / "studies")


@pytest.fixture(scope="module")
def catalogue_server(server, model_dir):
    url, studies = server
    hc.setup_studies(url, studies)
    time.sleep(1.0)  # let the datastore's file watcher settle on the new studies
    roots = (studies, Path(model_dir), APP)
    return url, studies, roots, sha_fingerprint(*roots), stat_fingerprint(*roots)


def test_catalogue_has_every_class():
    assert len(CASES) >= 40
    names = " ".join(c.name for c in CASES)
    for word in ("id", "label", "delete", "header", "complex", "sidecar", "Hz", "radians", "run_sync", "cross-origin", "limit", "save_label", "absolute path"):
        assert word in names, word


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_answered_and_nothing_changes(catalogue_server, model_dir, case):
    url, studies, roots, _, before = catalogue_server
    r = case.send(url)
    expected = case.status if isinstance(case.status, tuple) else (case.status,)
    detail = answer_detail(r)
    assert r.status_code in expected, (r.status_code, detail)
    assert case.says in detail.lower(), detail
    for path in (str(studies), str(model_dir), str(REPO), tempfile.gettempdir() + "/qmri"):
        assert path not in detail, detail
    assert stat_fingerprint(*roots) == before  # no file written, replaced or deleted


def test_catalogue_left_every_file_byte_identical(catalogue_server):
    *_, roots, sha_before, _ = catalogue_server
    assert sha_fingerprint(*roots) == sha_before
    assert not any(p.name.startswith(("hostile", "evil", "bomb", "escape")) for p in APP.rglob("*"))


def test_allowed_paths_still_work(catalogue_server):
    """The guard keeps what the clients use: info, datastore listing, image download, docs."""
    url, studies, *_ = catalogue_server
    assert requests.get(f"{url}/info/", timeout=30).ok
    ds = requests.get(f"{url}/datastore/", params={"output": "all"}, timeout=30).json()
    assert "sub-1000_qsm" in ds["objects"]
    r = requests.get(f"{url}/datastore/image", params={"image": "sub-1000_qsm"}, timeout=30)
    assert r.ok and r.content == (studies / "sub-1000_qsm.nii.gz").read_bytes()
    info = requests.get(f"{url}/datastore/image/info", params={"image": "sub-1000_qsm"}, timeout=30).json()
    assert "path" not in info  # no server path
    assert requests.get(f"{url}/openapi.json", timeout=30).ok
    r = requests.post(f"{url}/infer/qsm", params={"image": "sub-1000_qsm", "output": "json"}, data={"params": json.dumps({"method": "l2"})}, timeout=120)
    assert r.status_code == 200 and r.json()["maps"][0]["units"] == "ppm" and r.json()["method"] == "l2"


def test_monailabel_client_gets_the_same_answers(catalogue_server, tmp_path):
    """MONAI Label's own client: its requests are refused with the same 4xx and messages."""
    from monailabel.client import MONAILabelClient
    from monailabel.client.client import MONAILabelClientException

    url, studies, roots, _, before = catalogue_server
    client = MONAILabelClient(url, tmpdir=str(tmp_path))
    src = tmp_path / "x.nii.gz"
    src.write_bytes((studies / "sub-1001_T1w.nii.gz").read_bytes())
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not an image at all" * 20)
    for call, status, word in [
        (lambda: client.upload_image(str(src), image_id="sub-1001_T1w"), 409, "already exists"),
        (lambda: client.upload_image(str(src), image_id="../../apps/qmri/lib/x"), 422, "invalid study id"),
        (lambda: client.save_label("sub-1001_T1w", str(src), tag="../final"), 422, "label tag"),
        (lambda: client.infer("qsm", "sub-1000_qsm", {"method": "tkd", "save_label": True, "label_tag": "final"}), 422, "not accepted"),
        (lambda: client.infer("qsm", str(studies / "sub-1000_qsm.nii.gz"), {}), 422, "invalid study id"),
        (lambda: client.infer("qsm", "sub-1000_qsm", {}, file=str(src)), 422, "not both"),
        (lambda: client.infer("qsm", "", {}, file=str(junk)), 422, "not a NIfTI"),
        (lambda: client.infer("qsm", "", {"method": "tkd"}, file=str(src)), 422, "sidecar lacks"),
    ]:
        with pytest.raises(MONAILabelClientException) as e:
            call()
        assert f"Status: {status}" in e.value.msg and word in e.value.msg, e.value.msg
    assert stat_fingerprint(*roots) == before
    _, result = client.infer("qsm", "sub-1000_qsm", {"method": "l2"})  # its client_id bookkeeping is accepted
    assert result["method"] == "l2" and result["maps"][0]["units"] == "ppm"
    # the image sent with the request (MONAI Label's file= path): a map back, nothing stored
    sent = tmp_path / "sent_qsm.nii.gz"
    sent.write_bytes((studies / "sub-1000_qsm.nii.gz").read_bytes())
    sidecar = json.loads((studies / "sub-1000_qsm.json").read_text())
    out, result = client.infer("qsm", "", {"method": "tkd", "sidecar": sidecar}, file=str(sent))
    assert result["method"] == "tkd" and result["maps"][0]["units"] == "ppm"
    ref, _ = client.infer("qsm", "sub-1000_qsm", {"method": "tkd"})
    np.testing.assert_allclose(nib.load(out).get_fdata(), nib.load(ref).get_fdata(), atol=1e-6)
    assert stat_fingerprint(*roots) == before


def test_overwrite_needs_asking_and_keeps_labels(catalogue_server, tmp_path):
    url, studies, *_ = catalogue_server
    data = nib.load(studies / "sub-1001_qsm.nii.gz")
    payload = hc.nifti_bytes(data.get_fdata().astype(np.float32), data.affine)

    def put(params):
        return requests.put(f"{url}/datastore/image", params={"image": "overwrite_check"}, files={"file": ("o.nii.gz", payload)}, data={"params": json.dumps(params)}, timeout=60)

    assert put({"sidecar": {"B0_dir": [0, 0, 1]}}).status_code == 200
    label = hc.nifti_bytes(np.zeros(data.shape, np.float32), data.affine)
    r = requests.put(f"{url}/datastore/label", params={"image": "overwrite_check", "tag": "final"}, files={"label": ("l.nii.gz", label)}, data={"params": "{}"}, timeout=60)
    assert r.status_code == 200, r.text
    assert put({}).status_code == 409
    assert put({"overwrite": True}).status_code == 200
    ds = requests.get(f"{url}/datastore/", params={"output": "all"}, timeout=30).json()
    assert "final" in ds["objects"]["overwrite_check"]["labels"]  # the label survived the replacement
    assert json.loads((studies / "overwrite_check.json").read_text()) == {"B0_dir": [0, 0, 1]}
    assert not list(studies.glob(".*.part"))  # no temporary file left


# --- a private server with small limits ------------------------------------------------------------
LIMITS = {"QMRI_INFER_WORKERS": "2", "QMRI_INFER_QUEUE": "14", "QMRI_INFER_TIMEOUT_S": "10", "QMRI_SHUTDOWN_GRACE_S": "3", "QMRI_MAX_UPLOAD_MB": "64", "QMRI_INFER_MEMORY_MB": "3000"}


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """Private studies and weights, and a way to start servers on them."""
    root = tmp_path_factory.mktemp("own")
    shutil.copytree(SAMPLE / "studies", root / "studies")
    shutil.copytree(APP / "model" / "qsmnet", root / "model" / "qsmnet")
    started = []

    def launch(**env):
        proc, url = start_server(root / "studies", root / "model", root / f"server{len(started)}.log", env={**LIMITS, **env}, conf={"models": "qsm"})
        started.append(proc)
        return proc, url

    yield root, launch
    for proc in started:
        if proc.poll() is None:
            stop_server(proc)


@pytest.fixture(scope="module")
def limited(own):
    root, launch = own
    proc, url = launch()
    return proc, url, root


def _poll_info(url: str, stop: threading.Event, worst: list) -> None:
    while not stop.is_set():
        t = time.time()
        r = requests.get(f"{url}/info/", timeout=10)
        assert r.ok
        worst.append(time.time() - t)
        time.sleep(0.2)


def _infer(url, method, study="sub-1000_qsm"):
    return requests.post(f"{url}/infer/qsm", params={"image": study, "output": "image"}, data={"params": json.dumps({"method": method})}, timeout=120)


def test_sixteen_parallel_infers_all_correct_while_info_answers(limited, tmp_path):
    _, url, _ = limited
    ref = _infer(url, "l2")
    assert ref.status_code == 200
    (tmp_path / "ref.nii.gz").write_bytes(ref.content)
    expected = nib.load(tmp_path / "ref.nii.gz").get_fdata()
    stop, worst = threading.Event(), []
    poller = threading.Thread(target=_poll_info, args=(url, stop, worst))
    poller.start()
    with ThreadPoolExecutor(16) as ex:
        answers = list(ex.map(lambda _: _infer(url, "l2"), range(16)))
    stop.set()
    poller.join()
    assert [a.status_code for a in answers] == [200] * 16
    for i, a in enumerate(answers):
        (tmp_path / f"{i}.nii.gz").write_bytes(a.content)
        np.testing.assert_allclose(nib.load(tmp_path / f"{i}.nii.gz").get_fdata(), expected, atol=1e-6)
    assert len(worst) >= 3 and max(worst) < 1.0, worst


def test_overflow_is_refused_and_slow_maps_time_out(limited):
    """Two slow maps (TV on a 128^3 grid, tens of seconds) hold both workers, 14 more wait (the
    queue), 4 more are refused at once with 429; clients that waited past the 10 s limit get 503;
    /info answers within 1 s all along."""
    _, url, _ = limited
    _upload_padded_field(url, "slow_field", 128)
    stop, worst = threading.Event(), []
    poller = threading.Thread(target=_poll_info, args=(url, stop, worst))
    poller.start()
    with ThreadPoolExecutor(20) as ex:
        slow = [ex.submit(_infer, url, "tv", "slow_field") for _ in range(2)]
        time.sleep(1.0)
        quick = [ex.submit(_infer, url, "l2") for _ in range(18)]
        t0 = time.time()
        refused = [f.result() for f in quick if f.result().status_code == 429]
        slow = [f.result() for f in slow]
    stop.set()
    poller.join()
    assert len(refused) == 4
    assert all(r.headers.get("Retry-After") and "busy" in answer_detail(r) for r in refused)
    assert all(r.status_code in (200, 503) for r in slow + [f.result() for f in quick if f.result().status_code != 429])
    assert any(r.status_code == 503 and "limit" in answer_detail(r) and r.headers.get("Retry-After") for r in slow), [(r.status_code, r.elapsed.total_seconds(), answer_detail(r)[:80]) for r in slow]
    assert time.time() - t0 < 60
    assert max(worst) < 1.0, worst
    _wait_until_idle(url)


def _wait_until_idle(url: str, timeout_s: float = 180) -> None:
    """Until a quick map is answered again: the timed-out slow maps still hold the workers."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if _infer(url, "l2").status_code == 200:
            return
        time.sleep(2)
    raise AssertionError("the server's workers stayed busy")


def test_header_bomb_refused_fast_without_memory(limited):
    proc, url, _ = limited
    rss = psutil.Process(proc.pid).memory_info().rss
    t = time.time()
    r = requests.put(f"{url}/datastore/image", params={"image": "bomb"}, files={"file": ("bomb.nii.gz", hc.header_bomb(1200))}, data={"params": "{}"}, timeout=30)
    elapsed = time.time() - t
    assert r.status_code == 413 and "limit" in answer_detail(r)
    assert elapsed < 1.0
    assert psutil.Process(proc.pid).memory_info().rss - rss < 100 * 2**20


def _upload_padded_field(url: str, image_id: str, n: int) -> None:
    """The sample's local field in the corner of an n^3 grid, as a new study."""
    ref = nib.load(SAMPLE / "studies" / "sub-1000_qsm.nii.gz")
    big = np.zeros((n, n, n), np.float32)
    big[:79, :100, :88] = ref.get_fdata()
    r = requests.put(f"{url}/datastore/image", params={"image": image_id}, files={"file": ("b.nii.gz", hc.nifti_bytes(big, ref.affine))}, data={"params": json.dumps({"sidecar": {"B0_dir": [0, 0, 1]}})}, timeout=60)
    assert r.status_code == 200, r.text


def test_map_that_would_not_fit_in_memory_is_refused_before_work(limited):
    """A 160^3 field needs about 3.9 GiB for TV (the task's measured bytes per voxel): over this
    server's 3000 MiB per request, it is refused at once, naming the limit and the method; the
    sample (79 x 100 x 88) runs. QSMnet's cost grows more slowly (brain box, windows): its own
    model (fixed + per voxel) admits the same field."""
    proc, url, _ = limited
    _upload_padded_field(url, "big_field", 160)
    rss = psutil.Process(proc.pid).memory_info().rss
    t = time.time()
    r = _infer(url, "tv", "big_field")
    assert r.status_code == 413 and "QMRI_INFER_MEMORY_MB" in answer_detail(r) and "GiB" in answer_detail(r) and "'tv'" in answer_detail(r), answer_detail(r)
    assert time.time() - t < 5 and psutil.Process(proc.pid).memory_info().rss - rss < 200 * 2**20
    assert _infer(url, "l2").status_code == 200


def test_upload_over_the_body_limit_is_413(limited):
    _, url, _ = limited
    big = b"\x00" * (65 * 2**20)
    r = requests.put(f"{url}/datastore/image", params={"image": "too_big"}, files={"file": ("b.nii.gz", big)}, data={"params": "{}"}, timeout=60)
    assert r.status_code == 413 and "64 MiB" in answer_detail(r)


def _wait_status(url, want, timeout_s=300):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        r = requests.get(f"{url}/train/", timeout=10)
        if r.ok and r.json().get("status") in want:
            return r.json()
        time.sleep(0.5)
    raise AssertionError(f"training never reached {want}: {r.text[:300]}")


def _training_child(proc):
    """The live training process the server started, or None (an ended one may linger as a zombie)."""
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "monailabel.interfaces.utils.app" in " ".join(child.cmdline()):
                return child
        except psutil.Error:  # ended meanwhile
            continue
    return None


def test_cancelled_training_leaves_weights_and_its_status_survives_a_restart(own, limited):
    from qmri.models.qsmnet.predict import load_qsmnet

    root, launch = own
    proc, url, _ = limited
    weights = root / "model" / "qsmnet" / "qsmnet.pt"
    before = weights.read_bytes()
    r = requests.post(f"{url}/train/qsm", json={"max_epochs": 200, "steps_per_epoch": 50, "batch_size": 2}, timeout=30)
    assert r.status_code == 200, r.text
    task_id = _wait_status(url, ("RUNNING",))["id"]
    time.sleep(3)
    assert requests.delete(f"{url}/train/", timeout=30).ok
    deadline = time.time() + 60  # (not through GET /train/, which would save the history itself)
    while _training_child(proc) is not None and time.time() < deadline:
        time.sleep(0.5)
    assert _training_child(proc) is None
    assert weights.read_bytes() == before
    load_qsmnet(weights)
    history = root / "model" / "train_tasks.json"  # saved by the server every 5 s, without being polled
    deadline = time.time() + 30
    while not (history.exists() and task_id in history.read_text()) and time.time() < deadline:
        time.sleep(0.5)
    proc.kill()  # no chance to save anything at shutdown
    proc.wait(timeout=10)
    proc2, url2 = launch()
    try:
        kept = requests.get(f"{url2}/train/", params={"all": "true"}, timeout=30).json()
        assert any(t["id"] == task_id and t["status"] == "STOPPED" for t in kept)
    finally:
        stop_server(proc2)


def test_enabled_delete_and_dataset_download_work(own, tmp_path):
    """What is off by default works when a deployment enables it; the zip is not left on the server."""
    import zipfile

    root, launch = own
    proc, url = launch(QMRI_ENABLE_DELETE="1", QMRI_ENABLE_DATASET_DOWNLOAD="1")
    try:
        tmp_before = set(Path(tempfile.gettempdir()).iterdir())
        r = requests.get(f"{url}/datastore/dataset", timeout=120)
        assert r.status_code == 200
        (tmp_path / "d.zip").write_bytes(r.content)
        names = zipfile.ZipFile(tmp_path / "d.zip").namelist()
        assert any(n.endswith("sub-1000_qsm.nii.gz") for n in names)
        deadline = time.time() + 10  # the zip is removed after the answer is sent

        def zips_left():
            return [p for p in set(Path(tempfile.gettempdir()).iterdir()) - tmp_before if p.is_file() and zipfile.is_zipfile(p)]

        while zips_left() and time.time() < deadline:
            time.sleep(0.2)
        assert not zips_left()
        assert requests.delete(f"{url}/datastore/label", params={"id": "sub-1001_qsm", "tag": "final"}, timeout=30).ok
        assert not (root / "studies" / "labels" / "final" / "sub-1001_qsm.nii.gz").exists()
        r = requests.delete(f"{url}/datastore/image", params={"id": "../../x"}, timeout=30)
        assert r.status_code == 422  # enabled, but still only datastore ids
    finally:
        stop_server(proc)


def test_sigterm_stops_a_busy_server_within_seconds(own):
    _, launch = own
    proc, url = launch()

    def slow_map():
        with contextlib.suppress(requests.ConnectionError):  # the server goes away mid-request: expected
            _infer(url, "tv")

    slow = threading.Thread(target=slow_map, daemon=True)
    slow.start()
    time.sleep(2.0)  # the TV inversion (tens of seconds) is computing
    t = time.time()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=15)
    assert time.time() - t < 10


def test_server_killed_mid_training_leaves_weights_loadable_and_unchanged(own):
    from qmri.models.qsmnet.predict import load_qsmnet

    root, launch = own
    weights = root / "model" / "qsmnet" / "qsmnet.pt"
    before = weights.read_bytes()
    tmp_before = set(Path(tempfile.gettempdir()).glob("qmri_train_*"))
    proc, url = launch()
    r = requests.post(f"{url}/train/qsm", json={"max_epochs": 200, "steps_per_epoch": 50, "batch_size": 2}, timeout=30)
    assert r.status_code == 200, r.text
    _wait_status(url, ("RUNNING",))
    deadline = time.time() + 60
    while (child := _training_child(proc)) is None and time.time() < deadline:
        time.sleep(0.5)
    assert child is not None
    deadline = time.time() + 90  # killed while it trains: its working folder exists
    while not (set(Path(tempfile.gettempdir()).glob("qmri_train_*")) - tmp_before) and time.time() < deadline:
        time.sleep(0.5)
    assert set(Path(tempfile.gettempdir()).glob("qmri_train_*")) - tmp_before, "the training never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    child.wait(timeout=90)  # the training process notices (once its app is loaded) and ends without publishing
    assert weights.read_bytes() == before
    load_qsmnet(weights)
    assert not list(weights.parent.glob(".*.part"))  # no half-written file left
    assert set(Path(tempfile.gettempdir()).glob("qmri_train_*")) <= tmp_before  # nor its working folder
