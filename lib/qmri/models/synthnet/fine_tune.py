"""Fine-tuning synthnet from the MONAI Label datastore: the pieces the app's one generic trainer
(``apps/qmri/lib/trainers/network.py``) takes from this network.

``volumes(datalist, params)`` turns datastore items (``{"image", "label"}`` paths) into training
volumes; ``fit(out, train, val, init, params)`` trains on them (``params``: the request merged over
the ``fine_tune`` section of recipe :data:`RECIPE`). No MONAI Label import here.
"""

from __future__ import annotations

import dataclasses
import logging

from .data import volumes_from_studies
from .train import SynthRecipe, train_synth

#: The recipe whose ``fine_tune`` section holds the defaults of ``POST /train``.
RECIPE = "synthnet"
#: What the trainer does, shown by MONAI Label's ``/info``.
DESCRIPTION = (
    "Train the scCycleGAN (MR <-> CT, unpaired) on the datastore's synthetic_ct (T2w MR) and synthetic_mr (CT) studies; "
    "the last study validates against its labels/final truth. Publishes the checkpoint both synthesis tasks use. "
    "backtranslation > 0 (default): generator-only steps, pseudo-target L1 x pseudo_weight + back-translation (L1, plus (1 - SSIM) x backtranslation_ssim on the CT -> MR side, plus backtranslation_hybrid x the CT -> MR inversion of a hybrid sCT: tissue-mixture soft tissue, generator bone/air/fat; hybrid_brain: its brain from the tissue-mixture sCT or drawn_mixture); 0: adversarial scCycleGAN losses. "
    "ema_decay > 0: validate and publish the exponential moving average of the weights (decay per step; off by default, since a short run's average still leans on the starting weights)."
)
#: The validation metric the trainer reports (lower is better).
METRIC = "validation score (sCT MAE / 60 HU + (1 - sMR SSIM) / 0.1)"


logger = logging.getLogger(__name__)


def volumes(datalist, p):
    return volumes_from_studies([(d["image"], d["label"]) for d in datalist])


def fit(out, train, val, init, p):
    """Unpaired pools from the training studies' images (a study's truth is never trained on); the
    validation study must carry its co-registered truth. A modality missing from the training
    studies is taken from the validation study's image (logged)."""
    mr = [v for v in train if v.source == "mr"]
    ct = [v for v in train if v.source == "ct"]
    for pool, kind in ((mr, "mr"), (ct, "ct")):
        if not pool:
            pool += [v for v in val if v.source == kind]
            logger.info("no %s study among the training studies: using the validation study's image", kind)
    if not mr or not ct:
        raise ValueError("training the scCycleGAN needs at least one T2w MR study (task synthetic_ct) and one CT study (task synthetic_mr) in the datastore")
    mr = [dataclasses.replace(v, ct=None) for v in mr]  # unpaired: drop the truth
    ct = [dataclasses.replace(v, mr=None) for v in ct]
    epochs, steps = int(p["max_epochs"]), int(p["steps_per_epoch"])
    bt = float(p["backtranslation"])
    # backtranslation > 0: every step is a generator-only step (pseudo-target L1 + back-translation,
    # the recipe of the shipped weights); 0: the scCycleGAN's adversarial losses
    stable = (
        dict(warm_only_steps=epochs * steps, warm_lr=float(p["lr"]), bt=bt, pseudo=float(p["pseudo_weight"]), bt_ssim=float(p["backtranslation_ssim"]), bt_hybrid=float(p["backtranslation_hybrid"]), hybrid_brain=str(p["hybrid_brain"]))
        if bt > 0
        else {}
    )
    recipe = SynthRecipe(mr, ct, val, crop=int(p["crop"]), lr=float(p["lr"]), val_slices=int(p["val_slices"]) if int(p["val_slices"]) > 0 else None, ema_decay=float(p["ema_decay"]), **stable)
    return train_synth(out, recipe, epochs=epochs, steps_per_epoch=steps, batch_size=int(p["batch_size"]), init=init, device=p["device"], progress=False, world_size=p["world_size"])
