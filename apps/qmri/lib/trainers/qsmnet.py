"""MONAI Label trainer of QSMnet: fine-tunes (or trains) on the datastore's QSM studies and publishes.

Adapter over :func:`qmri.training.qsm_train.train_qsm`. The new weights replace the served file
atomically (the previous model is kept as ``*_previous.pt``); the infer task reloads weights when
the file changes, so the next request uses the new model without a restart.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from qmri.training.qsm_datastore import volumes_from_studies
from qmri.training.qsm_train import train_qsm

logger = logging.getLogger(__name__)


class QSMNetTrainer(TrainTask):
    def __init__(self, weights: str | Path):
        super().__init__("Train QSMnet (local field -> susceptibility) on the datastore's QSM studies (labels/final = chi in ppm)")
        self.weights = Path(weights)
        self.stats_path = self.weights.with_name("train_stats.json")

    def config(self) -> Dict[str, Any]:
        return {"max_epochs": 5, "steps_per_epoch": 20, "batch_size": 4, "lr": 1e-4, "from_scratch": False, "device": "cuda if available", "multi_gpu": False, "gpus": "all"}

    @staticmethod
    def world_size(p: Dict[str, Any]) -> int:
        """MONAI Label's multi-GPU option: ``multi_gpu`` with ``gpus`` "all" or a list like "0,1"."""
        if str(p.get("multi_gpu", False)).lower() != "true":
            return 1
        import torch

        n = torch.cuda.device_count() if p.get("gpus", "all") == "all" else len(str(p["gpus"]).split(","))
        return n if n > 1 else 1

    def stats(self) -> Dict[str, Any]:
        return json.loads(self.stats_path.read_text()) if self.stats_path.exists() else {}

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any]:
        p = {**self.config(), **request}
        vols = volumes_from_studies([(d["image"], d["label"]) for d in datastore.datalist()])
        if not vols:
            raise ValueError("no QSM studies with labels/final targets in the datastore (sidecar task 'qsm')")
        train, val = (vols[:-1], vols[-1:]) if len(vols) > 1 else (vols, vols)
        init = None if str(p["from_scratch"]).lower() == "true" or not self.weights.exists() else self.weights
        device = None if p["device"] == "cuda if available" else p["device"]
        logger.info("QSMnet training on %d studies (%d validation), init %s", len(train), len(val), init)
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "qsmnet.pt"
            res = train_qsm(out, train, val, epochs=int(p["max_epochs"]), steps_per_epoch=int(p["steps_per_epoch"]), batch_size=int(p["batch_size"]), lr=float(p["lr"]), init=init, device=device, progress=False, world_size=self.world_size(p))
            self.weights.parent.mkdir(parents=True, exist_ok=True)
            if self.weights.exists():
                shutil.copy2(self.weights, self.weights.with_name(self.weights.stem + "_previous.pt"))
            staged = self.weights.with_suffix(".staged")
            shutil.copy2(out, staged)
            os.replace(staged, self.weights)  # publish atomically
        stats = {"best_metric": res["best"].get("val_nrmse"), "best_metric_name": "validation NRMSE", "epochs": int(p["max_epochs"]), "train_studies": [v.subject for v in train], "val_studies": [v.subject for v in val], "total_time": round(time.time() - t0, 1), "published": str(self.weights), "history": res["history"], "date": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.stats_path.write_text(json.dumps(stats, indent=2))
        return stats
