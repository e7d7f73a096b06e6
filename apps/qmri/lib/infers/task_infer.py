"""One MONAI Label infer task per :class:`qmri.tasks.spec.TaskSpec` (the adapter holds no science)."""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from qmri.networks.weights import weights_identity
from qmri.tasks import registry
from qmri.tasks.spec import TaskSpec

from .quantitative import QuantitativeInferTask


class TaskInfer(QuantitativeInferTask):
    """Runs ``spec.run`` on the request's image and returns its float maps."""

    def __init__(self, spec: TaskSpec, model_dir: str | None = None):
        super().__init__(
            description=spec.description,
            inputs=spec.inputs,
            outputs=spec.outputs,
            methods=spec.methods,
            default_method=spec.default_method,
            required_sidecar=spec.required_sidecar,
            bytes_per_voxel=spec.bytes_per_voxel,
        )
        self.spec = spec
        self.model_dir = model_dir
        self.options = dict(spec.options)

    def weights_identity(self, method: str):
        return weights_identity(registry.method_weights(self.spec.name, method, self.model_dir))

    def estimate_mb(self, method: str, voxels: int) -> float:
        return self.spec.estimate_mb(method, voxels)

    def task_options(self, request: Dict[str, Any]) -> Dict[str, Any]:
        return self.spec.parse_options({k: request[k] for k in self.spec.options if k in request})

    @property
    def takes_regions(self) -> bool:
        return self.spec.regions is not None

    def regions(self, image: np.ndarray, affine: np.ndarray, sidecar: Dict[str, Any], labels: np.ndarray):
        return self.spec.regions(image, affine, sidecar, labels)

    def compute(self, image: np.ndarray, affine: np.ndarray, sidecar: Dict[str, Any], method: str, options: Dict[str, Any]):
        return self.spec.run(image, affine, sidecar, method, **options)
