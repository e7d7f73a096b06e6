"""MONAI Label's FastAPI app under the qmri server policy (:mod:`lib.server.policy`).

Start it with MONAI Label's own command (the Makefile's ``serve`` does)::

    monailabel start_server --app apps/qmri --studies STUDIES --uvicorn_app lib.server.asgi:app

What changes against ``monailabel.app:app``:

- **routes**: only those this app's clients use stay (``/info``, ``/infer``, ``/datastore``,
  ``/train``, the API docs). Weight upload/delete (``/model``), sessions, batch inference, scoring,
  DICOM proxies, OHIF, ``/reload`` and the free-form index edits (``PUT .../info``) are gone; ``/logs`` and ``GET /datastore/dataset`` answer 403
  unless enabled; ``/infer``, the uploads, ``POST /train/{model}`` and ``GET /train/`` are replaced by
  the guarded versions below;
- **browsers**: CORS allows only the configured origins (none by default), without credentials, and
  a request whose ``Origin`` is neither the server itself nor an allowed origin is refused (403), so
  a web page the workstation user opens cannot drive the server;
- **size**: a request body over the limit is refused with 413 before it is stored;
- **availability**: inference runs in :class:`~lib.server.infer_pool.InferPool` off the request
  loop; SIGTERM ends the process within the grace time even while a map is being computed.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.background import BackgroundTasks
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from monailabel.app import app as monailabel_app
from monailabel.config import settings
from monailabel.endpoints.infer import send_response
from monailabel.endpoints.user.auth import RBAC
from monailabel.interfaces.utils.app import app_instance
from monailabel.utils.others.generic import remove_file
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.routing import Match

from qmri.io.nifti_input import InputTooLarge

from ..datastore import check_id, check_upload, nifti_ext
from ..trainers.network import SERVER_PID_ENV
from .infer_pool import InferPool
from .policy import POLICY
from .train_requests import finished_tasks, train_params, with_progress

logger = logging.getLogger(__name__)

#: (method, path) of MONAI Label routes kept as they are.
KEPT = {
    ("GET", "/"),
    ("GET", "/favicon.ico"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/info/"),
    ("POST", "/login/token"),
    ("GET", "/login/token/valid"),
    ("GET", "/datastore/"),
    ("GET", "/datastore/image"),
    ("GET", "/datastore/image/info"),
    ("HEAD", "/datastore/label"),
    ("GET", "/datastore/label"),
    ("GET", "/datastore/label/info"),
    ("DELETE", "/datastore/"),
    ("DELETE", "/datastore/image"),
    ("DELETE", "/datastore/label"),  # refused by the datastore unless enabled
    ("DELETE", "/train/"),
}
LOG_ROUTES = {("GET", "/logs/"), ("GET", "/logs/gpu")}
MAX_FORM_FIELDS = 8


def _error(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _json_object(text: Any, what: str) -> dict:
    if text is None or text == "":
        return {}
    if not isinstance(text, str):
        raise HTTPException(status_code=422, detail=f"form field '{what}' must be a JSON object given as text")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise HTTPException(status_code=422, detail=f"form field '{what}' is not valid JSON: {e.msg} at character {e.pos}") from None
    except RecursionError:
        raise HTTPException(status_code=422, detail=f"form field '{what}' is nested too deeply") from None
    if not isinstance(value, dict):
        raise HTTPException(status_code=422, detail=f"form field '{what}' must be a JSON object, got {type(value).__name__}")
    return value


def _only_query(request: Request, allowed: set[str]) -> None:
    extra = sorted(set(request.query_params) - allowed)
    if extra:
        raise HTTPException(status_code=422, detail=f"query parameter(s) {', '.join(repr(k[:40]) for k in extra[:8])} not accepted here; allowed: {', '.join(sorted(allowed)) or 'none'}")


async def _form(request: Request, files: set[str], fields: set[str]):
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("", "multipart/form-data", "application/x-www-form-urlencoded"):
        raise HTTPException(status_code=415, detail=f"send a multipart form (fields {', '.join(sorted(files | fields))}), not {kind[:40]}")
    try:
        form = await request.form(max_files=max(len(files), 1), max_fields=MAX_FORM_FIELDS)  # a stray file is named below
    except HTTPException:
        raise
    except Exception as e:  # starlette raises several types for malformed multipart bodies
        raise HTTPException(status_code=400, detail=f"malformed form body: {str(e)[:120]}") from None
    extra = sorted(set(form.keys()) - files - fields)
    if extra:
        raise HTTPException(status_code=422, detail=f"form field(s) {', '.join(repr(k[:40]) for k in extra[:8])} not accepted here; allowed: {', '.join(sorted(files | fields))}")
    return form


# --- /infer ----------------------------------------------------------------------------------------
POOL = InferPool(POLICY.infer_workers, POLICY.infer_queue, POLICY.infer_timeout_s)


def _admit(instance, model: str, image: str, method, sent: str | None = None) -> None:
    """Before a worker is taken: a known study (or a sent image whose header passes the upload
    checks: size, real numbers, 3D/4D, complete) whose estimated memory for the request's method
    fits (413 otherwise; an unknown method is left to the task, which names the choices)."""
    if sent is not None:
        check_upload(sent, POLICY)
        uri = sent
    elif not image:
        return  # the app names the missing id
    else:
        check_id(image)
        uri = instance.datastore().get_image_uri(image)
    task = instance._infers[model]
    if uri and hasattr(task, "check_memory"):
        method = method if isinstance(method, str) and method in getattr(task, "methods", ()) else getattr(task, "default_method", None)
        try:
            task.check_memory(uri, method)
        except InputTooLarge as e:
            raise HTTPException(status_code=413, detail=str(e)) from None
        except ValueError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None


async def infer(request: Request) -> Any:
    """``POST /infer/{model}?image=ID[&output=image|json|all]`` with form ``params`` (JSON object), or
    with form ``file`` (a NIfTI) instead of ``image``: the image sent with the request is inferred from
    a private temporary copy, deleted afterwards; nothing is stored in the datastore (give its
    acquisition metadata as the ``sidecar`` parameter)."""
    model = request.path_params["model"]
    _only_query(request, {"image", "output"})
    output = request.query_params.get("output") or "all"
    if output not in ("image", "json", "all"):
        raise HTTPException(status_code=422, detail=f"output must be image, json or all, got {output[:20]!r}")
    form = await _form(request, files={"file", "label"}, fields={"params"})
    params = _json_object(form.get("params"), "params")
    for key in ("model", "image"):
        if key in params:
            raise HTTPException(status_code=422, detail=f"'{key}' cannot be a parameter: the task is in the path and the study id in the 'image' query parameter")
    upload = form.get("file")
    image_id = request.query_params.get("image", "")
    if upload is not None and image_id:
        raise HTTPException(status_code=422, detail="send either a study id (query parameter 'image') or a file (form field 'file'), not both")
    instance = app_instance()
    if model not in instance._infers:  # before taking a worker or storing the file
        raise HTTPException(status_code=404, detail=f"unknown task {model[:60]!r}; available: {sorted(instance._infers)}")
    background = BackgroundTasks()
    sent = sent_label = None
    if upload is not None:
        sent = await _stored_upload(upload, "file")
        background.add_task(remove_file, sent)
    if form.get("label") is not None:  # a label map for the task's regional analysis (OEF of each region)
        try:
            sent_label = await _stored_upload(form.get("label"), "label")
        except BaseException:
            if sent is not None:
                remove_file(sent)
            raise
        background.add_task(remove_file, sent_label)
    try:
        await run_in_threadpool(_admit, instance, model, image_id, params.get("method"), sent)
        req = {**params, "model": model, "image": image_id}
        if sent is not None:  # a sent image's metadata comes only with the request, never from a file beside it
            req.setdefault("sidecar", {})

        def compute():
            result = instance.infer(req, sent_file=sent, sent_label=sent_label)
            return send_response(instance.datastore(), result, output, background)

        response = await POOL.run(compute)
    except BaseException:
        for f in (sent, sent_label):
            if f is not None:
                remove_file(f)
        raise
    if not isinstance(response, Response):  # output=json: the result's JSON
        response = JSONResponse(response)
    response.background = background  # deletes the result file (and a sent image) once answered
    return response


# --- uploads ---------------------------------------------------------------------------------------
async def _stored_upload(upload: Any, what: str) -> str:
    """Save a form's file to a private temporary file with its NIfTI suffix; its path."""
    if not isinstance(upload, UploadFile):
        raise HTTPException(status_code=422, detail=f"form field '{what}' must be a file")
    ext = nifti_ext(upload.filename or "")
    fd, path = tempfile.mkstemp(prefix="qmri_upload_", suffix=ext)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := await upload.read(1 << 20):
                out.write(chunk)
    except BaseException:
        remove_file(path)
        raise
    return path


async def put_image(request: Request) -> Any:
    """``PUT /datastore/image?image=ID`` with form ``file`` (NIfTI) and ``params`` (``sidecar``, ``overwrite``)."""
    _only_query(request, {"image"})
    form = await _form(request, files={"file"}, fields={"params"})
    params = _json_object(form.get("params"), "params")
    upload = form.get("file")
    image_id = request.query_params.get("image")
    if not image_id and isinstance(upload, UploadFile):  # the file's name, which must itself be a plain id
        name = upload.filename or ""
        image_id = name[: -len(nifti_ext(name))]
    check_id(image_id)
    path = await _stored_upload(upload, "file")
    try:
        image_id = await run_in_threadpool(app_instance().datastore().add_image, image_id, path, params)
    finally:
        remove_file(path)
    return {"image": image_id}


async def put_label(request: Request) -> Any:
    """``PUT /datastore/label?image=ID&tag=final`` with form ``label`` (NIfTI) and ``params`` (``overwrite``)."""
    _only_query(request, {"image", "tag"})
    form = await _form(request, files={"label"}, fields={"params"})
    params = _json_object(form.get("params"), "params")
    image_id = check_id(request.query_params.get("image"))
    tag = request.query_params.get("tag") or "final"
    path = await _stored_upload(form.get("label"), "label")
    try:
        instance = app_instance()
        label_id = await run_in_threadpool(instance.datastore().save_label, image_id, path, tag, params)
        res = instance.on_save_label(image_id, label_id) or {}
    finally:
        remove_file(path)
    return {**res, "image": image_id, "label": label_id}


CHECKSUMS = {"SHA256", "SHA512", "MD5"}  # what monailabel.utils.others.generic.file_checksum computes


async def check_image(request: Request) -> Any:
    """``HEAD /datastore/image?image=ID[&check_sum=[ALGO:]DIGEST]``: 200 if the study exists (with
    that checksum), else 404; an unknown algorithm is 422 (MONAI Label answers it with a 500)."""
    from monailabel.utils.others.generic import file_checksum

    _only_query(request, {"image", "check_sum"})
    image_id = check_id(request.query_params.get("image"))
    uri = app_instance().datastore().get_image_uri(image_id)
    if not uri or not os.path.isfile(uri):
        raise HTTPException(status_code=404, detail=f"unknown study '{image_id}'")
    check_sum = request.query_params.get("check_sum")
    if check_sum:
        algo, _, digest = check_sum.rpartition(":")
        algo = algo.upper() or "SHA256"
        if algo not in CHECKSUMS:
            raise HTTPException(status_code=422, detail=f"check_sum algorithm {algo[:20]!r} is not one of {', '.join(sorted(CHECKSUMS))}")
        if digest.lower() != (await run_in_threadpool(file_checksum, uri, algo)).split(":", 1)[1]:
            raise HTTPException(status_code=404, detail=f"study '{image_id}' exists with another checksum")
    return {}


async def dataset(request: Request) -> Any:
    """``GET /datastore/dataset``: a zip of every study, only when enabled; the zip is deleted once sent."""
    if not POLICY.enable_dataset_download:
        raise HTTPException(status_code=403, detail="dataset download is disabled on this server (QMRI_ENABLE_DATASET_DOWNLOAD=1 enables it)")
    _only_query(request, set())
    path = await run_in_threadpool(app_instance().datastore().get_dataset_archive, None)
    background = BackgroundTasks()
    background.add_task(remove_file, path)
    return FileResponse(path, media_type="application/zip", filename="dataset.zip", background=background)


async def logs_disabled(request: Request) -> Any:
    raise HTTPException(status_code=403, detail="the server log is not served (it holds request parameters); QMRI_ENABLE_LOGS=1 enables /logs")


# --- training --------------------------------------------------------------------------------------
async def train_start(request: Request) -> Any:
    """``POST /train/{model}[?enqueue=true]`` with a JSON object of the trainer's own parameters."""
    from monailabel.endpoints.train import run_model

    model = request.path_params["model"]
    _only_query(request, {"enqueue", "run_sync"})
    if request.query_params.get("run_sync", "false").lower() not in ("false", "0", ""):
        raise HTTPException(status_code=403, detail="run_sync is refused: training runs in its own process so that the server keeps answering; poll GET /train/")
    enqueue = request.query_params.get("enqueue", "false").lower() in ("true", "1")
    body = await request.body()
    try:
        params = json.loads(body) if body.strip() else {}
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise HTTPException(status_code=422, detail="the body must be a JSON object of training parameters") from None
    instance = app_instance()
    trainer = instance._trainers.get(model)
    if trainer is None:
        raise HTTPException(status_code=404, detail=f"no trainer {model[:60]!r}; available: {sorted(instance._trainers)}")
    params = train_params(params, trainer.config())
    return await run_in_threadpool(run_model, model, params, False, enqueue)


async def train_status(request: Request) -> Any:
    """``GET /train/[?all=true]``: the running/last task, also across restarts (kept beside the weights)."""
    from monailabel.utils.async_tasks.task import AsyncTask

    _only_query(request, {"all", "check_if_running"})
    all_ = request.query_params.get("all", "false").lower() in ("true", "1")
    running = request.query_params.get("check_if_running", "false").lower() in ("true", "1")
    live, detail = AsyncTask.status("train", True, running)
    if running:
        if live is None:
            raise HTTPException(status_code=404, detail=detail)
        return with_progress(live, app_instance()._trainers)
    instance = app_instance()
    tasks = [with_progress(t, instance._trainers) for t in finished_tasks(Path(instance.model_dir), live or [])]
    if not tasks:
        raise HTTPException(status_code=404, detail=detail or "no training tasks found")
    return tasks if all_ else tasks[-1]


# --- assembly --------------------------------------------------------------------------------------
#: The guarded endpoints, with the MONAI Label role each needs when authentication is enabled
#: (``MONAI_LABEL_AUTH_ENABLE``; the same roles MONAI Label's own routes ask for).
REPLACED = {
    ("POST", "/infer/{model}"): (infer, settings.MONAI_LABEL_AUTH_ROLE_USER),
    ("PUT", "/datastore/image"): (put_image, settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR),
    ("PUT", "/datastore/"): (put_image, settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR),
    ("PUT", "/datastore/label"): (put_label, settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR),
    ("GET", "/datastore/dataset"): (dataset, settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR),
    ("HEAD", "/datastore/image"): (check_image, settings.MONAI_LABEL_AUTH_ROLE_USER),
    ("POST", "/train/{model}"): (train_start, settings.MONAI_LABEL_AUTH_ROLE_ADMIN),
    ("GET", "/train/"): (train_status, settings.MONAI_LABEL_AUTH_ROLE_USER),
}


def _normal(path: str) -> str:
    return path if path.endswith("/") else path + "/"


class PolicyRouter:
    """Pure ASGI app: the guarded endpoints, then MONAI Label's routes that are kept; nothing else.

    (FastAPI includes MONAI Label's routers lazily, so its route list cannot be filtered in place;
    routing happens here in front of it instead.)
    """

    def __init__(self, monailabel_app, policy=POLICY):
        self.monailabel = monailabel_app
        self.guarded = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        for (method, path), (endpoint, role) in REPLACED.items():
            self.guarded.add_api_route(path, endpoint, methods=[method], include_in_schema=False, dependencies=[Depends(RBAC(role))])
        if not policy.enable_logs:
            for _, path in LOG_ROUTES:
                self.guarded.add_api_route(path, logs_disabled, methods=["GET"], include_in_schema=False)
        kept = KEPT | (LOG_ROUTES if policy.enable_logs else set())
        self.kept = {(m, _normal(p)) for m, p in kept}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # lifespan: MONAI Label's app starts and stops the app instance
            return await self.monailabel(scope, receive, send)
        for route in self.guarded.router.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return await self.guarded(scope, receive, send)
        method, path = scope["method"], scope["path"]
        if (method if method != "HEAD" else "GET", _normal(path)) in self.kept or (method, _normal(path)) in self.kept or path.startswith("/static/"):
            return await self.monailabel(scope, receive, send)
        await _error(404, f"{method} {path[:80]} is not available on this server")(scope, receive, send)


class RequestGate:
    """Pure ASGI middleware: refuses foreign browser origins (403) and oversized bodies (413)."""

    def __init__(self, asgi, allowed_origins=(), max_body_bytes: int = 0):
        self.asgi, self.allowed, self.max_body = asgi, set(allowed_origins), int(max_body_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.asgi(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        origin = headers.get("origin")
        if origin and origin not in self.allowed and urlsplit(origin).netloc != headers.get("host", ""):
            return await _error(403, "cross-origin requests from this web page are refused; the server's QMRI_CORS_ORIGINS lists the allowed origins")(scope, receive, send)
        length = headers.get("content-length")
        limit_mb = self.max_body // (1024 * 1024)
        if length is not None:
            if not length.isdigit():
                return await _error(400, "invalid Content-Length header")(scope, receive, send)
            if int(length) > self.max_body:
                return await _error(413, f"the request body is {int(length) / 2**20:.0f} MiB; the server's limit is {limit_mb} MiB (QMRI_MAX_UPLOAD_MB)")(scope, receive, send)
        seen, started = 0, False

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _BodyTooLarge()
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.asgi(scope, counted_receive, tracked_send)
        except _BodyTooLarge:
            if not started:
                await _error(413, f"the request body exceeds the server's limit of {limit_mb} MiB (QMRI_MAX_UPLOAD_MB)")(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def _install_sigterm_deadline(grace_s: float) -> None:
    """On SIGTERM/SIGINT: stop a running training process, let uvicorn shut down, and end the
    process after ``grace_s`` even if a request is still computing (uvicorn would wait for it)."""

    def wrap(sig):
        previous = signal.getsignal(sig)

        def handler(signum, frame):
            logger.warning("signal %d: shutting down (at most %.0f s)", signum, grace_s)
            try:
                from monailabel.utils.async_tasks.task import AsyncTask

                AsyncTask.stop("train")
            except Exception:  # shutting down: a training process that already ended is fine
                pass
            timer = threading.Timer(grace_s, os._exit, args=(128 + signum,))
            timer.daemon = True
            timer.start()
            if callable(previous):
                previous(signum, frame)

        signal.signal(sig, handler)

    for sig in (signal.SIGTERM, signal.SIGINT):
        wrap(sig)


_monailabel_lifespan = monailabel_app.router.lifespan_context


def _keep_training_history(stop: threading.Event, every_s: float = 5.0) -> None:
    """Append finished training tasks to the model folder's history as they end, so that a restart
    does not forget one that nobody polled."""
    from monailabel.utils.async_tasks.task import AsyncTask

    while not stop.wait(every_s):
        try:
            live, _ = AsyncTask.status("train", True, False)
            if live:
                finished_tasks(Path(app_instance().model_dir), live)
        except Exception:  # a full disk must not end the server; the next round tries again
            logger.exception("could not save the training history")


@asynccontextmanager
async def _lifespan(application):
    async with _monailabel_lifespan(application) as state:
        if threading.current_thread() is threading.main_thread():
            _install_sigterm_deadline(POLICY.shutdown_grace_s)
        stop = threading.Event()
        threading.Thread(target=_keep_training_history, args=(stop,), name="qmri-train-history", daemon=True).start()
        yield state
        stop.set()


def guard(monailabel_app):
    """MONAI Label's app under the policy: its own CORS (any origin) removed, the routes filtered
    by :class:`PolicyRouter`, then the origin/size gate and a strict CORS in front."""
    monailabel_app.user_middleware[:] = [m for m in monailabel_app.user_middleware if m.cls is not CORSMiddleware]
    monailabel_app.middleware_stack = None
    monailabel_app.router.lifespan_context = _lifespan
    os.environ[SERVER_PID_ENV] = str(os.getpid())  # training processes stop when this one is gone
    guarded = PolicyRouter(monailabel_app)
    guarded = RequestGate(guarded, allowed_origins=POLICY.cors_origins, max_body_bytes=POLICY.max_upload_mb * 1024 * 1024)
    guarded = CORSMiddleware(guarded, allow_origins=list(POLICY.cors_origins), allow_credentials=False, allow_methods=["GET", "POST", "PUT", "DELETE", "HEAD"], allow_headers=["*"])
    if settings.MONAI_LABEL_AUTH_ENABLE:
        logger.info("MONAI Label authentication is enabled (Keycloak realm %s)", settings.MONAI_LABEL_AUTH_REALM_URI)
    return guarded


app = guard(monailabel_app)
