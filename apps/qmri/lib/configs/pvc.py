"""Partial-volume correction of amyloid PET: PET-only networks and the classical PETPVC-style methods."""

import os

from monailabel.interfaces.config import TaskConfig

from qmri.tasks.pvc import DEFAULT_NETWORK, NETWORK_METHODS, pvc_spec

from ..infers.task_infer import TaskInfer
from ..trainers.pvcnet import pvcnet_trainer


class PartialVolumeCorrection(TaskConfig):
    def init(self, name, model_dir, conf, planner, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        # default network first: the trainer trains it unless the request names another
        order = [DEFAULT_NETWORK] + [m for m in NETWORK_METHODS if m != DEFAULT_NETWORK]
        self.weights = {m: os.path.join(model_dir, m, f"{m}.pt") for m in order}

    def infer(self):
        spec = pvc_spec(self.weights)
        return {spec.name: TaskInfer(spec)}

    def trainer(self):
        return pvcnet_trainer(self.weights)
