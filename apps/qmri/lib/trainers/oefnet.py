"""MONAI Label trainer of the OEF networks: the generic :class:`NetworkTrainer` over ``qmri.training.oef_train``
(the request's ``network`` picks best, cnn3d or lstm)."""

from __future__ import annotations

from qmri.networks.checkpoint import load_checkpoint
from qmri.networks.oef_nets import checkpoint_arch_kwargs
from qmri.training import replay
from qmri.training.loop import train
from qmri.training.oef_data import OEFVolume, volumes_from_studies
from qmri.training.oef_train import DEFAULTS, NETWORK_ARCH, VOXEL_BATCHED, OEFRecipe

from .network import NetworkTrainer


def studies_to_volumes(datalist: list[dict], params: dict) -> list[OEFVolume]:
    """Datastore items ({"image", "label"}) -> OEF study volumes (other tasks' studies skipped)."""
    return volumes_from_studies([(d["image"], d["label"]) for d in datalist if d.get("label")])


def fit_from_studies(out_path, train_vols: list[OEFVolume], val_vols: list[OEFVolume], init, params: dict) -> dict:
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


def oefnet_trainer(weights: dict) -> NetworkTrainer:
    return NetworkTrainer(
        "Train an OEF network (network: best, cnn3d or lstm) on the datastore's OEF studies (labels/final = S0, R2, Y, v, chi_nb)",
        weights,
        replay.fine_tune("oef_best"),
        studies_to_volumes,
        fit_from_studies,
        "validation OEF RMSE (%-points)",
    )
