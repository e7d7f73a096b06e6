"""Partial-volume correction of amyloid PET: PET-only networks and the classical PETPVC-style methods."""

from monailabel.interfaces.config import TaskConfig

from qmri.tasks import registry
from qmri.tasks.pvc import pvc_spec

from ..infers.task_infer import TaskInfer
from ..trainers.network import network_trainer


class PartialVolumeCorrection(TaskConfig):
    def init(self, name, model_dir, conf, planner, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        # default network first: the trainer trains it unless the request names another
        self.weights = {m: str(p) for m, p in registry.weights("pvc", model_dir).items()}

    def infer(self):
        spec = pvc_spec(self.weights)
        return {spec.name: TaskInfer(spec, self.model_dir)}

    def trainer(self):
        return network_trainer("pvcnet", self.weights)
