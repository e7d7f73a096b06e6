"""OEF and QQ parameters from mGRE magnitude + QSM."""

from monailabel.interfaces.config import TaskConfig

from qmri.tasks.oef import OEF

from ..infers.task_infer import TaskInfer


class OxygenExtraction(TaskConfig):
    def infer(self):
        return {OEF.name: TaskInfer(OEF)}

    def trainer(self):
        return None
