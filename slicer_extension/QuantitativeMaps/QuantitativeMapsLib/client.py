"""Client of the qmri MONAI Label server (Slicer-free: ``requests`` and the standard library).

Slicer's Python ships ``requests``; multipart results are parsed with the standard ``email``
package, so nothing beyond what Slicer bundles is needed here.

REST calls (MONAI Label 0.8 endpoints; see apps/qmri and tests/test_tasks_rest.py):

- ``GET /info/``: tasks ("models") with description, inputs, outputs (units, display range), methods;
  trainers.
- ``PUT /datastore/image?image=ID`` (form ``file``, ``params``) and
  ``PUT /datastore/label?image=ID&tag=final`` (form ``label``, ``params``): upload for retraining; both refuse to run
  unless the user has consented to images leaving the machine (:class:`ConsentRequired`).
- ``POST /infer/TASK?image=ID&output=all`` (form ``params`` = JSON), or ``POST /infer/TASK?output=all``
  with form ``file`` (the image itself: inferred from a temporary copy, nothing stored): multipart answer with a
  ``params`` JSON part (maps, units, display ranges, method, latency) and a gzip NIfTI part
  (float32; 3D for one map, 4D channels-last for several).
- ``POST /train/MODEL`` (JSON body), ``GET /train/``, ``DELETE /train/``: training.

Errors come back as :class:`QMRIClientError` carrying the server's own message (HTTP 422 detail
names the problem in plain words), or a plain sentence for timeouts and unreachable servers.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any, Callable, Mapping

import requests

CONNECT_TIMEOUT_S = 5.0
INFO_TIMEOUT_S = 30.0
UPLOAD_TIMEOUT_S = 300.0
INFER_TIMEOUT_S = 1800.0  # a whole-brain OEF fit takes minutes on a CPU server


class QMRIClientError(RuntimeError):
    """A request failed; ``str(error)`` is a sentence a clinician can read.

    Attributes:
        status: HTTP status (None when the server could not be reached or timed out).
        detail: the server's own message (FastAPI ``detail``) when it sent one.
    """

    def __init__(self, message: str, status: int | None = None, detail: str | None = None):
        super().__init__(message)
        self.status = status
        self.detail = detail


class ConsentRequired(QMRIClientError):
    """An upload was attempted before the user agreed to send images to this server."""


class Cancelled(QMRIClientError):
    """The user cancelled the job."""


def _detail(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:500] or resp.reason
    if isinstance(body, dict) and "detail" in body:
        d = body["detail"]
        if isinstance(d, list):  # FastAPI validation errors: [{"loc": [...], "msg": ...}]
            return "; ".join(f"{'.'.join(str(x) for x in e.get('loc', []))}: {e.get('msg')}" for e in d if isinstance(e, dict))
        return str(d)
    return json.dumps(body)[:500]


@dataclass
class InferResult:
    """One infer answer.

    Attributes:
        meta: the server's JSON (``maps``: name, units, display_range, description, channel; shape;
            affine; method; latency_s).
        nifti: the result as uncompressed NIfTI-1 bytes (float32, RAS affine of the input).
    """

    meta: dict
    nifti: bytes

    @property
    def map_names(self) -> list[str]:
        return [m["name"] for m in self.meta.get("maps", [])]

    def image(self):
        """The result as a nibabel image (nibabel: ``pip install nibabel``; in Slicer
        ``slicer.util.pip_install("nibabel")``)."""
        import nibabel as nib

        return nib.Nifti1Image.from_bytes(self.nifti)

    def save(self, path: str | Path) -> Path:
        """Write the result as ``.nii`` or gzip-compressed ``.nii.gz`` to ``path``."""
        path = Path(path)
        data = gzip.compress(self.nifti, compresslevel=1) if path.name.endswith(".gz") else self.nifti
        path.write_bytes(data)
        return path


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[dict, bytes]]:
    """Split a multipart HTTP body into {part name: (headers, payload bytes)}.

    Parts without a name are keyed by their file name or ``part<i>``.
    """
    if "multipart/" not in content_type:
        raise QMRIClientError(f"the server answered with '{content_type}', expected a multipart result")
    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    parts: dict[str, tuple[dict, bytes]] = {}
    for i, part in enumerate(msg.iter_parts()):
        name = part.get_param("name", header="content-disposition") or part.get_filename() or f"part{i}"
        parts[str(name)] = (dict(part.items()), part.get_payload(decode=True) or b"")
    return parts


class QMRIClient:
    """Talks to one qmri server.

    Args:
        url: server base URL, e.g. ``http://127.0.0.1:8000``.
        consent: the user already agreed that images may be sent to this server (the Slicer module
            remembers this per server in its settings). Uploads raise :class:`ConsentRequired` until
            :meth:`grant_consent` is called or this is True.
        timeout_s: read timeout of infer requests (s); connection timeout is 5 s.
    """

    def __init__(self, url: str, consent: bool = False, timeout_s: float = INFER_TIMEOUT_S):
        url = url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise QMRIClientError(f"server address '{url}' must start with http:// or https://")
        self.url = url
        self.consent = bool(consent)
        self.timeout_s = float(timeout_s)
        self._session = requests.Session()
        self._info: dict | None = None

    # -- plumbing -------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the HTTP session (its pooled connections)."""
        self._session.close()

    def _request(self, method: str, path: str, read_timeout: float, **kw) -> requests.Response:
        try:
            resp = self._session.request(method, f"{self.url}{path}", timeout=(CONNECT_TIMEOUT_S, read_timeout), **kw)
        except requests.exceptions.ConnectTimeout:
            raise QMRIClientError(f"the server {self.url} did not accept a connection within {CONNECT_TIMEOUT_S:.0f} s") from None
        except requests.exceptions.ReadTimeout:
            raise QMRIClientError(f"the server {self.url} did not answer within {read_timeout:.0f} s") from None
        except requests.exceptions.ConnectionError as e:
            raise QMRIClientError(f"cannot reach the server {self.url}: {e.__class__.__name__}") from None
        except (requests.exceptions.RequestException, OSError) as e:
            raise QMRIClientError(f"request to {self.url}{path} failed: {e}") from None
        if resp.status_code >= 400:
            detail = _detail(resp)
            what = {404: "not found", 422: "rejected the input", 429: "is busy", 500: "failed"}.get(resp.status_code, f"answered HTTP {resp.status_code}")
            raise QMRIClientError(f"the server {what}: {detail}", status=resp.status_code, detail=detail)
        return resp

    def grant_consent(self) -> None:
        """Record the user's explicit agreement to send images to this server."""
        self.consent = True

    def _require_consent(self, what: str) -> None:
        if not self.consent:
            raise ConsentRequired(f"not uploading {what}: images may leave this computer only after you agree to send them to {self.url}")

    # -- info -----------------------------------------------------------------------------------
    def info(self, refresh: bool = False) -> dict:
        """``GET /info/`` (cached; ``refresh`` re-reads it)."""
        if self._info is None or refresh:
            resp = self._request("GET", "/info/", INFO_TIMEOUT_S)
            try:
                self._info = resp.json()
            except ValueError:
                raise QMRIClientError(f"{self.url} is not a qmri/MONAI Label server (its /info/ is not JSON)") from None
        return self._info

    def tasks(self, refresh: bool = False) -> dict[str, dict]:
        """The server's tasks: name -> description, inputs, outputs, methods, default_method."""
        return dict(self.info(refresh).get("models", {}))

    def trainers(self, refresh: bool = False) -> dict[str, dict]:
        """The models that can be trained on this server."""
        return dict(self.info(refresh).get("trainers", {}))

    # -- datastore ------------------------------------------------------------------------------
    def upload_image(self, image_id: str, path: str | Path, sidecar: Mapping[str, Any] | None = None, overwrite: bool = False) -> dict:
        """Upload a NIfTI to the datastore as study ``image_id`` (consent required).

        ``sidecar`` (acquisition metadata) is written as the study's JSON sidecar. The server
        refuses (409) to replace an existing study unless ``overwrite``.
        """
        self._require_consent(f"image '{image_id}'")
        path = Path(path)
        params: dict[str, Any] = {"overwrite": bool(overwrite)}
        if sidecar:
            params["sidecar"] = dict(sidecar)
        with open(path, "rb") as fh:
            resp = self._request(
                "PUT",
                "/datastore/image",
                UPLOAD_TIMEOUT_S,
                params={"image": image_id},
                files={"file": (path.name, fh)},
                data={"params": json.dumps(params)},
            )
        return resp.json() if resp.content else {}

    def upload_label(self, image_id: str, path: str | Path, tag: str = "final", params: Mapping[str, Any] | None = None) -> dict:
        """Upload a reference map as the ``tag`` label of study ``image_id`` (consent required).

        With ``tag="final"`` the server stores it as ``labels/final/<image_id>.nii.gz``: the
        training target of that study. ``params``: ``{"overwrite": true}`` replaces an existing one
        (the server answers 409 otherwise).
        """
        self._require_consent(f"reference map for '{image_id}'")
        path = Path(path)
        with open(path, "rb") as fh:
            resp = self._request(
                "PUT",
                "/datastore/label",
                UPLOAD_TIMEOUT_S,
                params={"image": image_id, "tag": tag},
                files={"label": (path.name, fh)},
                data={"params": json.dumps(dict(params or {}))},
            )
        return resp.json() if resp.content else {}

    def datastore(self) -> dict:
        """``GET /datastore/?output=all``: the studies the server holds."""
        return self._request("GET", "/datastore/", INFO_TIMEOUT_S, params={"output": "all"}).json()

    # -- infer ----------------------------------------------------------------------------------
    def infer(self, task: str, image_id: str | None = None, params: Mapping[str, Any] | None = None, file: str | Path | None = None, label: str | Path | None = None) -> InferResult:
        """Run ``task`` on study ``image_id`` already on the server, or on ``file`` (a NIfTI sent with the
        request: the server infers from a temporary copy and stores nothing; consent required).
        ``params``: method, map, sidecar (JSON-able; with ``file`` the sidecar must come here).
        ``label``: an integer label map (NIfTI on the image's grid, 0 = background, e.g. segments
        exported from a segmentation; consent required): the result's ``meta["regions"]`` then holds
        the task's regional analysis of each label (OEF: the region's OEF, its mirror region's and
        their difference, each with sd and 95 % interval)."""
        if (image_id is None) == (file is None):
            raise QMRIClientError("give either a study id on the server or a file to send, not both")
        data = {"params": json.dumps(dict(params or {}))}
        with ExitStack() as stack:
            files = {}
            if label is not None:
                self._require_consent(f"label map '{Path(label).name}'")
                files["label"] = (Path(label).name, stack.enter_context(open(label, "rb")))
            if file is None:
                resp = self._request("POST", f"/infer/{task}", self.timeout_s, params={"image": image_id, "output": "all"}, data=data, files=files or None)
            else:
                path = Path(file)
                self._require_consent(f"image '{path.name}'")
                files["file"] = (path.name, stack.enter_context(open(path, "rb")))
                resp = self._request("POST", f"/infer/{task}", self.timeout_s, params={"output": "all"}, data=data, files=files)
        parts = parse_multipart(resp.headers.get("content-type", ""), resp.content)
        meta_part = parts.pop("params", None)
        if meta_part is None or not parts:
            raise QMRIClientError(f"the server's answer for {task} lacks the result JSON or the image (parts: {list(parts)})")
        meta = json.loads(meta_part[1] or b"{}")
        raw = next(iter(parts.values()))[1]
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        if len(raw) < 348 or int.from_bytes(raw[:4], "little") != 348:
            raise QMRIClientError(f"the result of {task} is not a NIfTI-1 image")
        return InferResult(meta=meta, nifti=raw)

    # -- train ----------------------------------------------------------------------------------
    def train_start(self, model: str, params: Mapping[str, Any] | None = None, check: bool = True) -> dict:
        """Start training ``model`` (``POST /train/MODEL``, ``params`` as JSON body).

        With ``check`` the server's ``/info`` is read first and a model without a trainer is refused
        here with a clear message (MONAI Label itself accepts the request and fails later, in the
        background task).
        """
        if check:
            trainers = self.trainers(refresh=True)
            if model not in trainers:
                raise QMRIClientError(
                    f"the server cannot train '{model}': it has no trainer for it (trainers: {', '.join(sorted(trainers)) or 'none'})",
                    status=None,
                )
        resp = self._request("POST", f"/train/{model}", INFO_TIMEOUT_S, json=dict(params or {}))
        return resp.json()

    def train_status(self, all: bool = False) -> dict | list | None:
        """``GET /train/``: the latest training task (id, status SUBMITTED/RUNNING/DONE/ERROR/STOPPED,
        details); None when the server has never trained."""
        try:
            return self._request("GET", "/train/", INFO_TIMEOUT_S, params={"all": str(bool(all)).lower()}).json()
        except QMRIClientError as e:
            if e.status == 404:  # "No Train Tasks Found"
                return None
            raise

    def train_stop(self) -> dict | None:
        """``DELETE /train/``: stop the running training task (None when none runs)."""
        resp = self._request("DELETE", "/train/", INFO_TIMEOUT_S)
        return resp.json() if resp.content else None

    def wait_for_training(self, poll_s: float = 2.0, timeout_s: float = 3600.0, on_status: Callable[[dict], None] | None = None) -> dict:
        """Poll :meth:`train_status` until the task ends; returns its final status or raises with
        the server's log tail when it ends in ERROR."""
        t0 = time.time()
        while True:
            st = self.train_status()
            if st and on_status:
                on_status(st)
            if st and st.get("status") in ("DONE", "ERROR", "STOPPED"):
                if st["status"] == "ERROR":
                    tail = "\n".join(str(x) for x in (st.get("details") or [])[-5:])
                    raise QMRIClientError(f"training failed on the server:\n{tail}", detail=tail)
                return st
            if time.time() - t0 > timeout_s:
                raise QMRIClientError(f"training did not finish within {timeout_s:.0f} s")
            time.sleep(poll_s)


def training_progress(status: Mapping[str, Any] | None) -> tuple[float | None, str]:
    """A ``GET /train/`` status as (fraction 0..1 or None when unknown, one line for the UI), e.g.
    ``(0.55, "qsm: RUNNING, epoch 2/4, step 10/50, loss 0.0123, val nrmse 0.41 (best 0.39)")``."""
    if not status:
        return None, "no training on this server yet"
    model = str((status.get("request") or {}).get("model", ""))
    state = str(status.get("status", "?"))
    p = status.get("progress") or {}
    parts = [f"{model}: {state}" if model else state]
    if p.get("stage") and state in ("SUBMITTED", "RUNNING"):
        parts.append(str(p["stage"]))
    if p.get("epoch") is not None and p.get("epochs"):
        parts.append(f"epoch {p['epoch']}/{p['epochs']}")
    if p.get("step") is not None and p.get("steps"):
        parts.append(f"step {p['step']}/{p['steps']}")
    if isinstance(p.get("loss"), (int, float)):
        parts.append(f"loss {p['loss']:.4g}")
    if isinstance(p.get("value"), (int, float)):
        best = f" (best {p['best']:.4g})" if isinstance(p.get("best"), (int, float)) else ""
        parts.append(f"val {p.get('metric') or 'metric'} {p['value']:.4g}{best}")
    fraction = p.get("fraction")
    if state == "DONE":
        fraction = 1.0
    return (float(fraction) if isinstance(fraction, (int, float)) else None), ", ".join(parts)


@dataclass
class Job:
    """A call run in a background thread, polled by the UI (e.g. with a QTimer).

    ``fn(job)`` may update ``job.stage`` to describe its progress; the UI reads ``stage``,
    ``elapsed_s``, ``done``, ``result`` and ``error``. :meth:`cancel` ends the job at once for the
    UI (``done`` turns True, ``error`` is :class:`Cancelled`); a request already in flight is
    abandoned in its daemon thread and whatever it returns later is discarded (the server may still
    finish that computation: MONAI Label has no way to cancel a running infer).
    """

    fn: Callable[["Job"], Any]
    stage: str = "waiting"
    result: Any = None
    error: BaseException | None = None
    cancelled: bool = False
    _t0: float = field(default_factory=time.time)
    _thread: threading.Thread | None = None
    _done: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> "Job":
        self._t0 = time.time()
        self._thread = threading.Thread(target=self._run, name="qmri-job", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            result = self.fn(self)
            error = None
        except BaseException as e:  # reported to the UI thread, never raised in the worker
            result, error = None, e
        with self._lock:
            if self.cancelled:  # cancel() already finished the job: discard
                return
            self.result, self.error = result, error
            self.stage = "failed" if error is not None else "done"
            self._done.set()

    def check_cancelled(self) -> None:
        """Call between steps of ``fn``: raises :class:`Cancelled` after :meth:`cancel`."""
        if self.cancelled:
            raise Cancelled("cancelled by the user")

    def cancel(self) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self.cancelled = True
            self.error = Cancelled("cancelled by the user")
            self.stage = "cancelled"
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def elapsed_s(self) -> float:
        return time.time() - self._t0

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)


def run_task(client: QMRIClient, task: str, image_path: str | Path | None, image_id: str | None = None, params: Mapping[str, Any] | None = None, job: Job | None = None, label: str | Path | None = None) -> InferResult:
    """Run ``task`` on ``image_path``, sent with the request (nothing is stored on the server), or,
    when ``image_path`` is None, on study ``image_id`` already on the server; ``label``: a label map
    for the task's regional analysis (:meth:`QMRIClient.infer`). Updates ``job.stage`` and stops
    before the request on cancel."""
    if job:
        job.check_cancelled()
        job.stage = f"sending the image and running {task} on the server" if image_path is not None else f"running {task} on the server"
    if image_path is not None:
        result = client.infer(task, params=params, file=image_path, label=label)
    else:
        result = client.infer(task, image_id, params, label=label)
    if job:
        job.stage = "received the result"
    return result


def add_training_case(client: QMRIClient, image_id: str, image_path: str | Path, reference_path: str | Path, sidecar: Mapping[str, Any] | None = None, job: Job | None = None, task: str | None = None) -> None:
    """Send inputs + a reference map as a new annotated study: the reference becomes the study's
    ``labels/final`` target (consent required for both uploads).

    ``task``: the training task the case is for (the sidecar's ``"task"`` is filled with it); the
    server then refuses (422, with the reason) a case its trainer would skip, instead of storing a
    case that training silently leaves out."""
    if task is not None:
        sidecar = {**dict(sidecar or {}), "task": task}
    if job:
        job.stage = "uploading the inputs"
    client.upload_image(image_id, image_path, sidecar)
    if job:
        job.check_cancelled()
        job.stage = "uploading the reference map"
    client.upload_label(image_id, reference_path, tag="final", params={"train_for": task} if task is not None else None)
