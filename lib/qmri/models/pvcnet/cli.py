"""``qmri train pvc``: train the PET PVC network on phantoms, write weights, a model card and a curve.

:func:`add_arguments` declares the options of ``qmri train pvc`` with this task's defaults;
:func:`train_command` runs them.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from ...cli_args import add_training_arguments, existing_file, int_list, positive_float, positive_int, unit_fraction
from .. import shipped
from ...training import model_card

# torch, the network and the trainer are imported by train_command only: ``qmri``'s parser
# (which calls add_arguments) must build without them
#: = qmri.models.pvcnet.net.DEFAULT_CHANNELS and RESIDUALS (tests/test_cli_validation.py checks they agree)
DEFAULT_CHANNELS = (16, 32, 64, 128)
RESIDUALS = ("additive", "multiplicative")

TRAIN_SEED0 = 30000  # training phantoms: seeds 30000.. ; validation 31000.. ; benchmark 5400..
VAL_SEED0 = 31000


#: The help line of its ``qmri train`` task (the task name is ``MODELS[...].train_task``).
HELP = "the PET-only PVC network (--condition-fwhm: pvcnet_fwhm)"


def default_out(args=None) -> Path:
    """The shipped weights file, in the app's model folder (:mod:`qmri.paths`): ``pvcnet_fwhm``'s
    for an FWHM-conditioned network (``args.condition_fwhm``: two input channels), else ``pvcnet``'s."""
    return shipped("pvcnet_fwhm" if getattr(args, "condition_fwhm", False) else "pvcnet")


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_training_arguments(
        p, f"weights file (default {default_out()}, with --condition-fwhm {default_out(argparse.Namespace(condition_fwhm=True))})", 6, 2, 20, 50, 2, train_help="phantom heads (seeds 30000..)", val_help="validation heads (seeds 31000..)"
    )
    p.add_argument("--patch", type=positive_int, default=64, help="patch edge in voxels (64 at 2 mm = the seed's 128 mm field of view)")
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--target", choices=("rbv", "activity"), default="rbv", help="RBV-corrected PET (default) or the true activity")
    p.add_argument("--condition-fwhm", action="store_true", help="give the network the sidecar's PSF FWHM as a second input channel")
    p.add_argument("--init", type=existing_file, default=None, help="weights to fine-tune from (same architecture)")
    p.add_argument("--residual", choices=RESIDUALS, default="additive", help="output = input + gain x U-Net (default) or input x (1 + gain x U-Net)")
    p.add_argument("--resolution", type=positive_float, default=2.0, help="phantom voxel size (mm)")
    p.add_argument("--max-minutes", type=positive_float, default=None, help="stop after the epoch that passes this wall time")
    p.add_argument("--world-size", type=positive_int, default=1, help="data-parallel processes (GPUs, or gloo CPU processes)")
    p.add_argument("--channels", type=int_list, default=",".join(map(str, DEFAULT_CHANNELS)), help="U-Net channels per level, comma-separated")
    p.add_argument("--workers", type=positive_int, default=1, help="processes generating the phantoms")
    p.add_argument(
        "--randomised",
        type=unit_fraction,
        default=0.0,
        help="fraction of the phantom examples drawn domain-randomised (random uptake per tissue, amyloid patterns, textures, shapes, PSF 4-9 mm anisotropic, noise 2-10 %% correlated; default 0)",
    )
    return p


def _init_summary(path) -> dict:
    """What the starting weights were: their epoch and validation ratio from the checkpoint's config."""
    from ...training.loop import load_checkpoint

    cfg = load_checkpoint(path)[1]
    return {"epoch": cfg.get("epoch"), "val_ratio": cfg.get("val_ratio"), "train_subjects": cfg.get("train_subjects")}


def train_command(args) -> dict:
    import torch

    from ...training.loop import training_command
    from .train import RANDOM_VAL_EXAMPLES, save_training_curve, train_pvc

    out = Path(args.out) if args.out else default_out(args)
    train = list(range(TRAIN_SEED0, TRAIN_SEED0 + args.train_subjects))
    val = list(range(VAL_SEED0, VAL_SEED0 + args.val_subjects))
    # options the shared ``qmri train`` parser may lack fall back to this module's defaults
    for k, v in vars(add_arguments(argparse.ArgumentParser()).parse_args([])).items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    res = train_pvc(
        out,
        train,
        val,
        resolution_mm=args.resolution,
        epochs=args.epochs,
        steps_per_epoch=args.steps,
        batch_size=args.batch,
        patch=args.patch,
        lr=args.lr,
        target=args.target,
        condition_fwhm=args.condition_fwhm,
        init=args.init,
        seed=args.seed,
        device=args.device,
        max_minutes=args.max_minutes,
        world_size=args.world_size,
        channels=(ch := tuple(int(c) for c in str(args.channels).split(","))),
        strides=(2,) * (len(ch) - 1),
        workers=args.workers,
        residual=args.residual,
        randomised=args.randomised,
    )
    save_training_curve(res["history"], out.parent / "training_curve.png")
    (out.parent / "training_history.json").write_text(json.dumps(res, indent=2))
    device = res["device"]
    if device.startswith("cuda"):
        device += f" ({torch.cuda.get_device_name(0)})"
    cfg, best = res["config"], res["best"]
    n_params = sum(p.numel() for p in torch.load(out, weights_only=True)["state_dict"].values() if hasattr(p, "numel") and p.is_floating_point())
    command = training_command("pvc")
    frac = float(cfg.get("randomised_fraction") or 0.0)
    randomised = (
        f"; a fraction {frac:g} of the examples domain-randomised on the same anatomy (qmri.models.pvcnet.data_randomised: random uptake per tissue, amyloid "
        "patterns, textures, shapes, PSF FWHM 4-9 mm with axial 0.9-1.25x, noise 2-10 % correlated); the kept epoch's val_ratio is the mean of the phantom "
        f"and {RANDOM_VAL_EXAMPLES} fixed randomised examples per validation subject"
        if frac > 0
        else ""
    )
    fields = {
        "Network": f"""MONAI UNet with residual units (num_res_units 2, instance norm), channels {cfg["channels"]}, strides {cfg["strides"]}, plus a global {cfg.get("residual", "additive")} residual (output = {"input x (1 + g x U-Net)" if cfg.get("residual") == "multiplicative" else "input + g x U-Net"}, g a learned gain starting at 0); {n_params / 1e6:.2f} M parameters (seed 002's patch-based 3D ResUNet{", scaled for a CPU" if cfg["channels"][0] < 32 else ""})""",
        "Input / output": f"""PET only (no segmentation){", plus the PSF FWHM (mm) / 8 as a constant second channel" if cfg["fwhm_conditioned"] else ", no FWHM (one network must serve every scanner blur)"}, per-subject min-max scaled (minimum -> 0, 99th percentile -> 1, values above clipped); the output is mapped back with the same (min, p99), so it is in the input's units (SUV)""",
        "Target": f"""{cfg["target"]} ({"RBV-corrected PET with the true PSF and the phantom GM/WM/CSF/other probabilities" if cfg["target"] == "rbv" else "true phantom activity"})""",
        "Data": f"""phantom heads from MNI152 (qmri.anatomy) at {cfg["voxel_size_mm"]} mm, cropped to brain + 10 mm; each epoch every subject gets a new amyloid status (positive/negative), PSF FWHM uniform in 5-8 mm (one network for every scanner), 5 % Poisson-like noise; training seeds {train[0]}..{train[-1]} ({len(train)} subjects), validation seeds {val[0]}..{val[-1]} ({len(val)} subjects, FWHM 5, 6.5, 8 mm), never trained on; benchmark seeds 5400.. (and the out-of-distribution 5450..) are disjoint from both{randomised}""",
        "Training": f"""{f"fine-tuned from `{args.init}` ({json.dumps(_init_summary(args.init))}); " if args.init else ""}{len(res["history"])} epochs (of {args.epochs} planned) x {args.steps} steps, batch {args.batch}, patches {cfg["patch"]}^3 ({cfg["patch"] * cfg["voxel_size_mm"]:g} mm field of view; the seed's 128^3 at 1 mm is 128 mm) with random flips, MSE loss, Adam lr {args.lr:g} cosine-decayed, seed {args.seed}""",
        "Device": f"""{device}; {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; training took {res["seconds"] / 60:.1f} min (including {len(train) + len(val)} phantom generations)""",
        "Best epoch": f"""{best.get("epoch")}: validation RMSE {best.get("val_rmse", float("nan")):.4f} SUV vs {best.get("val_rmse_input", float("nan")):.4f} SUV for the uncorrected input (ratio {best.get("val_ratio", float("nan")):.3f}), brain voxels, against the {cfg["target"]} target""",
        "Files": """Curve: `training_curve.png`; per-epoch history: `training_history.json`. Benchmark against the input, the sharpen filter, IY, RBV and MG on held-out phantoms: `qmri bench pvc`.""",
    }
    card = model_card.record(out, f"""PET partial-volume-correction network (`{out.name}`)""", fields, res, command=command)
    print(card.read_text())
    return res
