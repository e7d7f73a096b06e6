"""MONAI Label app of the qmri project: quantitative maps (OEF, QSM, PET PVC, synthetic CT/MR).

Layout follows MONAI Label's ``sample-apps/radiology``: every task is a ``TaskConfig`` in
``lib/configs`` (one module each) that builds its infer task(s) and trainer from the science in the
``qmri`` package; ``lib/infers`` and ``lib/trainers`` hold thin adapters. Select tasks with
``--conf models <name,name|all>`` (default ``all``). ``--conf device auto|cpu|cuda|cuda:N`` (default
``auto``: CUDA when torch sees a GPU) chooses where every network and torch solver runs, and
``--conf torch_threads N`` the threads of torch and BLAS (default: one per core); ``/info`` shows both
under ``compute``.

Start: ``monailabel start_server --app apps/qmri --studies sample-data/studies``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict

from fastapi import HTTPException

import lib.configs
from lib.datastore import SidecarDatastore, check_id
from lib.trainers.network import SERVER_PID_ENV
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.utils.others.class_utils import get_class_names
from monailabel.utils.others.generic import strtobool

import qmri
from qmri.networks import compute

logger = logging.getLogger(__name__)

#: What a client may pass to /infer besides the study id: the task's method, the map(s) to return,
#: and the acquisition sidecar (for a study uploaded without one).
INFER_PARAMS = {"method", "map", "sidecar", "store_pm"}


class QMRIApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]):
        # --conf model_dir DIR serves (and trains into) another copy of the weights
        self.model_dir = conf.get("model_dir", os.path.join(app_dir, "model"))
        compute.use(conf.get("device", "auto"))  # an unknown or absent device stops the server with its reason
        threads = conf.get("torch_threads")
        if threads is not None and not str(threads).isdigit():
            raise ValueError(f"--conf torch_threads must be a positive integer, got {threads!r}")
        compute.set_threads(int(threads) if threads else None)
        logger.info("compute: %s", compute.describe())
        available = {c.split(".")[-2].lower(): c for c in get_class_names(lib.configs, "TaskConfig")}
        requested = [m.strip() for m in conf.get("models", "all").split(",") if m.strip()]
        unknown = [m for m in requested if m != "all" and m not in available]
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; available: {sorted(available) or 'none'}")
        self.models: Dict[str, TaskConfig] = {}
        for name, cls_path in sorted(available.items()):
            if "all" in requested or name in requested:
                module_name, cls_name = cls_path.rsplit(".", 1)
                module = __import__(module_name, fromlist=[cls_name])
                task_config: TaskConfig = getattr(module, cls_name)()
                task_config.init(name, self.model_dir, conf, None)
                self.models[name] = task_config
                logger.info("+++ Adding task config: %s => %s", name, cls_path)
        if SERVER_PID_ENV not in os.environ:  # set by lib.server.asgi, inherited by training processes
            logger.warning("qmri is served without its server policy (no route allow-list, CORS for any origin, no size or concurrency limits); start it with `monailabel start_server ... --uvicorn_app lib.server.asgi:app` (`make serve` does)")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"qmri ({qmri.__version__})",
            description="Quantitative brain maps: OEF, QSM, PET partial-volume correction, synthetic CT/MR",
            version=qmri.__version__,
        )
        # the training processes MONAI Label starts build the app too: they load only what they train
        in_server = os.environ.get(SERVER_PID_ENV, str(os.getpid())) == str(os.getpid())
        if in_server and strtobool(conf.get("warm_up", "true")):
            self._warm_up()

    def _warm_up(self) -> None:
        """Load every task's network weights onto the compute device before the server answers, so
        that the first request of each task costs what the next ones do (``--conf warm_up false``:
        load on first use)."""
        t0 = time.time()
        for task in self._infers.values():  # tasks sharing weights (qsm, qsm_raw) load them once: get() caches
            spec = getattr(task, "spec", None)
            if spec is None:
                continue
            try:
                loaded = spec.warm_up()
            except Exception as e:  # a broken weights file is reported by the requests that need it
                logger.warning("warm-up of %s failed: %s", spec.name, e)
                continue
            if loaded:
                logger.info("warm-up: %s loaded (%s)", spec.name, ", ".join(loaded))
        logger.info("warm-up finished in %.1f s", time.time() - t0)

    def info(self):
        i = super().info()
        i["compute"] = compute.describe()
        return i

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return self._pacs_datastore()
        return SidecarDatastore(
            self.studies,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def _pacs_datastore(self) -> Datastore:
        """A DICOMweb PACS (e.g. Orthanc) as the datastore (lib.dicomweb_datastore), built as MONAI
        Label builds its own, without fetching the dcmqi tools (no DICOM SEG is made here)."""
        from lib.dicomweb_datastore import MultiEchoDICOMWebDatastore
        from monailabel.datastore.dicom import DICOMwebClientX
        from dicomweb_client.session_utils import create_session_from_user_pass

        self.studies = self.studies.rstrip("/").strip()
        session = None
        if settings.MONAI_LABEL_DICOMWEB_USERNAME and settings.MONAI_LABEL_DICOMWEB_PASSWORD:
            session = create_session_from_user_pass(settings.MONAI_LABEL_DICOMWEB_USERNAME, settings.MONAI_LABEL_DICOMWEB_PASSWORD)
        client = DICOMwebClientX(url=self.studies, session=session, qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX, wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX, stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX)
        cache = (settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or "").strip() or None
        search = dict(settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER or {})
        if search == {"Modality": "CT"}:  # MONAI Label's default, made for its CT apps: list every series here
            search = {}
        return MultiEchoDICOMWebDatastore(client=client, search_filter=search, cache_path=cache, fetch_by_frame=settings.MONAI_LABEL_DICOMWEB_FETCH_BY_FRAME, convert_to_nifti=True)

    def init_infers(self) -> Dict[str, InferTask]:
        infers: Dict[str, InferTask] = {}
        for name, task_config in self.models.items():
            c = task_config.infer()
            infers.update(c if isinstance(c, dict) else {name: c})
        return infers

    def init_trainers(self) -> Dict[str, TrainTask]:
        if strtobool(self.conf.get("skip_trainers", "false")):
            return {}
        trainers: Dict[str, TrainTask] = {}
        for name, task_config in self.models.items():
            t = task_config.trainer()
            if t:
                trainers[name] = t
        return trainers

    def infer(self, request: Dict[str, Any], datastore=None, sent_file: str | None = None, sent_label: str | None = None):
        """Run an infer task on a datastore study; every other input is refused with a 4xx.

        MONAI Label would also accept a server file path as ``image`` (reading any NIfTI the server
        can), save the result as a label (``save_label``/``label_tag``, overwriting training targets)
        and take ``device`` from the client; here the request may hold only ``model``, ``image``
        (a datastore id) and the documented parameters (:data:`INFER_PARAMS`).

        ``sent_file``: the server's own temporary copy of an image sent with the request (set by the
        ``/infer`` route, never from a request's parameters); then ``image`` must be empty.
        ``sent_label``: likewise, a label map sent with the request (form field ``label``): the task's
        regional analysis of each labelled region is added to the result's JSON as ``regions``.
        """
        model = request.get("model")
        if model not in self._infers:  # MONAI Label answers an unknown model with a 500
            raise HTTPException(status_code=404, detail=f"unknown task {str(model)[:60]!r}; available: {sorted(self._infers) or 'none'}")
        request = {k: v for k, v in request.items() if k != "client_id"}  # MONAI Label's client adds it to every request
        allowed = INFER_PARAMS | set(getattr(self._infers[model], "options", {}))  # the task's own options (e.g. tta)
        unknown = sorted(set(request) - {"model", "image"} - allowed)
        if unknown:
            raise HTTPException(status_code=422, detail=f"parameter(s) {', '.join(repr(str(k)[:40]) for k in unknown[:8])} not accepted by /infer/{model}; allowed: {', '.join(sorted(allowed))}")
        image = request.get("image")
        if sent_file is not None:
            if image:
                raise HTTPException(status_code=422, detail="send either a study id (query parameter 'image') or a file (form field 'file'), not both")
            uri = sent_file
        else:
            if not image:
                raise HTTPException(status_code=422, detail="no study given: pass the datastore id of the input as the 'image' query parameter, or send the image as form field 'file'")
            check_id(image)
            datastore = datastore or self.datastore()
            uri = datastore.get_image_uri(image)
            if not uri:
                raise HTTPException(status_code=404, detail=f"unknown study '{image}': upload it with PUT /datastore/image first")
        # MONAI Label's own infer() would treat an id that is also a path under the working folder
        # as that file; the task here gets the datastore's file (or the route's copy) and never saves a label
        task = self._infers[model]
        store_pm = request.pop("store_pm", False)
        if not isinstance(store_pm, bool):
            raise HTTPException(status_code=422, detail="parameter 'store_pm' must be true or false")
        store = getattr(datastore, "store_result", None) if sent_file is None else None
        if store_pm and store is None:
            raise HTTPException(status_code=422, detail="'store_pm' needs a PACS datastore (a DICOMweb STUDIES url) and a study id from it")
        extra = {"label": sent_label} if sent_label is not None else {}
        result_file, result_json = task({**request, **extra, "image": uri, "description": task.description})
        if store_pm:  # the map back to the PACS as a DICOM Parametric Map
            try:
                result_json["stored_series"] = store(image, result_file, result_json)
            except Exception as e:  # the map itself is still answered
                logger.warning("storing the Parametric Map of %s failed: %s", image, e)
                result_json["store_error"] = str(e)[:300]
        return {"label": result_file, "tag": DefaultLabelTag.ORIGINAL, "file": result_file, "params": result_json}
