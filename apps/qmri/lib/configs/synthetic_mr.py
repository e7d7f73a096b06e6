"""Synthetic T2w MR from CT (HU); uses the scCycleGAN checkpoint trained by the synthetic_ct trainer."""

from monailabel.interfaces.config import TaskConfig

from qmri.tasks import registry
from qmri.tasks.synthesis import synthesis_specs

from ..infers.task_infer import TaskInfer


class SyntheticMR(TaskConfig):
    def init(self, name, model_dir, conf, planner, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.weights = str(registry.weights("synthetic_mr", model_dir))

    def infer(self):
        _, smr = synthesis_specs(self.weights)
        return {smr.name: TaskInfer(smr, self.model_dir)}

    def trainer(self):
        return None  # the synthetic_ct config registers the one scCycleGAN trainer for both tasks
