"""QSM from a local field map and from raw multi-echo phase."""

from monailabel.interfaces.config import TaskConfig

from qmri.tasks.qsm import QSM, QSM_RAW

from ..infers.task_infer import TaskInfer


class Susceptibility(TaskConfig):
    def infer(self):
        return {QSM.name: TaskInfer(QSM), QSM_RAW.name: TaskInfer(QSM_RAW)}

    def trainer(self):
        return None
