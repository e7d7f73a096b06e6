"""``qmri train oef --model cnn3d|lstm|best``: train an OEF network on phantoms, write weights + model card.

``best`` trains the set-context network (multi-scale context features + a whole-brain code
fitted by ridge regression on brain statistics, bounded outputs, physics-consistency term) on feature banks of many parameter draws and
then ships, as ``best.pt``, whichever of the available networks (it, ``cnn3d.pt``, ``lstm.pt``) has the
lowest validation OEF RMSE among those at or below the 3D CNN's RMSE on every parameter; the choice and all candidates' numbers go into the model card.
"""

from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path
from typing import TYPE_CHECKING

from ...cli_args import positive_int
from .. import shipped
from ...training import model_card

if TYPE_CHECKING:  # annotation only: importing .train loads torch, which the parser must not
    from .train import OEFRecipe

# torch, the networks and the data are imported inside the functions that use them: ``qmri``'s
# parser (which calls add_missing_arguments) must build without them

TRAIN_SEED0 = 40000  # training anatomies 40000.. ; validation 41000.. ; benchmarks use 5000.. (disjoint)
VAL_SEED0 = 41000
MODELS = ("cnn3d", "lstm", "best")
ARCH = {"cnn3d": "cnn3d", "lstm": "lstm", "best": "setcontext"}


#: The help line of its ``qmri train`` task (the task name is ``MODELS[...].train_task``).
HELP = "an OEF network (--model cnn3d | lstm | best)"


def default_out(args=None) -> Path:
    """The shipped OEF weights folder, in the app's model folder (:mod:`qmri.paths`)."""
    return shipped("oefnet")


def bank_voxels() -> int:
    """setcontext: brain voxels banked per training volume (40000)."""
    from .net import SUMMARY_VOXELS

    return SUMMARY_VOXELS


DESCRIPTION = {
    "cnn3d": "seed-000 3D CNN: 4 Conv3D (9 -> 16 -> 32 -> 64 -> 5, 3x3x3), LeakyReLU after the first three, no BN/dropout",
    "lstm": "seed-001 voxelwise LSTM: 9 inputs as 5 steps (sliding window of 5), LSTM 512-256-128-64 (last returns the final step), Dense 64-32-16 LeakyReLU(0.01), 5 outputs",
    "context": "multi-scale context network: the voxel's 9 inputs + brain-masked Gaussian averages at sigma 2, 4, 8, 16, 32 mm (normalised convolution, fixed) + local brain fractions (59 features) -> MLP 128-128-64 LeakyReLU(0.01) -> 5 outputs squashed into the QQ-NET physical bounds; loss MSE (Y weighted x2) + 0.1 x physics consistency (re-simulated echoes and QSM)",
    "setcontext": "set-context network: the context network's 59 voxel features (the voxel's 9 inputs + brain-masked Gaussian averages at sigma 2-32 mm, the 8, 16 and 32 mm ones on a grid of 2x2x2 means, + local brain fractions) + 36 pooled profile-likelihood features when trained with them (12 OEF values x Gaussian neighbourhoods of 2, 4, 8 mm; qmri.classical.qq_profile) + a 9-dim whole-brain code (ridge regression, fitted in closed form on the training subjects, from 138 brain statistics of the log echo decay and the QSM to the brain-mean S0, R2, Y, v, chi_nb and the mean Y in 4 QSM bands) -> MLP 128-128-64 LeakyReLU(0.01) -> 5 outputs squashed into the QQ-NET physical bounds (+ the log sd of Y for an uncertainty head, trained by a Gaussian negative log-likelihood with the mean detached, weight 0.1); loss MSE (Y weighted x2) + 0.1 x physics consistency (re-simulated echoes and QSM)",
    "unet": "bounded 3D U-Net (MONAI BasicUNet, features 16-16-32-64-96-16, instance norm, LeakyReLU), sigmoid outputs inside the QQ-NET physical bounds, MSE + 0.1 x physics consistency (re-simulated echoes and QSM)",
}


def optim_text(arch: str) -> str:
    """The model card's optimisation sentence of ``arch``."""
    from .data import SNR_RANGE

    bank = bank_voxels()
    return {
        "cnn3d": "Adam lr 1e-3, CosineAnnealingWarmupRestarts (100 warm-up steps, 1000-step cycles, cycle_mult 1.0, decay 0.9, floor 1 %), early stopping after 2 cycles without improvement",
        "lstm": "Adam lr 1e-4 constant, Huber loss, batch 512 voxels",
        "unet": "Adam lr 1e-3 cosine-decayed to 5 %, patches 48^3",
        "context": "Adam lr 1e-3 cosine-decayed to 5 %; the fixed features of whole noisy training volumes are banked (4 of the 12 volumes re-noised at a new SNR each epoch) and the MLP trains on batches of brain voxels drawn from the bank",
        "setcontext": f"whole-brain code: scikit-learn RidgeCV (penalty by leave-one-out) on the training volumes; head: Adam lr 1e-3 cosine-decayed to 5 %; every training volume (one parameter draw on one anatomy) is noised once at its own echo-1 SNR ~ U{tuple(SNR_RANGE)}, featurised and banked ({bank} random brain voxels, from which its brain statistics are taken); each step takes 8 banked volumes and batch / 8 voxels of each",
    }[arch]


def train_oef_model(
    model: str, out_dir: Path, train_seeds, val_seeds, epochs: int, steps: int, batch: int | None, seed: int = 0, device=None, max_minutes=None, draws: int = 2, cache: str | None = None, lr: float | None = None, workers: int = 1
) -> dict:
    """Train one OEF network on phantom anatomies ``train_seeds`` and save ``<out_dir>/<model>.pt``."""
    from ...training.loop import train
    from .data import cached_phantom_volumes, phantom_feature_banks
    from .train import CYCLE_STEPS, DEFAULTS, OEFRecipe

    arch = ARCH[model]
    va = cached_phantom_volumes(val_seeds, 1, cache, lesions="auto")
    note = f"phantom anatomies {train_seeds[0]}..{train_seeds[-1]} x {draws} parameter draws (all lesion types), validation {val_seeds[0]}..{val_seeds[-1]} at SNR 100"
    if arch == "setcontext":  # many subject-level draws, banked as features (whole volumes would not fit in memory)
        banks = phantom_feature_banks(train_seeds, draws, bank_voxels(), workers=workers, cache_dir=cache)
        recipe = OEFRecipe(arch, [], va, model=model, data_note=note, seed=seed, banks=banks)
    else:
        tr = cached_phantom_volumes(train_seeds, draws, cache, lesions="all")
        recipe = OEFRecipe(arch, tr, va, model=model, data_note=note, seed=seed)
    cand = out_dir / (f"{model}.pt" if model != "best" else f"{arch}_candidate.pt")
    batch = batch or DEFAULTS[arch]["batch_size"]
    lr = lr or DEFAULTS[arch]["lr"]
    patience = max(1, (2 * CYCLE_STEPS) // steps) if arch == "cnn3d" else None
    res = train(recipe, cand, epochs=epochs, steps_per_epoch=steps, batch_size=batch, lr=lr, seed=seed, device=device, max_minutes=max_minutes, patience_epochs=patience, progress=False)
    if arch in ("context", "setcontext"):  # uncertainty head: calibrate its sd on the validation phantoms
        res["sd_scale"] = calibrate_checkpoint(cand, recipe)
    res["model"], res["arch"], res["train_seeds"], res["val_seeds"] = model, arch, list(train_seeds), list(val_seeds)
    res["epochs_requested"], res["steps_per_epoch"], res["batch_size"], res["lr"], res["draws"] = epochs, steps, batch, lr, draws
    if model == "best":
        res["selection"] = select_best(out_dir, cand, recipe)
    return res


def calibrate_checkpoint(path: Path, recipe) -> float:
    """Fit the uncertainty head's sd calibration (:func:`~qmri.models.oefnet.train.calibrate_sd`) of the
    checkpoint at ``path`` on ``recipe``'s validation volumes and save it back; returns the factor."""
    from .predict import load_oef_net
    from ...training.loop import load_checkpoint, save_checkpoint
    from .train import calibrate_sd

    m = load_oef_net(path)
    if not getattr(m.net, "uncertainty", False):
        return 1.0
    scale = calibrate_sd(m.net, m.arch, recipe.val)
    _, cfg = load_checkpoint(path)
    save_checkpoint(path, m.net, {**cfg, "sd_calibration": {"scale": scale, "coverage_2sd": 0.95, "data": ", ".join(v.name for v in recipe.val)}})
    return scale


#: The default network must show where OEF differs: only candidates whose validation OEF correlates
#: with the truth at least this much (Pearson r over each validation volume's brain voxels, averaged
#: over the volumes: a map constant within each volume scores 0 even when it follows their levels) compete
#: on validation OEF RMSE (issue 24; the earlier rule, every parameter's RMSE at or below the 3D CNN's,
#: let a near-constant map win).
SELECT_MIN_R = 0.5


def select_best(out_dir: Path, cand_path: Path, recipe: OEFRecipe) -> dict:
    """Copy to ``best.pt`` (config model='best') the candidate with the lowest validation OEF RMSE among
    those whose validation OEF correlates with the truth (r >= :data:`SELECT_MIN_R`); if none does,
    the one with the highest r.

    Every candidate (the new one, ``cnn3d.pt``, ``lstm.pt``) is scored on the same data: ``recipe``'s
    noisy validation volumes, on its fixed random voxel subsets (the LSTM is voxelwise and slow;
    the other networks predict the whole brain and are scored there), not on the numbers stored in
    each checkpoint, which come from each training run's own validation subjects."""
    from .predict import load_oef_net
    from ...training.loop import load_checkpoint, save_checkpoint
    from .train import evaluate

    scores = {}
    _, ccfg = load_checkpoint(cand_path)
    for name, path in ((ccfg["arch"], cand_path), ("cnn3d", out_dir / "cnn3d.pt"), ("lstm", out_dir / "lstm.pt")):
        if path.exists():
            m = load_oef_net(path)
            scores[name] = evaluate(m.net, m.arch, recipe.val, subsets=recipe.val_sel)
    eligible = [n for n in scores if scores[n]["val_oef_r"] >= SELECT_MIN_R]
    winner = min(eligible, key=lambda n: scores[n]["val_oef_rmse"]) if eligible else max(scores, key=lambda n: scores[n]["val_oef_r"])
    src = cand_path if winner == ccfg["arch"] else out_dir / f"{winner}.pt"
    state, cfg = load_checkpoint(src)
    from .net import build, checkpoint_arch_kwargs

    net = build(cfg["arch"], **checkpoint_arch_kwargs(cfg))
    net.load_state_dict(state)
    save_checkpoint(
        out_dir / "best.pt",
        net,
        {**cfg, "model": "best", "selected_from": winner, "candidates": scores, "selection_data": f"{len(recipe.val)} validation volumes ({', '.join(v.name for v in recipe.val)}), {int(sum(m.sum() for m in recipe.val_sel))} voxels"},
    )
    cand_path.unlink()  # the candidate is shipped (if it won) as best.pt only
    return {"winner": winner, "candidates": scores}


def _card_section(h: dict) -> str:
    from .data import SNR_RANGE, TE_MS

    model, arch, best = h["model"], h["arch"], h["best"]
    dev = h["device"]
    rm = " / ".join(f"{n} {best.get('val_rmse_' + n, float('nan')):.4g}" for n in ("S0", "R2", "Y", "v", "chi_nb"))
    sel = ""
    if "selection" in h:
        c = h["selection"]["candidates"]
        sel = (
            f"- **Selection**: `best.pt` = the {h['selection']['winner']} network (lowest validation OEF RMSE among networks with validation r >= {SELECT_MIN_R}; on the same validation voxels: "
            + ", ".join(f"{k} RMSE {v['val_oef_rmse']:.2f} %-points, r {v.get('val_oef_r', float('nan')):.2f}" for k, v in c.items())
            + ")\n"
        )
    extra = ""
    if "val_oef_r" in best:
        extra += f"; validation OEF r {best['val_oef_r']:.2f}"
    if "sd_scale" in h:
        extra += f"; OEF_sd calibrated on the validation phantoms (factor {h['sd_scale']:.3f}: 95 % of their brain voxels within 2 sd)"
    head = f"`{model}.pt` ({arch})"
    if "selection" in h:
        head = f"`best.pt`: shipped = the {h['selection']['winner']} network; candidate trained by this command: {arch}"
    return f"""## {head}

- **Command**: `{h.get("command", "qmri train oef --model " + model)}`
- **Date**: {h.get("date")}; **device**: {dev}, {h.get("torch_threads")} thread(s); training took {h["seconds"] / 60:.1f} min
- **Network{" (candidate)" if "selection" in h else ""}**: {DESCRIPTION[arch]}; {h.get("parameters", 0) / 1e6:.2f} M parameters
- **Optimisation**: {optim_text(arch)}; {len(h["history"])} epochs run of {h["epochs_requested"]} x {h["steps_per_epoch"]} steps, batch {h["batch_size"]}, seed {h["config"].get("seed")}
- **Data**: {h["config"].get("data")}; Rician noise at echo-1 SNR U{tuple(SNR_RANGE)} and 0.005 ppm QSM noise, {"once per training volume" if arch == "setcontext" else "drawn afresh per example"}; echo times {list(TE_MS)} ms
- **Best epoch{" (candidate)" if "selection" in h else ""}**: {best.get("epoch")}: validation OEF RMSE {best.get("val_oef_rmse", float("nan")):.2f} %-points; RMSE {rm} (S0 a.u., R2 1/s, Y, v, chi_nb ppm){extra}
{sel}- Curve: `training_curve_{model}.png`; history: `training_history_{model}.json`
"""


TITLE = "OEF networks (QQ model: S0, R2, Y, v, chi_nb from 8 echo magnitudes + QSM)"


def summary() -> str:
    from .data import TE_MS

    return (
        f"Input: the 8 echo magnitudes at TE {list(TE_MS)} ms divided by echo 1 (QQ-NET) + QSM (ppm); a study with other echo times is refused (HTTP 422) and the classical `qq_fit` remains available for it. "
        "Output: S0 (input units), R2 (1/s), Y, v (fractions), chi_nb (ppm), OEF = 1 - Y/0.98 (%) and, from networks with an uncertainty head, OEF_sd (%-points, calibrated), inside the brain mask. "
        "Weights: checkpoints of `qmri.training.loop.save_checkpoint` (state_dict + JSON config with the echo times); load with `qmri.models.oefnet.predict.load_oef_net`. "
        "Benchmark on held-out phantoms (seeds 5300..): `qmri bench oef`."
    )


def write_model_card(out_dir: Path, model: str) -> Path:
    """Record ``model``'s card (from its ``training_history_<model>.json``) in the folder's
    ``metadata.json`` and re-render ``README.md`` (:mod:`qmri.training.model_card`); the other
    models' entries and the hand-written ``NOTES.md`` are kept."""
    h = json.loads((out_dir / f"training_history_{model}.json").read_text())
    fields = {k: v for k, v in model_card.fields_from_card(_card_section(h)).items() if k not in ("Command", "Date")}
    weights = out_dir / ("best.pt" if model == "best" else f"{model}.pt")
    return model_card.record(weights, TITLE, fields, h, command=h.get("command", ""), summary=summary(), date=str(h.get("date", ""))[:10] or None)


def add_arguments(p):
    """The options of ``qmri train oef`` with this task's defaults."""
    from ...cli_args import add_training_arguments, positive_float

    add_training_arguments(
        p, f"weights folder (default {default_out()})", 8, 2, 20, 40, 4, train_help="phantom anatomies (seeds 40000..)", val_help="validation anatomies (seeds 41000..)", batch_help="cnn3d: volumes per batch (lstm, best: see --voxels)"
    )
    p.add_argument("--lr", type=positive_float, default=None, help="learning rate (default: the model's, see the model card)")
    p.add_argument("--max-minutes", type=positive_float, default=None, help="stop after the epoch that passes this wall time")
    p.add_argument("--workers", type=positive_int, default=None, help="best: processes generating the phantoms (default 1)")
    add_missing_arguments(p)
    return p


def add_missing_arguments(p) -> None:
    """OEF options whose names the shared ``train`` parser lacks (skips names already there)."""
    have = {o for a in p._actions for o in a.option_strings}
    if "--model" not in have:
        p.add_argument("--model", choices=MODELS, default=None, help="oef: cnn3d, lstm or best (default best)")
    if "--voxels" not in have:
        p.add_argument("--voxels", type=positive_int, default=None, help="oef lstm / best: voxels per batch (default 512 as seed 001 / 8192)")
    if "--draws" not in have:
        p.add_argument("--draws", type=positive_int, default=2, help="oef: parameter draws per phantom anatomy")
    if "--cache-dir" not in have:
        p.add_argument("--cache-dir", default=None, help="folder to cache the phantom volumes in")


def train_command(args) -> dict:
    import torch

    from ...training.loop import load_checkpoint, save_training_curve, training_command
    from .train import DEFAULTS

    model = args.model or "best"
    if model not in MODELS:
        raise ValueError(f"--model must be one of {', '.join(MODELS)} for oef, got {model!r}")
    out_dir = Path(args.out) if args.out else default_out()
    out_dir.mkdir(parents=True, exist_ok=True)
    train_seeds = list(range(TRAIN_SEED0, TRAIN_SEED0 + args.train_subjects))
    val_seeds = list(range(VAL_SEED0, VAL_SEED0 + args.val_subjects))
    batch = (args.voxels or DEFAULTS[ARCH[model]]["batch_size"]) if model in ("lstm", "best") else args.batch
    res = train_oef_model(model, out_dir, train_seeds, val_seeds, args.epochs, args.steps, batch, seed=args.seed, device=args.device, max_minutes=args.max_minutes, draws=args.draws, cache=args.cache_dir, lr=args.lr, workers=args.workers or 1)
    res["command"] = training_command("oef")
    res["date"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    res["torch_threads"] = torch.get_num_threads()
    res["device"] = f"{res['device']} ({platform.processor() or platform.machine()})"
    weights = out_dir / ("best.pt" if model == "best" else f"{model}.pt")
    state, _ = load_checkpoint(weights)
    res["parameters"] = int(sum(v.numel() for k, v in state.items() if hasattr(v, "numel") and k.split(".")[-1] not in ("offset", "lower", "span", "mean", "std")))
    save_training_curve(res["history"], out_dir / f"training_curve_{model}.png", f"OEF {model}", "val_oef_rmse", "validation OEF RMSE (%-points)")
    (out_dir / f"training_history_{model}.json").write_text(json.dumps(res, indent=2))
    card = write_model_card(out_dir, model)
    print(card.read_text())
    return res
