"""MONAI Label app of the qmri project: quantitative maps (OEF, QSM, PET PVC, synthetic CT/MR).

Layout follows MONAI Label's ``sample-apps/radiology``: every task is a ``TaskConfig`` in
``lib/configs`` (one module each) that builds its infer task(s) and trainer from the science in the
``qmri`` package; ``lib/infers`` and ``lib/trainers`` hold thin adapters. Select tasks with
``--conf models <name,name|all>`` (default ``all``).

Start: ``monailabel start_server --app apps/qmri --studies sample-data/studies``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict

from fastapi import HTTPException

import lib.configs
from lib.datastore import SidecarDatastore
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.utils.others.class_utils import get_class_names
from monailabel.utils.others.generic import strtobool

import qmri

logger = logging.getLogger(__name__)


class QMRIApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]):
        # --conf model_dir DIR serves (and trains into) another copy of the weights
        self.model_dir = conf.get("model_dir", os.path.join(app_dir, "model"))
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
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"qmri ({qmri.__version__})",
            description="Quantitative brain maps: OEF, QSM, PET partial-volume correction, synthetic CT/MR",
            version=qmri.__version__,
        )

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        return SidecarDatastore(
            self.studies,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

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

    def infer(self, request: Dict[str, Any], datastore=None):
        # MONAI Label answers an unknown model with a 500; a client deserves a 404 naming the choices.
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(status_code=404, detail=f"unknown task '{model}'; available: {sorted(self._infers) or 'none'}")
        return super().infer(request, datastore)
