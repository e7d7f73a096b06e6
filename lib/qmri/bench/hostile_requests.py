"""The bad-input catalogue: hostile and careless requests with the answer each must get.

Shared by the benchmark (``qmri bench serve --bad-inputs``) and the test suite
(``tests/test_server_hardening.py``). Each case is one HTTP request against a server holding the
sample studies plus the studies made by :func:`setup_studies`; it names the status it must get and
a word the answer's message must contain (the problem, named). No case may change a file.
"""

from __future__ import annotations

import gzip
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
import requests

NIFTI = "application/octet-stream"


@dataclass
class Case:
    name: str
    method: str
    path: str
    status: int | tuple[int, ...]
    says: str  # lower-case word(s) the message must contain
    query: dict = field(default_factory=dict)
    form: dict | None = None  # form fields (text)
    files: dict | None = None  # name -> (filename, bytes)
    json_body: Any = None
    headers: dict = field(default_factory=dict)
    raw_body: bytes | None = None

    def with_json(self, body: Any) -> "Case":
        """The same request with a JSON body instead of its form."""
        self.form, self.json_body = None, body
        return self

    def send(self, url: str, timeout: float = 120) -> requests.Response:
        kw: dict[str, Any] = {"params": self.query, "headers": self.headers, "timeout": timeout}
        if self.files is not None:
            kw["files"] = {k: (n, b, NIFTI) for k, (n, b) in self.files.items()}
        if self.form is not None:
            kw["data"] = self.form
        if self.json_body is not None:
            kw["json"] = self.json_body
        if self.raw_body is not None:
            kw["data"] = self.raw_body
        return requests.request(self.method, url + self.path, **kw)


def nifti_bytes(data: np.ndarray, affine=None, gz: bool = True) -> bytes:
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine)
    raw = img.to_bytes()
    return gzip.compress(raw) if gz else raw


def header_bomb(n: int = 1200) -> bytes:
    """A valid NIfTI-1 header claiming n^3 float32 voxels, followed by almost no data (gzip)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((n, n, n))
    hdr.set_data_dtype(np.float32)
    raw = hdr.binaryblock + b"\x00" * 4 + struct.pack("<f", 1.0) * 4
    return gzip.compress(raw)


def setup_studies(url: str, studies) -> dict[str, str]:
    """Upload the studies some cases need (before the files are fingerprinted); returns their ids."""
    ref = nib.load(studies / "sub-1000_qsm.nii.gz")
    field_ppm = ref.get_fdata().astype(np.float32)
    sidecar = json.loads((studies / "sub-1000_qsm.json").read_text())
    made = {
        "hostile_field_hz": (field_ppm * 127.7, sidecar),  # Hz at 3 T, mostly below 50
        "hostile_field_rad": (field_ppm * 127.7 * 2 * np.pi * 0.02, sidecar),  # phase in rad at TE 20 ms
        "hostile_field_ok": (field_ppm, sidecar),
    }
    for image_id, (data, meta) in made.items():
        r = requests.put(
            f"{url}/datastore/image",
            params={"image": image_id},
            files={"file": (f"{image_id}.nii.gz", nifti_bytes(data.astype(np.float32), ref.affine), NIFTI)},
            data={"params": json.dumps({"sidecar": meta, "overwrite": True})},
            timeout=60,
        )
        r.raise_for_status()
    return {k: k for k in made}


def cases(studies) -> list[Case]:
    """The catalogue. ``studies``: the served studies folder (to build well-formed inputs from)."""
    t1 = nib.load(studies / "sub-1000_T1w.nii.gz")
    good = nifti_bytes(t1.get_fdata().astype(np.float32), t1.affine)
    small = nifti_bytes(np.ones((4, 4, 4), np.float32))
    complex_img = nifti_bytes((np.ones((8, 8, 8)) + 1j * np.ones((8, 8, 8))).astype(np.complex64))
    truncated = good[: len(good) // 3]
    py = b"import os\nos.system('touch /tmp/pwned')\n"
    qsm_sidecar = json.loads((studies / "sub-1000_qsm.json").read_text())
    oef_sidecar = json.loads((studies / "sub-1000_oef.json").read_text())
    pet_sidecar = json.loads((studies / "sub-1000_pet.json").read_text())

    def put_image(name, image_id, filename, payload, status, says, params=None):
        q = {"image": image_id} if image_id is not None else {}
        return Case(name, "PUT", "/datastore/image", status, says, query=q, files={"file": (filename, payload)}, form={"params": json.dumps(params or {}) if not isinstance(params, str) else params})

    def put_label(name, image_id, tag, filename, payload, status, says, params=None):
        return Case(name, "PUT", "/datastore/label", status, says, query={"image": image_id, "tag": tag}, files={"label": (filename, payload)}, form={"params": json.dumps(params or {})})

    def infer(name, task, image, params, status, says, **kw):
        q = {"output": "json", **({"image": image} if image is not None else {}), **kw.pop("query", {})}
        return Case(name, "POST", f"/infer/{task}", status, says, query=q, form={"params": params if isinstance(params, str) else json.dumps(params)}, **kw)

    def train(name, model, body, status, says, query=None):
        return Case(name, "POST", f"/train/{model}", status, says, query=query or {}, json_body=body)

    return [
        # --- traversal and hostile ids in every route
        put_image("upload id ../app/lib/configs/x (.py)", "../app/lib/configs/x", "x.py", py, 422, "invalid study id"),
        put_image("upload id absolute path", "/tmp/qmri_owned", "x.nii.gz", small, 422, "invalid study id"),
        put_image("upload id with slash", "a/b", "x.nii.gz", small, 422, "invalid study id"),
        put_image("upload id '..'", "..", "x.nii.gz", small, 422, "invalid study id"),
        put_image("upload id with newline", "x\nINFO forged", "x.nii.gz", small, 422, "invalid study id"),
        put_image("upload id with NUL", "x\x00y", "x.nii.gz", small, 422, "invalid study id"),
        put_image("upload file name ../../x.nii.gz, no id", None, "../../escape.nii.gz", small, 422, "invalid study id"),
        put_image("upload a .py as a study", "evil_code", "evil_code.py", py, 415, "nifti"),
        put_image("upload a .json over a sidecar", None, "sub-1000_qsm.json", b'{"task": "qsm"}', 415, "nifti"),
        put_label("label tag ../../x", "sub-1000_T1w", "../../x", "l.nii.gz", small, 422, "label tag"),
        put_label("label tag original", "sub-1000_T1w", "original", "l.nii.gz", small, 422, "label tag"),
        put_label("label for id ../x", "../x", "final", "l.nii.gz", small, 422, "invalid study id"),
        put_label("label .py", "sub-1000_T1w", "final", "l.py", py, 415, "nifti"),
        Case("delete a study", "DELETE", "/datastore/image", 403, "disabled", query={"id": "sub-1000_T1w"}),
        Case("delete outside the studies", "DELETE", "/datastore/", 403, "disabled", query={"id": "../../apps/qmri/main"}),
        Case("delete a label", "DELETE", "/datastore/label", 403, "disabled", query={"id": "sub-1000_T1w", "tag": "final"}),
        Case("download image ../x", "GET", "/datastore/image", 404, "not found", query={"image": "../../etc/passwd"}),
        Case("check an image with an unknown checksum algorithm", "HEAD", "/datastore/image", 422, "", query={"image": "sub-1000_T1w", "check_sum": "FOO:abc"}),
        infer("infer params sent as JSON, not a form", "qsm", "sub-1000_qsm", {}, 415, "multipart form", query={}).with_json({"method": "tkd"}),
        # --- data loss
        put_image("upload over an existing study", "sub-1000_T1w", "t.nii.gz", good, 409, "already exists"),
        put_label("label over a final label", "sub-1000_T1w", "final", "l.nii.gz", good, 409, "already has"),
        put_label("label for a missing study", "no_such_study", "final", "l.nii.gz", small, 404, "unknown study"),
        put_label("label on another grid", "hostile_field_ok", "final", "l.nii.gz", small, 422, "grid"),
        put_image("upload params not JSON", "p_bad_json", "x.nii.gz", small, 422, "not valid json", params="{oops"),
        put_image("upload sidecar not an object", "p_sidecar_list", "x.nii.gz", small, 422, "json object", params={"sidecar": [1, 2]}),
        put_image("upload unknown params (flat sidecar)", "p_flat", "x.nii.gz", small, 422, "unknown upload parameter", params={"B0_T": 3}),
        put_image("upload overwrite not boolean", "p_overwrite", "x.nii.gz", small, 422, "overwrite", params={"overwrite": "yes"}),
        Case("dataset zip", "GET", "/datastore/dataset", 403, "disabled"),
        Case("server log", "GET", "/logs/", 403, "not served"),
        # --- header bombs, dtypes, broken files
        put_image("header claims 1200^3 voxels", "bomb", "bomb.nii.gz", header_bomb(), 413, "limit"),
        put_image("truncated gzip", "truncated", "t.nii.gz", truncated, 422, "nifti"),
        put_image("not a NIfTI at all", "garbage", "g.nii.gz", b"\x00" * 500, 422, "nifti"),
        put_image("complex image", "complex_img", "c.nii.gz", complex_img, 422, "complex"),
        # --- infer: ids, params, sidecar types, units
        infer("infer on an absolute path", "qsm", str(studies / "sub-1000_qsm.nii.gz"), {}, 422, "invalid study id"),
        infer("infer image in params", "qsm", "sub-1000_qsm", {"image": str(studies / "sub-1000_qsm.nii.gz")}, 422, "cannot be a parameter"),
        infer("infer save_label into final", "qsm", "sub-1000_qsm", {"method": "tkd", "save_label": True, "label_tag": "final"}, 422, "not accepted"),
        infer("infer device from client", "qsm", "sub-1000_qsm", {"device": "cuda:7"}, 422, "not accepted"),
        infer("infer unknown study", "qsm", "no_such_study", {}, 404, "unknown study"),
        infer("infer without image", "qsm", None, {}, 422, "no study"),
        infer("infer params not an object", "qsm", "sub-1000_qsm", "[1, 2]", 422, "json object"),
        infer("infer params not JSON", "qsm", "sub-1000_qsm", "{method: tkd", 422, "not valid json"),
        infer("infer map is a number", "oef", "sub-1000_oef", {"method": "qq_fit", "map": 5}, 422, "map"),
        infer("infer params nested 20000 deep", "qsm", "sub-1000_qsm", '{"sidecar": ' * 20000 + "1" + "}" * 20000, 422, "nested too deeply"),
        infer("infer unknown method", "qsm", "sub-1000_qsm", {"method": "medi_secret"}, 422, "unknown method"),
        infer("infer with a study id and a file", "qsm", "sub-1000_qsm", {}, 422, "not both", files={"file": ("x.nii.gz", small)}),
        infer("infer a sent file that is not NIfTI", "qsm", None, {}, 422, "nifti", files={"file": ("g.nii.gz", b"\x00" * 500)}),
        infer("infer a sent file with a header bomb", "qsm", None, {}, 413, "limit", files={"file": ("bomb.nii.gz", header_bomb())}),
        infer("infer a sent file named .exe", "qsm", None, {}, 415, "nifti", files={"file": ("x.exe", small)}),
        infer("infer a sent file without its sidecar", "qsm", None, {"method": "tkd"}, 422, "sidecar lacks", files={"file": ("x.nii.gz", small)}),
        infer("infer with session_id", "qsm", "sub-1000_qsm", {}, 422, "not accepted", query={"session_id": "abc"}),
        infer("infer output dicom_seg", "qsm", "sub-1000_qsm", {}, 422, "output", query={"output": "dicom_seg"}),
        infer("infer unknown task", "no_such_task", "sub-1000_qsm", {}, 404, "unknown task"),
        infer("sidecar B0_T a list", "qsm_raw", "sub-1000_qsmraw", {"method": "tkd", "sidecar": {**json.loads((studies / "sub-1000_qsmraw.json").read_text()), "B0_T": [3]}}, 422, "b0_t"),
        infer("sidecar psf_fwhm_mm an object", "pvc", "sub-1000_pet", {"method": "rbv", "sidecar": {**pet_sidecar, "psf_fwhm_mm": {"x": 6}}}, 422, "psf_fwhm_mm"),
        infer("sidecar echo time NaN", "oef", "sub-1000_oef", json.dumps({"method": "qq_fit", "sidecar": {**oef_sidecar, "echo_times_ms": [float("nan")] + oef_sidecar["echo_times_ms"][1:]}}), 422, "echo_times_ms"),
        infer("sidecar B0_dir zero", "qsm", "sub-1000_qsm", {"method": "tkd", "sidecar": {**qsm_sidecar, "B0_dir": [0, 0, 0]}}, 422, "b0_dir"),
        infer("field in Hz", "qsm", "hostile_field_hz", {"method": "tkd"}, 422, "hz"),
        infer("field in radians", "qsm", "hostile_field_rad", {"method": "tkd"}, 422, "rad"),
        # --- training
        train("train run_sync in the server process", "qsm", {"max_epochs": 1}, 403, "run_sync", query={"run_sync": "true"}),
        train("train negative epochs", "qsm", {"max_epochs": -1}, 422, "max_epochs"),
        train("train device injection", "qsm", {"device": "cuda; rm -rf /"}, 422, "device"),
        train("train unknown parameter", "qsm", {"model": "pvc"}, 422, "unknown training parameter"),
        train("train params not an object", "qsm", [1, 2], 422, "json object"),
        train("train unknown trainer", "no_such_trainer", {}, 404, "no trainer"),
        Case("upload weights over the served model", "PUT", "/model/qsm", (404, 405), "not", files={"file": ("qsmnet.pt", b"x")}),
        Case("reload the app", "POST", "/reload", (404, 405), "not"),
        # --- exposure
        Case("cross-origin page", "GET", "/info/", 403, "cross-origin", headers={"Origin": "http://evil.example"}),
        Case("body over the upload limit", "PUT", "/datastore/image", 413, "limit", query={"image": "huge"}, headers={"Content-Length": str(64 * 2**30), "Content-Type": "application/octet-stream"}, raw_body=b""),
    ]
