"""``qmri infer``: a task's maps from a file without a server, over the server's task code."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from conftest import REPO, SAMPLE
from qmri.cli import main

STUDIES = SAMPLE / "studies"


def _small_copy(tmp_path, name, crop=12):
    """A centred crop of a sample study with its sidecar, written under tmp_path."""
    img = nib.load(STUDIES / f"{name}.nii.gz")
    d = np.asarray(img.dataobj, np.float32)
    c = [n // 2 for n in d.shape[:3]]
    sl = tuple(slice(x - crop, x + crop) for x in c)
    aff = img.affine.copy()
    aff[:3, 3] = img.affine[:3, :3] @ np.array([s.start for s in sl]) + img.affine[:3, 3]
    out = tmp_path / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(d[sl], aff), out)
    (tmp_path / f"{name}.json").write_text((STUDIES / f"{name}.json").read_text())
    return out, d[sl], aff


def test_infer_qsm_from_any_folder_writes_maps_on_the_input_grid(tmp_path, monkeypatch):
    src, field, aff = _small_copy(tmp_path, "sub-1000_qsm")
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)  # not the repository: weights come from the package's model folder
    assert main(["infer", "qsm", str(src), "--method", "l2", "--out", str(out)]) == 0
    nii = out / "sub-1000_qsm_qsm_l2.nii.gz"
    res = json.loads(nii.with_name("sub-1000_qsm_qsm_l2.json").read_text())
    img = nib.load(nii)
    assert img.shape == field.shape and np.allclose(img.affine, aff, atol=1e-5)
    assert res["maps"][0]["name"] == "chi" and res["maps"][0]["units"] == "ppm" and res["method"] == "l2"
    assert res["weights"] is None  # a classical method
    # the same values as the task run in-process (what the server runs)
    from qmri.tasks.registry import task_spec

    ref = task_spec("qsm").run(field, aff, json.loads(src.with_suffix("").with_suffix(".json").read_text()), "l2")[0].data
    assert np.allclose(np.asarray(img.dataobj), ref, atol=1e-6)
    # an existing output is kept unless asked
    before = nii.read_bytes()
    assert main(["infer", "qsm", str(src), "--method", "l2", "--out", str(out)]) == 2
    assert nii.read_bytes() == before


def test_infer_network_result_carries_the_weights_identity(tmp_path):
    import hashlib

    src, _, _ = _small_copy(tmp_path, "sub-1000_qsm", crop=16)
    assert main(["infer", "qsm", str(src), "--method", "qsmnet_direct", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "sub-1000_qsm_qsm_qsmnet_direct.json").read_text())
    w = REPO / "apps" / "qmri" / "model" / "qsmnet" / "qsmnet.pt"
    assert res["weights"] == {"file": "qsmnet.pt", "sha256": hashlib.sha256(w.read_bytes()).hexdigest()}


@pytest.mark.parametrize(
    "args, message",
    [
        (["qsm", "{src}", "--method", "nosuch"], "unknown method 'nosuch' for qsm; choose from qsmnet, qsmnet_direct"),
        (["qsm", "{src}", "--map", "OEF"], "OEF"),
        (["oef", "{src}"], "sidecar lacks required key(s): echo_times_ms"),
        (["qsm", "{src}", "--sidecar", "{bad}"], "not valid JSON"),
        (["qsm", "{missing}"], "INPUT"),
        (["qsm", "{src}", "--option", "tta=2"], "option(s) 'tta' not accepted by qsm; options: none"),
        (["qsm", "{src}", "--option", "tta"], "expected NAME=VALUE"),
        (["qsm", "{src}", "--device", "tpu"], "argument --device: unknown device 'tpu'"),
    ],
)
def test_bad_input_gets_the_servers_message_and_no_traceback(tmp_path, capsys, args, message):
    src, _, _ = _small_copy(tmp_path, "sub-1000_qsm", crop=6)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    argv = ["infer"] + [a.format(src=src, bad=bad, missing=tmp_path / "none.nii.gz") for a in args] + ["--out", str(tmp_path / "o")]
    try:
        rc = main(argv)
    except SystemExit as e:  # a usage error (argparse's exit)
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not list((tmp_path / "o").glob("*.nii.gz"))


def test_infer_command_line_entry_point(tmp_path):
    src, _, _ = _small_copy(tmp_path, "sub-1000_qsm", crop=8)
    r = subprocess.run([sys.executable, "-m", "qmri.cli", "infer", "qsm", str(src), "--method", "tkd", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert "chi (ppm): channel 0" in r.stdout and (tmp_path / "sub-1000_qsm_qsm_tkd.nii.gz").exists()
    assert "INFO qmri.infer_cli" in r.stderr  # progress is reported by default
    q = subprocess.run(
        [sys.executable, "-m", "qmri.cli", "--quiet", "infer", "qsm", str(src), "--method", "tkd", "--out", str(tmp_path), "--overwrite"], capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert q.returncode == 0 and q.stderr == "", q.stderr


def test_synthesis_tta_option_and_device_in_the_result(tmp_path):
    img = nib.load(STUDIES / "sub-1000_ct.nii.gz")  # a few axial slices of the whole head
    z = img.shape[2] // 2
    aff = img.affine.copy()
    aff[:3, 3] = img.affine[:3, :3] @ np.array([0, 0, z - 4]) + img.affine[:3, 3]
    src = tmp_path / "sub-1000_ct.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj, np.float32)[:, :, z - 4 : z + 4], aff), src)
    assert main(["infer", "synthetic_mr", str(src), "--option", "tta=1", "--device", "cpu", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "sub-1000_ct_synthetic_mr_sccyclegan.json").read_text())
    assert res["options"] == {"tta": 1} and res["device"] == "cpu"
    assert main(["infer", "synthetic_mr", str(src), "--option", "tta=3", "--out", str(tmp_path / "o")]) == 2
