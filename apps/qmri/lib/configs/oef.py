"""OEF and QQ parameters from mGRE magnitude + QSM: the OEF networks (best by default), the classical QQ fit, and their trainer."""


from monailabel.interfaces.config import TaskConfig

from qmri.tasks import registry

from qmri.tasks.oef import oef_spec
from qmri.training.oef_train import TRAINER_DEFAULTS, fit_from_studies, studies_to_volumes

from ..infers.task_infer import TaskInfer
from ..trainers.network import NetworkTrainer


class OxygenExtraction(TaskConfig):
    def init(self, name, model_dir, conf, planner, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        # the trainer trains "best" unless the request's "network" names cnn3d or lstm
        self.weights = {k: str(p) for k, p in registry.weights("oef", model_dir).items()}

    def infer(self):
        spec = oef_spec(self.weights)
        return {spec.name: TaskInfer(spec, self.model_dir)}

    def trainer(self):
        return NetworkTrainer(
            "Train an OEF network (network: best, cnn3d or lstm) on the datastore's OEF studies (labels/final = S0, R2, Y, v, chi_nb)",
            self.weights,
            TRAINER_DEFAULTS,
            studies_to_volumes,
            fit_from_studies,
            "validation OEF RMSE (%-points)",
        )
