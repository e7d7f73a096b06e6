"""``qmri train qsm``: train QSMnet on phantoms, write the weights, a model card and a training curve."""

from __future__ import annotations

import json
import platform
from pathlib import Path

from ...cli_args import add_training_arguments, existing_file, positive_float, positive_int, unit_fraction
from .. import shipped
from ...training import model_card

# torch and the trainer are imported by train_command only: ``qmri``'s parser (which calls
# add_arguments) must build without them

TRAIN_SEED0 = 20000  # training phantoms: seeds 20000.. ; validation 21000.. ; benchmarks use 5000..
VAL_SEED0 = 21000
RANDOM_SEED0 = 22000  # base brains of the domain-randomised examples: 22000.. training, 23000.. validation
RANDOM_VAL_SEED0 = 23000


#: The help line of its ``qmri train`` task (the task name is ``MODELS[...].train_task``).
HELP = "QSMnet (local field -> chi)"


def default_out(args=None) -> Path:
    """The shipped weights file, in the app's model folder (:mod:`qmri.paths`)."""
    return shipped("qsmnet")


def add_arguments(p):
    """The options of ``qmri train qsm`` with this task's defaults."""
    add_training_arguments(
        p, f"weights file (default {default_out()})", 8, 2, 20, 40, 4, train_help="phantom brains (seeds 20000..; with --randomised also base brains 22000..)", val_help="validation brains (seeds 21000..; with --randomised also 23000..)"
    )
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate (QSMnet's 1e-3), cosine-decayed")
    p.add_argument("--resolution", type=positive_float, default=2.0, help="phantom voxel size (mm)")
    p.add_argument("--max-minutes", type=positive_float, default=None, help="stop after the epoch that passes this wall time")
    p.add_argument("--world-size", type=positive_int, default=1, help="data-parallel processes (GPUs, or gloo CPU processes)")
    p.add_argument("--init", type=existing_file, default=None, help="weights to fine-tune from (same architecture)")
    p.add_argument("--randomised", type=unit_fraction, default=0.0, help="fraction of each batch drawn from domain-randomised examples (random tissue values, shapes, textures, voxel sizes 0.6-2 mm, tilt up to 45 deg, noise, mask errors; default 0)")
    return p


def train_command(args) -> dict:
    import torch

    from ...training.loop import training_command
    from .train import save_training_curve, train_qsm

    out = Path(args.out) if args.out else default_out()
    train = list(range(TRAIN_SEED0, TRAIN_SEED0 + args.train_subjects))
    val = list(range(VAL_SEED0, VAL_SEED0 + args.val_subjects))
    frac = getattr(args, "randomised", 0.0) or 0.0
    random_train = list(range(RANDOM_SEED0, RANDOM_SEED0 + args.train_subjects)) if frac > 0 else []
    random_val = list(range(RANDOM_VAL_SEED0, RANDOM_VAL_SEED0 + args.val_subjects)) if frac > 0 else []
    res = train_qsm(
        out,
        train,
        val,
        resolution_mm=getattr(args, "resolution", 2.0),
        randomised=frac,
        random_train=random_train,
        random_val=random_val,
        init=getattr(args, "init", None),
        max_minutes=getattr(args, "max_minutes", None),
        epochs=args.epochs,
        steps_per_epoch=args.steps,
        batch_size=args.batch,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        world_size=getattr(args, "world_size", 1),
    )
    save_training_curve(res["history"], out.parent / "training_curve.png")
    (out.parent / "training_history.json").write_text(json.dumps(res, indent=2))
    device = res["device"]
    if device.startswith("cuda"):
        device += f" ({torch.cuda.get_device_name(0)})"
    lr = args.lr
    cfg = res["config"]
    n_params = sum(p.numel() for p in torch.load(out, weights_only=True)["state_dict"].values() if hasattr(p, "numel"))
    randomised = (
        f"; a fraction {frac:g} of every batch domain-randomised (qmri.models.qsmnet.data_randomised: random tissue values, textures, geometric sources, "
        f"voxel sizes 0.6-2 mm, head tilt up to 45 deg, noise, mask errors, background residuals) from base brains {random_train[0]}..{random_train[-1]}, "
        f"validated also on fixed randomised patches of {random_val[0]}..{random_val[-1]}"
        if frac > 0
        else ""
    )
    fields = {
        "Network": f"MONAI BasicUNet (QSMnet design: 2 convs per level, BN, leaky ReLU 0.1, 4 max-pools, 4 deconvs, 19 convs), features {cfg['features']}, {n_params / 1e6:.2f} M parameters",
        "Input / output": f"local field (ppm) x {cfg['field_scale']} inside the brain mask -> susceptibility (ppm) x {cfg['chi_scale']}; B0 along array z (other directions are rotated to z at inference); anisotropic voxels are resampled to isotropic",
        "Data": f"phantom brains from MNI152 (qmri.anatomy) at {cfg['voxel_size_mm']} mm, every training subject with a haemorrhage (+0.6..+1.4 ppm) and a calcification (-1.4..-0.6 ppm); training seeds {train[0]}..{train[-1]} ({len(train)} subjects), validation seeds {val[0]}..{val[-1]} ({len(val)} subjects), never trained on; benchmark seeds 5200.. (and the out-of-distribution 5250..) are disjoint from both{randomised}",
        "Augmentation": "each epoch every brain rotated by a random angle in [-30, 30] deg about x or y and re-convolved with the dipole (B0 along z), 0.001 ppm field noise",
        "Training": f"{'fine-tuned from `' + str(args.init) + '`; ' if getattr(args, 'init', None) else ''}{len(res['history'])} epochs (of {args.epochs} planned) x {args.steps} steps, batch {args.batch}, patches {cfg['patch']}^3, Adam lr {lr:g} cosine-decayed, loss L1 + 0.5 model (dipole) + 0.1 gradient, seed {args.seed}",
        "Device": f"{device}; {platform.processor() or platform.machine()}; training took {res['seconds'] / 60:.1f} min",
        "Best epoch": f"{res['best'].get('epoch')} with validation NRMSE {res['best'].get('val_nrmse', float('nan')):.3f} (whole-brain, demeaned, vs true chi, network output alone{'; mean of the brains and the randomised patches' if frac > 0 else ''})",
        "Served as": "method `qsmnet` = this network followed by a support-constrained data-consistency step (`qmri.classical.qsm.masked_cg` started from the network output, iteration count set from the field's noise); `qsmnet_direct` is the network output alone",
        "Files": "curve `training_curve.png`, per-epoch history `training_history.json`; benchmarks: `qmri bench qsm` (`bench-results/bench_qsm.md`, `bench_qsm_ood.md`)",
    }
    card = model_card.record(out, "QSMnet: susceptibility (ppm) from a local field map", fields, res, command=training_command("qsm"))
    print(card.read_text())
    return res
