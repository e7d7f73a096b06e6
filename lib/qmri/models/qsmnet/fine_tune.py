"""Fine-tuning qsmnet from the MONAI Label datastore: the pieces the app's one generic trainer
(``apps/qmri/lib/trainers/network.py``) takes from this network.

``volumes(datalist, params)`` turns datastore items (``{"image", "label"}`` paths) into training
volumes; ``fit(out, train, val, init, params)`` trains on them (``params``: the request merged over
the ``fine_tune`` section of recipe :data:`RECIPE`). No MONAI Label import here.
"""

from __future__ import annotations

from .data_datastore import volumes_from_studies
from .train import train_qsm

#: The recipe whose ``fine_tune`` section holds the defaults of ``POST /train``.
RECIPE = "qsmnet"
#: What the trainer does, shown by MONAI Label's ``/info``.
DESCRIPTION = "Train QSMnet (local field -> susceptibility) on the datastore's QSM studies (labels/final = chi in ppm)"
#: The validation metric the trainer reports (lower is better).
METRIC = "validation NRMSE"


def volumes(datalist, p):
    return volumes_from_studies([(d["image"], d["label"]) for d in datalist])


def fit(out, train, val, init, p):
    return train_qsm(out, train, val, epochs=int(p["max_epochs"]), steps_per_epoch=int(p["steps_per_epoch"]), batch_size=int(p["batch_size"]), lr=float(p["lr"]), init=init, device=p["device"], progress=False, world_size=p["world_size"])
