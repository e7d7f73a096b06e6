"""OEF and QQ parameters from mGRE magnitude + QSM: the OEF networks (best by default), the classical QQ fit, and their trainer."""

from monailabel.interfaces.config import TaskConfig

from qmri.tasks import registry
from qmri.tasks.oef import oef_spec

from ..infers.task_infer import TaskInfer
from ..trainers.network import network_trainer


class OxygenExtraction(TaskConfig):
    def init(self, name, model_dir, conf, planner, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        # the trainer trains "best" unless the request's "network" names cnn3d or lstm
        self.weights = {k: str(p) for k, p in registry.weights("oef", model_dir).items()}

    def infer(self):
        spec = oef_spec(self.weights)
        return {spec.name: TaskInfer(spec, self.model_dir)}

    def trainer(self):
        return network_trainer("oefnet", self.weights)
