"""``qmri train synth``: train the scCycleGAN (MR <-> CT) on unpaired phantom slices.

Writes the weights (both generators and both discriminators in one checkpoint), the model card
(metadata.json, README.md rendered from it: :mod:`qmri.training.model_card`), training_curve.png and
training_history.json beside them.
:func:`add_arguments` declares the options (``add_missing_arguments`` adds only those the shared
``qmri train`` parser lacks); :func:`train_command` runs them.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from ...cli_args import add_training_arguments, existing_file, json_weights, nonneg_float, nonneg_int, positive_float, positive_int, unit_interval
from .. import shipped

# torch, the data and the trainer are imported by train_command only: ``qmri``'s parser
# (which calls add_missing_arguments) must build without them
#: = qmri.models.synthnet.train.HYBRID_BRAIN (tests/test_cli_validation.py checks they agree)
HYBRID_BRAIN = ("tissue_mixture", "drawn_mixture")
#: = qmri.metrics.synthrad.SSIM_WIN: the validation SSIM needs this many slices
SSIM_WIN = 7


def val_slices(s: str) -> int:
    """``--val-slices``: 0 (whole volumes) or at least :data:`SSIM_WIN` slices (the SSIM window)."""
    v = nonneg_int(s)
    if 0 < v < SSIM_WIN:
        raise argparse.ArgumentTypeError(f"must be 0 (all slices) or at least {SSIM_WIN} (the SSIM window), got {s}")
    return v


#: The help line of its ``qmri train`` task (the task name is ``MODELS[...].train_task``).
HELP = "the scCycleGAN generators (T2w MR <-> CT)"


def default_out(args=None) -> Path:
    """The shipped weights file, in the app's model folder (:mod:`qmri.paths`)."""
    return shipped("synthnet")


#: How the model card names each classical pseudo-target of the training MRs.
PSEUDO_NAMES = {
    "tissue_mixture": "two-compartment tissue mixtures, qmri.classical.tissue_mixture_ct",
    "bulk_density": "four-class bulk density, qmri.classical.bulk_density",
}


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_training_arguments(p, f"weights file (default {default_out()})", 4, 1, 30, 100, 4, train_help="phantoms per modality: MR from seeds 50000.., CT from 50500.. (different subjects)", val_help="co-registered validation phantoms (seeds 51000..)")
    add_missing_arguments(p)
    return p


def add_missing_arguments(p: argparse.ArgumentParser) -> None:
    """Synthesis options, each added only if the parser lacks that option name (shared parser)."""
    opts = [
        ("--lr", dict(type=positive_float, default=None, help="Adam learning rate (synth default 2e-4, CycleGAN)")),
        ("--crop", dict(type=positive_int, default=64, help="synth: square training crop of the axial slices (voxels)")),
        ("--resolution", dict(type=positive_float, default=2.0, help="phantom voxel size (mm)")),
        ("--max-minutes", dict(type=positive_float, default=None, help="stop after the epoch that passes this wall time")),
        ("--world-size", dict(type=positive_int, default=1, help="data-parallel processes (GPUs, or gloo CPU processes)")),
        ("--loss-weights", dict(type=json_weights, default=None, help='synth: JSON loss weights, e.g. \'{"pix": 100, "str": 10}\' (keys adv, cyc, pix, idt, str)')),
        ("--val-slices", dict(type=val_slices, default=32, help="synth: validate on this many contiguous central axial slices per subject (0: all)")),
        ("--warm-steps", dict(type=nonneg_int, default=0, help="synth: steps of warm start on the bulk-density translations of the training images (weight ramps to 0)")),
        ("--warm-weight", dict(type=nonneg_float, default=10.0, help="synth: initial weight of the warm-start L1")),
        (
            "--pretrain-steps",
            dict(
                type=nonneg_int,
                default=100000,
                help="synth: first steps train only the generators (pseudo-target L1 and the back-translation losses, no GAN); default 100000: every step, the stable recipe of the shipped weights; 0: the adversarial scCycleGAN from the start",
            ),
        ),
        ("--pretrain-lr", dict(type=positive_float, default=3e-4, help="synth: Adam learning rate of the pretraining steps")),
        ("--pseudo-sct", dict(default="tissue_mixture", choices=["tissue_mixture", "bulk_density"], help="synth: classical sCT of the training MRs used as pretraining / warm-start pseudo-target")),
        ("--backtranslation", dict(type=nonneg_float, default=1.0, help="synth: weight of the back-translation L1 in the pretraining steps (0: off)")),
        ("--backtranslation-ssim", dict(type=nonneg_float, default=1.5, help="synth: weight of 1 - SSIM added to the CT -> MR back-translation (needs --backtranslation > 0)")),
        (
            "--backtranslation-hybrid",
            dict(
                type=nonneg_float,
                default=3.0,
                help="synth: weight of the CT -> MR generator's inversion of a hybrid sCT of each training MR (tissue-mixture soft tissue, generator bone/air/fat, plus CT noise; L1 + 1 - SSIM x --backtranslation-ssim; needs --backtranslation > 0)",
            ),
        ),
        (
            "--hybrid-brain",
            dict(
                choices=HYBRID_BRAIN,
                default="drawn_mixture",
                help="synth: inside-the-skull soft tissue of the --backtranslation-hybrid sCT: the tissue-mixture sCT as is, or drawn_mixture (venous blood-WM-GM-CSF mixtures along the T2w axis with per-image CT numbers drawn from the phantom's between-subject distributions)",
            ),
        ),
        ("--ema-decay", dict(type=unit_interval, default=0.0, help="synth: validate and save an exponential moving average of the weights with this decay per step (0: off; e.g. 0.995 averages over ~200 steps)")),
        ("--pseudo-weight", dict(type=nonneg_float, default=0.05, help="synth: weight of the pseudo-target L1 in the pretraining steps")),
        ("--init", dict(type=existing_file, default=None, help="synth: checkpoint to start from (same architecture)")),
        ("--cache-dir", dict(default=None, help="folder for cached phantom volumes (default ~/.cache/qmri)")),
        (
            "--randomised-variants",
            dict(
                type=nonneg_int,
                default=0,
                help="synth: add this many domain-randomised variants of every training subject to the pools (TR/TE, tissue properties, SNR, bias field, CT noise and HU drawn; qmri.models.synthnet.data_randomised)",
            ),
        ),
    ]
    for name, kw in opts:
        if name not in p._option_string_actions:
            p.add_argument(name, **kw)


def train_command(args) -> dict:
    import torch

    from ...training import model_card
    from ...training.loop import save_training_curve, training_command
    from .data import CT_SEED, MR_SEED, VAL_SEED, make_volume
    from .train import DEFAULT_WEIGHTS, SynthRecipe, train_synth

    for k, v in vars(add_arguments(argparse.ArgumentParser()).parse_args([])).items():
        if not hasattr(args, k):
            setattr(args, k, v)
    out = Path(args.out) if args.out else default_out()
    lr = args.lr if args.lr is not None else 2e-4
    weights = {**DEFAULT_WEIGHTS, **(json.loads(args.loss_weights) if args.loss_weights else {})}
    n = args.train_subjects
    mr_seeds, ct_seeds = list(range(MR_SEED, MR_SEED + n)), list(range(CT_SEED, CT_SEED + n))
    val_seeds = list(range(VAL_SEED, VAL_SEED + args.val_subjects))
    t0 = time.time()
    mr_vols = [make_volume(s, args.resolution, args.cache_dir) for s in mr_seeds]
    ct_vols = [make_volume(s, args.resolution, args.cache_dir) for s in ct_seeds]
    val_vols = [make_volume(s, args.resolution, args.cache_dir) for s in val_seeds]
    if args.randomised_variants:
        from .data_randomised import randomised_volumes

        for seeds, vols in ((mr_seeds, mr_vols), (ct_seeds, ct_vols)):
            for s in seeds:
                vols += randomised_volumes(s, args.randomised_variants, args.resolution, args.cache_dir)
    for v in mr_vols:
        v.ct = None  # unpaired: the MR subjects' CTs are never seen
    for v in ct_vols:
        v.mr = None
    prep_s = time.time() - t0
    recipe = SynthRecipe(
        mr_vols,
        ct_vols,
        val_vols,
        crop=args.crop,
        lr=lr,
        weights=weights,
        val_slices=args.val_slices or None,
        warm_steps=args.warm_steps,
        warm_weight=args.warm_weight,
        warm_only_steps=args.pretrain_steps,
        warm_lr=args.pretrain_lr,
        pseudo_sct=args.pseudo_sct,
        bt=args.backtranslation,
        pseudo=args.pseudo_weight,
        bt_ssim=args.backtranslation_ssim,
        bt_hybrid=args.backtranslation_hybrid,
        hybrid_brain=args.hybrid_brain,
        ema_decay=args.ema_decay,
    )
    res = train_synth(out, recipe, epochs=args.epochs, steps_per_epoch=args.steps, batch_size=args.batch, seed=args.seed, init=args.init, device=args.device, max_minutes=args.max_minutes, world_size=args.world_size)
    save_training_curve(res["history"], out.parent / "training_curve.png", "scCycleGAN (MR <-> CT)", "val_sct_mae_hu", "validation sCT MAE (HU)", "generator loss")
    (out.parent / "training_history.json").write_text(json.dumps(res, indent=2))
    device = res["device"]
    if device.startswith("cuda"):
        device += f" ({torch.cuda.get_device_name(0)})"
    cfg, best = res["config"], res["best"]
    sd = torch.load(out, weights_only=True)["state_dict"]
    n_gen = sum(v.numel() for k, v in sd.items() if k.startswith("g_") and v.is_floating_point())
    n_dis = sum(v.numel() for k, v in sd.items() if k.startswith("d_") and v.is_floating_point())
    net = cfg["net"]
    command = training_command("synth")
    w = cfg["loss_weights"]
    only_pretrain = cfg.get("pretrain_steps", 0) >= len(res["history"]) * args.steps  # the GAN phase never began
    then_gan = "" if only_pretrain else "; then the scCycleGAN losses"
    unused = "every step was a generator-only pretraining step (below); the adversarial scCycleGAN losses, configured as follows, were not used: " if only_pretrain else ""
    optimiser = f"Adam lr {cfg['pretrain_lr']:g} (generator-only steps)" if only_pretrain else f"Adam lr {lr:g} (beta1 0.5) constant, image pool 50"
    bt_text = ""
    if cfg.get("backtranslation_weight"):
        bt_text = (
            f"; pseudo-target weight {cfg['pseudo_weight']:g}, plus back-translation x {cfg['backtranslation_weight']:g} (each generator learns to invert "
            f"the other's detached translation of a real image, with Rician MR noise sd {cfg['bt_mr_noise_sd']:.2f} a.u. and CT noise sd "
            f"{cfg['bt_ct_noise_sd_hu']:.2f} HU estimated from the training images' backgrounds)"
        )
        if cfg.get("backtranslation_ssim_weight"):
            bt_text += f", plus (1 - SSIM) x {cfg['backtranslation_ssim_weight']:g} on the CT -> MR back-translation (MONAI SSIMLoss, 7x7 window)"
        if cfg.get("backtranslation_hybrid_weight"):
            bt_text += f", plus x {cfg['backtranslation_hybrid_weight']:g} the CT -> MR generator's inversion of a hybrid sCT (tissue-mixture soft tissue, generator bone/air/fat)"
            if cfg.get("hybrid_brain") == "drawn_mixture":
                bt_text += "; the hybrid's brain from venous blood-WM-GM-CSF mixtures of the T2w signal with per-image CT numbers drawn from the phantom's between-subject distributions"

    fields = {
        "Networks": f"""(one checkpoint, {out.stat().st_size / 1e6:.1f} MB): two ResNet generators (seed 004 / CycleGAN: 7x7 conv, {net["n_down"]} stride-2 downsamplings, {net["n_blocks"]} residual blocks, upsamplings, 7x7 conv + tanh, instance norm; width {net["width"]}; {n_gen / 2e6:.2f} M parameters each): `g_mr2ct` (T2w MR -> CT) and `g_ct2mr` (CT -> T2w MR); two MONAI PatchDiscriminators ({net["d_layers"]} layers, width {net["d_width"]}, {n_dis / 2e6:.2f} M parameters each), kept for fine-tuning.""",
        "Intensities": """CT [-1024, 3000] HU and T2w MR [0, 800] a.u. (units of qmri.physics.ct_mr.t2w_mr: 1000 a.u. per unit PD, TR/TE 4000/90 ms; CSF ~580 a.u.) mapped linearly to [-1, 1]; outputs map back with the same fixed ranges.""",
        "Data (unpaired)": f"""2D axial slices (head >= 5 % of the slice) of phantom heads (qmri.anatomy, MNI152-based) at {args.resolution:g} mm: MR from seeds {mr_seeds[0]}..{mr_seeds[-1]} ({cfg["n_mr_slices"]} slices), CT from the different subjects {ct_seeds[0]}..{ct_seeds[-1]} ({cfg["n_ct_slices"]} slices){f", each subject also with {args.randomised_variants} domain-randomised variants (qmri.models.synthnet.data_randomised: TR/TE, tissue properties, SNR, bias field, CT noise and HU drawn)" if args.randomised_variants else ""}; random {cfg["crop"]}x{cfg["crop"]} crops, left-right flips. Validation: co-registered MR + CT of seeds {val_seeds[0]}..{val_seeds[-1]} (pairing used only for scoring; {args.val_slices or "all"} central axial slices per subject). Benchmark seeds 5600.. are disjoint.""",
        "Losses": f"""{unused}LSGAN adversarial x {w["adv"]:g}, cycle L1 x {w["cyc"]:g}, the seed's discriminator-weighted pixel L1 (on the cycle reconstructions, unpaired) x {w["pix"]:g}, identity L1 x {w["idt"]:g}, spatially-correlative structural loss (fixed NCC-patch features, qmri.models.synthnet.loss) x {w["str"]:g} ({"the seed" + "'" + "s adv/pix/str weights" if (w["adv"], w["pix"], w["str"]) == (1.0, 100.0, 10.0) else "adv/pix/str differ from the seed" + "'" + "s 1/100/10, see the measured comparison below"}).""",
        "Pretraining": f"""{"none" if not cfg.get("pretrain_steps") else f"the first {cfg['pretrain_steps']} steps train only the generators, L1 to the classical sCT of each training MR ({PSEUDO_NAMES[cfg.get('pseudo_sct', 'bulk_density')]}) and the bulk sMR of each training CT (qmri.classical.bulk_density.synthetic_mr_bulk; no ground truth, training stays unpaired), Adam lr {cfg['pretrain_lr']:g}{bt_text}{then_gan}"}""",
        "Warm start": f"""{"none" if not cfg.get("warm_steps") else f"for the first {cfg['warm_steps']} steps an extra L1 pulls G(MR) towards the bulk-density sCT of the same training MR and F(CT) towards the bulk sMR of the same training CT (qmri.classical.bulk_density; no ground truth involved, training stays unpaired), weight {cfg['warm_weight']:g} ramped linearly to 0; afterwards pure scCycleGAN losses"}""",
        "Initial weights": f"""{f"`{args.init}` (fine-tuned)" if args.init else "random (seed below)"}""",
        "Training": f"""{len(res["history"])} epochs (of {args.epochs} planned) x {args.steps} steps, batch {args.batch} MR + {args.batch} CT crops, {optimiser}, seed {args.seed}{f"; the validated and saved weights are their exponential moving average, decay {cfg['ema_decay']:g} per step (torch.optim.swa_utils.AveragedModel)" if cfg.get("ema_decay") else ""}""",
        "Device": f"""{device}; {platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s); training took {res["seconds"] / 60:.1f} min (plus {prep_s / 60:.1f} min loading/simulating phantoms)""",
        "Best epoch": f"""(selected by val_score = MAE/60 HU + (1 - SSIM_sMR)/0.10): {best.get("epoch")}: sCT MAE {best.get("val_sct_mae_hu", float("nan")):.1f} HU, bone Dice {best.get("val_sct_bone_dice", float("nan")):.3f}, sCT SSIM {best.get("val_sct_ssim", float("nan")):.3f}; sMR SSIM {best.get("val_smr_ssim", float("nan")):.3f}, PSNR {best.get("val_smr_psnr_db", float("nan")):.1f} dB (SynthRAD2023 convention, head mask)""",
        "Files": """Curve: `training_curve.png`; per-epoch history: `training_history.json`. Benchmark against the bulk-density baseline on held-out phantoms: `qmri bench synth`.""",
    }
    card = model_card.record(out, f"""scCycleGAN: synthetic CT from T2w MR and synthetic T2w MR from CT (`{out.name}`)""", fields, res, command=command)
    print(card.read_text())
    return res
