"""QSM from a local field map and from raw multi-echo phase; QSMnet and its trainer."""

from monailabel.interfaces.config import TaskConfig

from qmri.tasks import registry
from qmri.tasks.qsm import qsm_specs

from ..infers.task_infer import TaskInfer
from ..trainers.network import network_trainer


class Susceptibility(TaskConfig):
    def init(self, name, model_dir, conf, planner, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.weights = str(registry.weights("qsm", model_dir))

    def infer(self):
        qsm, raw = qsm_specs(self.weights)
        return {qsm.name: TaskInfer(qsm, self.model_dir), raw.name: TaskInfer(raw, self.model_dir)}

    def trainer(self):
        return network_trainer("qsmnet", self.weights)
