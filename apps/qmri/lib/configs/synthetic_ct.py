"""Synthetic CT (HU) from T2w MR."""

from monailabel.interfaces.config import TaskConfig

from qmri.tasks.synthesis import SYNTHETIC_CT

from ..infers.task_infer import TaskInfer


class SyntheticCT(TaskConfig):
    def infer(self):
        return {SYNTHETIC_CT.name: TaskInfer(SYNTHETIC_CT)}

    def trainer(self):
        return None
