"""The real MONAI Label server, started with `monailabel start_server`, driven over REST."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import requests
from monailabel.client import MONAILabelClient
from monailabel.client.client import MONAILabelClientException

from conftest import SAMPLE


def test_info_answers(server):
    url, _ = server
    info = requests.get(f"{url}/info/", timeout=30).json()
    assert info["name"].startswith("qmri")
    assert isinstance(info["models"], dict)
    assert info["datastore"]["total"] >= 3


def test_client_connects_and_lists_datastore(server):
    url, _ = server
    client = MONAILabelClient(url)
    assert client.info()["name"].startswith("qmri")
    ds = client.datastore()
    ids = set(ds["objects"])
    assert {"sub-1000_T1w", "sub-1001_T1w", "sub-1002_T1w"} <= ids
    # the tissue labels are the studies' final targets
    assert "final" in ds["objects"]["sub-1000_T1w"]["labels"]


def test_unknown_task_is_404_naming_it(server):
    url, _ = server
    r = requests.post(f"{url}/infer/no_such_task?image=sub-1000_T1w", timeout=30)
    assert r.status_code == 404
    assert "no_such_task" in r.json()["detail"]
    with pytest.raises(MONAILabelClientException) as e:
        MONAILabelClient(url).infer("no_such_task", "sub-1000_T1w", {})
    assert "Status: 404" in e.value.msg and "no_such_task" in e.value.msg


def test_upload_and_download_keep_data(server, tmp_path):
    url, studies = server
    client = MONAILabelClient(url, tmpdir=str(tmp_path))
    src = SAMPLE / "studies" / "sub-1001_T1w.nii.gz"
    up = tmp_path / "upload.nii.gz"
    up.write_bytes(src.read_bytes())
    assert client.upload_image(str(up), image_id="uploaded_T1w") == {"image": "uploaded_T1w"}
    assert "uploaded_T1w" in client.datastore()["objects"]
    stored = nib.load(studies / "uploaded_T1w.nii.gz")
    ref = nib.load(src)
    assert np.allclose(stored.affine, ref.affine)
    np.testing.assert_array_equal(stored.get_fdata(), ref.get_fdata())
    # the shipped study is untouched
    assert (studies / "sub-1001_T1w.nii.gz").read_bytes() == src.read_bytes()
