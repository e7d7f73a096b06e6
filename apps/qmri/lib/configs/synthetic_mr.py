"""Synthetic T2w MR from CT (HU)."""

from monailabel.interfaces.config import TaskConfig

from qmri.tasks.synthesis import SYNTHETIC_MR

from ..infers.task_infer import TaskInfer


class SyntheticMR(TaskConfig):
    def infer(self):
        return {SYNTHETIC_MR.name: TaskInfer(SYNTHETIC_MR)}

    def trainer(self):
        return None
