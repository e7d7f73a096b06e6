"""MONAI Label trainer of QSMnet: the generic :class:`NetworkTrainer` over ``qmri.training.qsm_train``."""

from __future__ import annotations

from pathlib import Path

from qmri.training import replay
from qmri.training.qsm_datastore import volumes_from_studies
from qmri.training.qsm_train import train_qsm

from .network import NetworkTrainer


def _volumes(datalist, p):
    return volumes_from_studies([(d["image"], d["label"]) for d in datalist])


def _fit(out, train, val, init, p):
    return train_qsm(out, train, val, epochs=int(p["max_epochs"]), steps_per_epoch=int(p["steps_per_epoch"]), batch_size=int(p["batch_size"]), lr=float(p["lr"]), init=init, device=p["device"], progress=False, world_size=p["world_size"])


def qsmnet_trainer(weights: str | Path) -> NetworkTrainer:
    return NetworkTrainer(
        "Train QSMnet (local field -> susceptibility) on the datastore's QSM studies (labels/final = chi in ppm)",
        weights,
        replay.fine_tune("qsmnet"),
        _volumes,
        _fit,
        "validation NRMSE",
    )
