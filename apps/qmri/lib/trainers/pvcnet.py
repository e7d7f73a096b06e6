"""MONAI Label trainer of the PET PVC networks: the generic :class:`NetworkTrainer` over ``qmri.training.pvc_train``.

Targets: ``"rbv"`` (default, as the shipped weights) computed from each 4D study's GM/WM/CSF/other
channels and its sidecar FWHM, or ``"activity"``: the study's ``labels/final`` image. The request's
``network`` picks the weights to train: ``pvcnet_fwhm`` (FWHM-conditioned) or ``pvcnet``.
"""

from __future__ import annotations

from pathlib import Path

from qmri.training import replay
from qmri.training.pvc_data import volumes_from_studies
from qmri.training.pvc_train import train_pvc

from .network import NetworkTrainer


def _volumes(datalist, p):
    return volumes_from_studies([(d["image"], d["label"]) for d in datalist], target=p["target"])


def _fit(out, train, val, init, p):
    kwargs = {}
    if init is not None:  # keep the architecture of the weights being fine-tuned
        from qmri.networks.pvc_predict import load_pvcnet

        _, cfg = load_pvcnet(init)
        kwargs = {"channels": cfg["channels"], "strides": cfg["strides"], "condition_fwhm": cfg.get("in_channels", 1) == 2, "residual": cfg.get("residual", "additive")}
    else:
        kwargs = {"condition_fwhm": p["network"] == "pvcnet_fwhm"}
    return train_pvc(
        out,
        train,
        val,
        epochs=int(p["max_epochs"]),
        steps_per_epoch=int(p["steps_per_epoch"]),
        batch_size=int(p["batch_size"]),
        patch=int(p["patch"]),
        lr=float(p["lr"]),
        target=p["target"],
        init=init,
        device=p["device"],
        progress=False,
        world_size=p["world_size"],
        **kwargs,
    )


def pvcnet_trainer(weights: dict[str, str | Path]) -> NetworkTrainer:
    return NetworkTrainer(
        "Train the PET PVC network (PET -> partial-volume corrected PET) on the datastore's PVC studies (target: RBV from the tissue channels, or labels/final)",
        weights,
        replay.fine_tune("pvcnet"),
        _volumes,
        _fit,
        "validation RMSE ratio network / input",
    )
