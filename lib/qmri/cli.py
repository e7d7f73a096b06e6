"""The ``qmri`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _phantom(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .anatomy.montage import save_montage
    from .anatomy.phantom import make_subject

    out = Path(args.out)
    for i in tqdm(range(args.subjects), desc="phantoms", unit="subject"):
        s = make_subject(args.seed + i, args.resolution, lesions=args.lesions, subject_id=f"sub-{args.seed + i:03d}")
        d = s.save(out)
        if args.montage:
            save_montage(s, d / "montage.png")
        tqdm.write(f"{d}  shape {s.shape}  brain {s.brain_mask.sum() * s.voxel_size_mm**3 / 1000:.0f} ml  lesions {[l['type'] for l in s.lesion_list] or 'none'}")
    return 0


def _sample_data(args: argparse.Namespace) -> int:
    from .anatomy.sample_data import write_anatomy_studies, write_task_studies

    for p in write_anatomy_studies(args.out, subjects=args.subjects, seed=args.seed, resolution_mm=args.resolution):
        print(p)
    for p in write_task_studies(args.out, seed=args.seed, resolution_mm=args.resolution):
        print(p)
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from .simulate.driver import simulate

    for p in simulate(args.task, args.out, subjects=args.subjects, seed=args.seed, resolution_mm=args.resolution, compact=args.compact):
        print(p)
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.suite == "classical":
        from .bench.classical import run

        run(args.out, subjects=args.subjects, resolution_mm=args.resolution, tasks=tuple(args.tasks) if args.tasks else None)
    elif args.suite == "qsm":
        from .bench.qsm import run

        run(args.out, args.weights or "apps/qmri/model/qsmnet/qsmnet.pt", subjects=args.subjects, resolution_mm=args.resolution)
    elif args.suite == "pvc":
        from .bench.pvc import run

        from .tasks.pvc import DEFAULT_NETWORK

        run(args.out, {DEFAULT_NETWORK: args.weights} if args.weights else None, subjects=args.subjects, resolution_mm=args.resolution)
    elif args.suite == "synth":
        from .bench.synth import run

        run(args.out, args.weights or "apps/qmri/model/synthnet/synthnet.pt", subjects=args.subjects, resolution_mm=args.resolution)
    elif args.suite == "oef":
        from .bench.oef import run

        run(args.out, args.weights or "apps/qmri/model/oefnet", subjects=args.subjects, resolution_mm=args.resolution, other_snr_subjects=args.other_snr_subjects, reuse_rows=args.reuse_rows, first_subject=args.first_subject, methods=tuple(args.tasks) if args.tasks else ("qq_fit", "lstm", "cnn3d", "best"))
    return 0


def _train(args: argparse.Namespace) -> int:
    if args.task == "qsm":
        from .training.qsm_cli import train_qsm_command

        train_qsm_command(args)
    elif args.task == "pvc":
        from .training.pvc_cli import train_pvc_command

        train_pvc_command(args)
    elif args.task == "synth":
        from .training.synth_cli import train_synth_command

        train_synth_command(args)
    elif args.task == "oef":
        from .training.oef_cli import train_oef_command

        train_oef_command(args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="qmri", description="Quantitative brain imaging: phantoms, physics, methods.")
    ap.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("phantom", help="generate digital head phantoms from the MNI152 anatomy")
    p.add_argument("--subjects", type=int, default=1, help="number of subjects (default 1)")
    p.add_argument("--resolution", type=float, default=2.0, help="isotropic voxel size in mm (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first subject; subject i uses seed+i")
    p.add_argument("--lesions", choices=("auto", "none", "all"), default="auto", help="lesion draw (default auto)")
    p.add_argument("--out", required=True, help="output folder (one sub-<seed> folder per subject)")
    p.add_argument("--montage", action="store_true", help="also write montage.png per subject")
    p.set_defaults(func=_phantom)

    p = sub.add_parser("sample-data", help="regenerate the bundled sample data (anatomy and studies)")
    p.add_argument("--out", default="sample-data", help="sample-data folder (default sample-data)")
    p.add_argument("--subjects", type=int, default=3)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--resolution", type=float, default=2.0, help="voxel size in mm (default 2)")
    p.set_defaults(func=_sample_data)

    p = sub.add_parser("simulate", help="simulate studies of one task (truth in labels/final)")
    p.add_argument("task", choices=("oef", "qsm", "pvc", "synth"))
    p.add_argument("--subjects", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="seed of the first subject; subject i uses seed+i")
    p.add_argument("--resolution", type=float, default=2.0, help="voxel size in mm (default 2)")
    p.add_argument("--out", required=True, help="studies folder to write into")
    p.add_argument("--compact", action="store_true", help="store floats as scaled int16 (about 3x smaller)")
    p.set_defaults(func=_simulate)

    p = sub.add_parser("train", help="train a task's network on phantoms and write shipped weights + model card")
    p.add_argument("task", choices=("qsm", "pvc", "synth", "oef"))
    p.add_argument("--out", default=None, help="weights file (default apps/qmri/model/<task>/...)")
    p.add_argument("--train-subjects", type=int, default=8)
    p.add_argument("--val-subjects", type=int, default=2)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--steps", type=int, default=40, help="optimiser steps per epoch")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the task's)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after the epoch that passes this wall time")
    p.add_argument("--world-size", type=int, default=1, help="data-parallel processes (GPUs, or gloo CPU processes)")
    p.add_argument("--resolution", type=float, default=2.0, help="phantom voxel size (mm)")
    p.add_argument("--patch", type=int, default=None, help="pvc: patch edge in voxels (default 64)")
    p.add_argument("--target", choices=("rbv", "activity"), default="rbv", help="pvc: RBV-corrected PET (default) or the true activity")
    p.add_argument("--condition-fwhm", action="store_true", help="pvc: give the network the PSF FWHM as a second input channel")
    p.add_argument("--init", default=None, help="pvc, synth: weights to fine-tune from (same architecture)")
    p.add_argument("--residual", choices=("additive", "multiplicative"), default=None, help="pvc: output = input + gain x U-Net (default) or input x (1 + gain x U-Net)")
    p.add_argument("--channels", default=None, help="pvc: U-Net channels per level, comma-separated (default 16,32,64,128)")
    p.add_argument("--workers", type=int, default=None, help="pvc, oef best: processes generating the phantoms (default 1)")
    from .training.synth_cli import add_missing_arguments as _synth_args

    _synth_args(p)  # synth options whose names the shared parser lacks
    from .training.oef_cli import add_missing_arguments as _oef_args

    _oef_args(p)  # oef options whose names the shared parser lacks
    p.set_defaults(func=_train)

    p = sub.add_parser("bench", help="benchmark methods on held-out phantoms (prints and saves tables)")
    p.add_argument("suite", choices=("classical", "qsm", "pvc", "synth", "oef"))
    p.add_argument("--weights", default=None, help="network weights (default: the shipped ones; oef: the folder with best/cnn3d/lstm.pt)")
    p.add_argument("--other-snr-subjects", type=int, default=1, help="oef: subjects also run at SNR 50 and 200 (all run at 100)")
    p.add_argument("--reuse-rows", action="store_true", help="oef: reuse stored results of the methods not in --tasks (see bench_oef_rows.json)")
    p.add_argument("--tasks", nargs="*", help="subset of tasks (default all; oef: methods qq_fit lstm cnn3d best)")
    p.add_argument("--subjects", type=int, default=2)
    p.add_argument("--first-subject", type=int, default=0, help="oef: skip the first subjects (with --reuse-rows: add subjects to a stored run)")
    p.add_argument("--resolution", type=float, default=2.0)
    p.add_argument("--out", default="bench-results", help="output folder for markdown and JSON")
    p.set_defaults(func=_bench)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ValueError as e:
        print(f"qmri: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
