"""Partial-volume correction of amyloid PET."""

from monailabel.interfaces.config import TaskConfig

from qmri.tasks.pvc import PVC

from ..infers.task_infer import TaskInfer


class PartialVolumeCorrection(TaskConfig):
    def infer(self):
        return {PVC.name: TaskInfer(PVC)}

    def trainer(self):
        return None
