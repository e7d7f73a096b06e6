"""Shared adapter for every qmri infer task: load, validate, run a qmri method, write float maps.

MONAI Label's generic writer would send multi-channel results to the DICOM-SEG writer and loses
geometry unless transforms restore it (shared/REFERENCE.md section 5), and its Slicer plugin treats
results as uint8 labels. Quantitative maps therefore go through :func:`qmri.io.maps.write_maps`:
float32 NIfTI on the input's exact grid (shape and affine) plus a JSON with names and units.

Problems with the input (wrong shape, missing sidecar, NaNs, complex data, unknown method...) are
raised by the science as ``ValueError`` with a message naming the problem and returned to the client
as HTTP 422 (an image over the server's voxel limit: 413); nothing in the datastore is written or
changed by a failed request.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from abc import abstractmethod
from typing import Any, Dict, Sequence, Tuple

import numpy as np
from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from qmri.io.maps import QuantMap, requested_names, select_maps, write_maps
from qmri.io.nifti_input import InputTooLarge, check_nifti_header, load_input_volume
from qmri.io.study import resolve_sidecar
from qmri.networks import compute

from ..server.policy import POLICY

logger = logging.getLogger(__name__)


class QuantitativeInferTask(InferTask):
    """Base class: subclasses implement :meth:`compute` with a call into ``qmri``.

    Args:
        description: one line shown in ``/info``.
        inputs: what the input image must be (shown in ``/info``), e.g. ``{"image": "4D mGRE ..."}``.
        outputs: map name -> {"units": ..., "display_range": [lo, hi]} (shown in ``/info``).
        methods: selectable methods; the request parameter ``method`` picks one.
        default_method: used when the request names none.
        required_sidecar: sidecar keys the task cannot run without.
        bytes_per_voxel: peak memory per voxel of the input grid (bytes) for the server's memory admission.
    """

    def __init__(
        self,
        description: str,
        inputs: Dict[str, str],
        outputs: Dict[str, Dict[str, Any]],
        methods: Sequence[str],
        default_method: str,
        required_sidecar: Sequence[str] = (),
        config: Dict[str, Any] | None = None,
        bytes_per_voxel: float = 0.0,
    ):
        super().__init__(type=InferType.OTHERS, labels=None, dimension=3, description=description, config={"method": list(methods), **(config or {})})
        self.inputs = dict(inputs)
        self.outputs = dict(outputs)
        self.methods = tuple(methods)
        self.default_method = default_method
        self.required_sidecar = tuple(required_sidecar)
        self.bytes_per_voxel = float(bytes_per_voxel)

    def info(self) -> Dict[str, Any]:
        i = super().info()
        weights = {m: w for m in self.methods if (w := self.weights_identity(m))}
        i.update({"inputs": self.inputs, "outputs": self.outputs, "methods": list(self.methods), "default_method": self.default_method, "weights": weights, "options": getattr(self, "options", {})})
        return i

    def weights_identity(self, method: str) -> Dict[str, str] | None:
        """``{"file", "sha256"}`` of the weights ``method`` runs with (None: a classical method)."""
        return None

    def task_options(self, request: Dict[str, Any]) -> Dict[str, Any]:
        """The request's task options, checked (ValueError naming a bad one); none by default."""
        return {}

    def is_valid(self) -> bool:
        return True

    @abstractmethod
    def compute(self, image: np.ndarray, affine: np.ndarray, sidecar: Dict[str, Any], method: str, options: Dict[str, Any]) -> list[QuantMap]:
        """Return the result maps on the input grid, in physical units (``options``: the request's
        task options, as :meth:`task_options` checked them)."""

    #: whether the task has a regional analysis: a subclass that sets it provides
    #: ``regions(image, affine, sidecar, labels) -> [dict, ...]``, and a label may be sent with the request
    takes_regions = False

    def load_labels(self, label_path: str | None, data: np.ndarray, affine: np.ndarray) -> np.ndarray | None:
        """The label map sent with the request (the server's own copy of the upload; None without
        one), checked before any work: a task with a regional analysis, a 3D map on the image's grid
        (same shape and affine)."""
        if not label_path:
            return None
        if not self.takes_regions:
            raise ValueError("this task has no regional analysis: send no label")
        labels, laff = load_input_volume(label_path, max_voxels=POLICY.max_voxels)
        if labels.ndim != 3 or labels.shape != data.shape[:3] or not np.allclose(laff, affine, atol=1e-3):
            raise ValueError(f"the label map (shape {labels.shape}) must be 3D on the grid of the image (shape {data.shape[:3]}, the same affine)")
        return labels

    def estimate_mb(self, method: str, voxels: int) -> float:
        """Peak memory (MiB) of ``method`` for ``voxels`` input voxels: the task's measured bytes per voxel."""
        return voxels * self.bytes_per_voxel / 2**20

    def check_memory(self, path: str, method: str) -> None:
        """Refuse (413) an input whose estimated peak memory exceeds the server's per-request budget,
        from its header alone (:meth:`estimate_mb` of the request's method)."""
        info = check_nifti_header(path, max_bytes=POLICY.max_image_mb * 2**20)
        need_mb = self.estimate_mb(method, math.prod(info.shape[:3]))
        if need_mb > POLICY.infer_memory_mb:
            raise InputTooLarge(
                f"this input (shape {info.shape}) needs about {need_mb / 1024:.1f} GiB to compute with method '{method}', more than the server allows one request ({POLICY.infer_memory_mb / 1024:.1f} GiB, QMRI_INFER_MEMORY_MB); crop it to the brain or use a coarser grid"
            )

    def sidecar(self, image_path: str, request: Dict[str, Any]) -> Dict[str, Any]:
        """The study's sidecar: from the request (``sidecar`` parameter, for uploads) or beside the image."""
        return resolve_sidecar(image_path, request.get("sidecar"), self.required_sidecar)

    def __call__(self, request: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
        t0 = time.time()
        try:
            method = request.get("method", self.default_method)
            if method not in self.methods:
                raise ValueError(f"unknown method '{method}'; choose from {', '.join(self.methods)}")
            requested_names(list(self.outputs), request.get("map"))  # refuse before any work
            options = self.task_options(request)
            path = request["image"]
            self.check_memory(path, method)
            data, affine = load_input_volume(path, max_voxels=POLICY.max_voxels)
            meta = self.sidecar(path, request)
            labels = self.load_labels(request.get("label"), data, affine)
            maps = select_maps(self.compute(data, affine, meta, method, options), request.get("map"))
            regions = None if labels is None else self.regions(data, affine, meta, labels)
            fd, out = tempfile.mkstemp(prefix="qmri_", suffix=".nii.gz")
            os.close(fd)  # MONAI Label deletes the result file once it has been sent
            primary, result = write_maps(maps, affine, data.shape[:3], out)
            if regions is not None:
                result["regions"] = regions
            for entry in result["maps"]:  # how to show each map, as /info announces it (qmri.io.display)
                if "display" in self.outputs.get(entry["name"], {}):
                    entry["display"] = self.outputs[entry["name"]]["display"]
        except InputTooLarge as e:
            logger.warning("rejected request: %s", e)
            raise HTTPException(status_code=413, detail=str(e)) from None
        except ValueError as e:  # includes StudyError; the message names the problem
            logger.warning("rejected request: %s", e)
            raise HTTPException(status_code=422, detail=str(e)) from None
        result.update({"method": method, "weights": self.weights_identity(method), "options": options, "device": str(compute.device()), "latency_s": round(time.time() - t0, 3)})
        logger.info("%s finished in %.3f s", method, result["latency_s"])
        return str(primary), result
