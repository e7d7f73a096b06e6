"""Fine-tuning oefnet from the MONAI Label datastore: the pieces the app's one generic trainer
(``apps/qmri/lib/trainers/network.py``) takes from this network.

``volumes(datalist, params)`` turns datastore items (``{"image", "label"}`` paths) into training
volumes; ``fit(out, train, val, init, params)`` trains on them (``params``: the request merged over
the ``fine_tune`` section of recipe :data:`RECIPE`). No MONAI Label import here. The request's
``network`` picks best, cnn3d or lstm.
"""

from __future__ import annotations

from ...networks.checkpoint import load_checkpoint
from .net import checkpoint_arch_kwargs
from ...training.loop import train
from .data import OEFVolume, volumes_from_studies
from .train import DEFAULTS, NETWORK_ARCH, VOXEL_BATCHED, OEFRecipe

#: The recipe whose ``fine_tune`` section holds the defaults of ``POST /train``.
RECIPE = "oef_best"
#: What the trainer does, shown by MONAI Label's ``/info``.
DESCRIPTION = "Train an OEF network (network: best, cnn3d or lstm) on the datastore's OEF studies (labels/final = S0, R2, Y, v, chi_nb)"
#: The validation metric the trainer reports (lower is better).
METRIC = "validation OEF RMSE (%-points)"


def volumes(datalist: list[dict], params: dict) -> list[OEFVolume]:
    """Datastore items ({"image", "label"}) -> OEF study volumes (other tasks' studies skipped)."""
    return volumes_from_studies([(d["image"], d["label"]) for d in datalist if d.get("label")])


def fit(out_path, train_vols: list[OEFVolume], val_vols: list[OEFVolume], init, params: dict) -> dict:
    """Train the request's ``network`` (best, cnn3d or lstm) on study volumes; the architecture of
    the weights being fine-tuned (``init``) is kept, else best = the set-context network."""
    model = str(params.get("network", "best"))
    if model not in NETWORK_ARCH:
        raise ValueError(f"unknown OEF network '{model}'; choose from {', '.join(NETWORK_ARCH)}")
    init_cfg = load_checkpoint(init)[1] if init else None
    arch = init_cfg["arch"] if init_cfg else NETWORK_ARCH[model]
    patch = int(params.get("patch", 48)) if arch == "unet" else DEFAULTS[arch]["patch"]
    kw = checkpoint_arch_kwargs(init_cfg) if init_cfg else None  # the fine-tuned weights' own features
    recipe = OEFRecipe(arch, train_vols, val_vols, model=model, patch=patch, data_note="datastore studies " + ", ".join(v.name for v in train_vols), arch_kwargs=kw)
    batch = int(params.get("voxels", DEFAULTS[arch]["batch_size"])) if arch in VOXEL_BATCHED else int(params["batch_size"])
    res = train(
        recipe, out_path, epochs=int(params["max_epochs"]), steps_per_epoch=int(params["steps_per_epoch"]), batch_size=batch, lr=float(params["lr"]), init=init, device=params.get("device"), progress=False, world_size=int(params.get("world_size", 1))
    )
    res["metric"] = OEFRecipe.metric
    return res
