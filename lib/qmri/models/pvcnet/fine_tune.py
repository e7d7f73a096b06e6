"""Fine-tuning pvcnet from the MONAI Label datastore: the pieces the app's one generic trainer
(``apps/qmri/lib/trainers/network.py``) takes from this network.

``volumes(datalist, params)`` turns datastore items (``{"image", "label"}`` paths) into training
volumes; ``fit(out, train, val, init, params)`` trains on them (``params``: the request merged over
the ``fine_tune`` section of recipe :data:`RECIPE`). No MONAI Label import here.

Targets: ``"rbv"`` (default, as the shipped weights) computed from each 4D study's GM/WM/CSF/other
channels and its sidecar FWHM, or ``"activity"``: the study's ``labels/final`` image. The request's
``network`` picks the weights to train: ``pvcnet_fwhm`` (FWHM-conditioned) or ``pvcnet``.
"""

from __future__ import annotations

from .data import volumes_from_studies
from .train import train_pvc

#: The recipe whose ``fine_tune`` section holds the defaults of ``POST /train``.
RECIPE = "pvcnet"
#: What the trainer does, shown by MONAI Label's ``/info``.
DESCRIPTION = "Train the PET PVC network (PET -> partial-volume corrected PET) on the datastore's PVC studies (target: RBV from the tissue channels, or labels/final)"
#: The validation metric the trainer reports (lower is better).
METRIC = "validation RMSE ratio network / input"


def volumes(datalist, p):
    return volumes_from_studies([(d["image"], d["label"]) for d in datalist], target=p["target"])


def fit(out, train, val, init, p):
    kwargs = {}
    if init is not None:  # keep the architecture of the weights being fine-tuned
        from .predict import load_pvcnet

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
