"""Synthetic CT (HU) from T2w MR; the scCycleGAN trainer (its checkpoint serves both synthesis tasks; the trainer takes qmri.models.synthnet.fine_tune)."""

from monailabel.interfaces.config import TaskConfig

from qmri.tasks import registry
from qmri.tasks.synthesis import synthesis_specs

from ..infers.task_infer import TaskInfer
from ..trainers.network import network_trainer


class SyntheticCT(TaskConfig):
    def init(self, name, model_dir, conf, planner, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.weights = str(registry.weights("synthetic_ct", model_dir))  # the checkpoint synthetic_mr uses too

    def infer(self):
        sct, _ = synthesis_specs(self.weights)
        return {sct.name: TaskInfer(sct, self.model_dir)}

    def trainer(self):
        return network_trainer("synthnet", self.weights)
