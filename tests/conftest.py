"""Shared fixtures: small phantoms and a real MONAI Label server on a copy of the sample studies."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample-data"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def small_subject():
    """A deformed 4 mm phantom with every lesion type (working grid 2 mm, about 1 s after the template)."""
    from qmri.anatomy.phantom import make_subject

    return make_subject(7, voxel_size_mm=4.0, lesions="all", amyloid_positive=True, supersample=2)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A copy of apps/qmri/model that the test server serves and its trainers publish into."""
    d = tmp_path_factory.mktemp("model")
    shutil.copytree(REPO / "apps" / "qmri" / "model", d, dirs_exist_ok=True)
    return d


@pytest.fixture(scope="session")
def server(tmp_path_factory, model_dir):
    """Start the real app with ``monailabel start_server`` on a copy of sample-data/studies.

    The copy keeps the repository clean (MONAI Label writes its datastore index beside the studies).
    Weights are served from a copy of apps/qmri/model (``--conf model_dir``), so training in tests never
    touches the shipped files. Yields the base URL and the studies folder; the server is stopped at
    the end of the session.
    """
    studies = tmp_path_factory.mktemp("studies")
    shutil.copytree(SAMPLE / "studies", studies, dirs_exist_ok=True)
    port = _free_port()
    log = open(tmp_path_factory.mktemp("server_log") / "server.log", "w")
    env = dict(os.environ, PYTHONPATH=str(REPO / "apps" / "qmri"))
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(REPO / "apps" / "qmri"), "--studies", str(studies), "--host", "127.0.0.1", "--port", str(port), "--conf", "model_dir", str(model_dir), "--uvicorn_app", "lib.server.asgi:app"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            log.flush()
            raise RuntimeError(f"server exited with {proc.returncode}: {Path(log.name).read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/info/", timeout=2).ok:
                break
        except requests.ConnectionError:
            pass
        time.sleep(1)
    else:
        proc.kill()
        raise RuntimeError("server did not answer /info within 180 s")
    yield url, studies
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
