"""The ``qmri`` command line.

Everything a command is given is checked before it starts working: counts, seeds, sizes and
choices by argparse (the types of :mod:`qmri.cli_args`), then input files (``--weights``,
``--init``) and output folders (``--out``, ``--cache-dir``: created and probed with a test file) at
the start of each command. A bad value ends in ``qmri <command>: error: ...`` with exit code 2.
Errors raised later by bad input (a value the science rejects, a file that does not load) print
``qmri: error: ...`` and exit 2; runtime failures (out of memory, a device error) exit 1; other
exceptions are bugs and keep their traceback. ``qmri --debug`` (or ``QMRI_DEBUG=1``) re-raises
every error with its traceback. Default weights come from the app's model folder wherever the
command runs (:mod:`qmri.paths`); default output folders are relative to the working directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import sys
from pathlib import Path

from .cli_args import PathError, nonneg_int, positive_float, positive_int, readable_file, writable_dir, writable_file
from .models import shipped
from .paths import MODEL_DIR_ENV, model_dir

log = logging.getLogger(__name__)

#: ``qmri bench classical --tasks`` = qmri.bench.classical.BENCHES; ``qmri bench oef --tasks`` =
#: qmri.bench.oef.METHODS (kept here so that the parser builds without importing them; the tests check)
#: = qmri.tasks.registry.TASKS (kept here so that the parser builds without importing it; the tests check)
INFER_TASKS = ("oef", "qsm", "qsm_raw", "pvc", "synthetic_ct", "synthetic_mr")
BENCH_TASKS = {"classical": ("synth", "pvc", "qsm", "oef"), "oef": ("qq_fit", "qq_spatial", "qq_region", "lstm", "cnn3d", "best")}
OEF_CLASSICAL = ("qq_fit", "qq_spatial", "qq_region")  # no weights; qq_region: the regional bench (bench_oef_regions.md)
#: suite -> its shipped network (qmri.paths); pvc: --weights replaces the served pvcnet_fwhm
BENCH_NETWORK = {"qsm": "qsmnet", "synth": "synthnet", "pvc": "pvcnet_fwhm", "oef": "oefnet"}


class UsageError(ValueError):
    """A bad command-line value found after parsing (a path); reported like argparse's errors."""


def output_dir(flag: str, path) -> Path:
    """Output folder ``path`` of option ``flag``, created and checked writable, or :class:`UsageError`."""
    try:
        return writable_dir(path)
    except PathError as e:
        raise UsageError(f"cannot write to {flag} {path}: {e}") from None


def output_file(flag: str, path) -> Path:
    """Output file ``path`` of option ``flag``: its folder created and checked writable."""
    try:
        return writable_file(path)
    except PathError as e:
        raise UsageError(f"cannot write to {flag} {path}: {e}") from None


def input_file(flag: str, path, default: bool = False) -> Path:
    """Existing readable file ``path`` of option ``flag`` (``default``: the option was not given)."""
    try:
        return readable_file(path)
    except PathError as e:
        if default:
            raise UsageError(f"default {flag} {path}: {e} (pass {flag}, or set {MODEL_DIR_ENV} to the folder holding the shipped weights)") from None
        raise UsageError(f"argument {flag}: {e}: {path}") from None


def loadable_checkpoint(flag: str, path) -> Path:
    """``path`` if torch can load it as a weights-only checkpoint, else :class:`UsageError` naming ``flag``
    (a truncated or foreign file fails here, not after the work started)."""
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file (UnpicklingError, KeyError, RuntimeError...)
        first = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:200]
        raise UsageError(f"argument {flag}: cannot load {path} as weights ({type(e).__name__}{': ' + first if first else ''})") from None
    return Path(path)


def _phantom(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .anatomy.montage import save_montage
    from .anatomy.phantom import make_subject

    out = output_dir("--out", args.out)
    for i in tqdm(range(args.subjects), desc="phantoms", unit="subject"):
        s = make_subject(args.seed + i, args.resolution, lesions=args.lesions, subject_id=f"sub-{args.seed + i:03d}")
        d = s.save(out)
        if args.montage:
            save_montage(s, d / "montage.png")
        tqdm.write(f"{d}  shape {s.shape}  brain {s.brain_mask.sum() * s.voxel_size_mm**3 / 1000:.0f} ml  lesions {[l['type'] for l in s.lesion_list] or 'none'}")
    return 0


def _sample_data(args: argparse.Namespace) -> int:
    output_dir("--out", args.out)
    from .simulate.sample_data import write_anatomy_studies, write_task_studies

    for p in write_anatomy_studies(args.out, subjects=args.subjects, seed=args.seed, resolution_mm=args.resolution):
        print(p)
    for p in write_task_studies(args.out, seed=args.seed, resolution_mm=args.resolution):
        print(p)
    return 0


def _simulate(args: argparse.Namespace) -> int:
    output_dir("--out", args.out)
    from .simulate.driver import simulate

    for p in simulate(args.task, args.out, subjects=args.subjects, seed=args.seed, resolution_mm=args.resolution, compact=args.compact):
        print(p)
    return 0


def _export_pm(args: argparse.Namespace) -> int:
    src = input_file("MAP", args.map)
    if not Path(args.source).expanduser().is_dir():
        raise UsageError(f"argument --source: {args.source}: no such folder")
    out = Path(args.out).expanduser()
    if out.exists():
        raise UsageError(f"argument --out: {out} exists; choose another file")
    from .io.parametric_map import export_map

    path = export_map(src, Path(args.source).expanduser(), out, map_name=args.map_name, series_uid=args.series_uid)
    print(f"Parametric Map -> {path}")
    return 0


def _import(args: argparse.Namespace) -> int:
    src = Path(args.source).expanduser()
    if not src.exists():
        raise UsageError(f"argument SOURCE: {args.source}: no such file or folder")
    from .io.importers import import_bids, import_dicom

    if args.kind == "dicom":
        written = import_dicom(src, args.studies, study_id=args.id, series_uid=args.series_uid, overwrite=args.overwrite, psf_fwhm_mm=args.psf_fwhm_mm)
    else:
        if args.id or args.series_uid or args.psf_fwhm_mm is not None:
            raise UsageError("--id, --series-uid and --psf-fwhm-mm apply to dicom imports only")
        written = import_bids(src, args.studies, overwrite=args.overwrite)
    for p in written:
        meta = json.loads(p.with_name(p.name[: -len(".nii.gz")] + ".json").read_text())
        print(f"{p.name}: task {meta['task']}" + (f", echoes {meta['echo_times_ms']} ms, B0_dir {meta['B0_dir']}" if "echo_times_ms" in meta else ""))
    return 0


def _infer_bids(args: argparse.Namespace) -> int:
    if args.input is not None or args.sidecar is not None or args.map is not None:
        raise UsageError("--bids runs over a dataset: give no INPUT, --sidecar or --map")
    if not Path(args.bids).expanduser().is_dir():
        raise UsageError(f"argument --bids: {args.bids}: no such folder")
    from .bids_infer import infer_bids
    from .networks import compute

    try:
        compute.use(args.device)
    except ValueError as e:
        raise UsageError(f"argument --device: {e}") from None
    run = infer_bids(args.bids, args.task, method=args.method, model_dir=args.model_dir, overwrite=args.overwrite, options=_options(args), chi_method=args.chi_method)
    print(f"{args.task}: {len(run.done)} done, {len(run.skipped)} already done, {len(run.failed)} failed; maps in {Path(args.bids) / 'derivatives' / 'qmri'}")
    for name, why in run.failed.items():
        print(f"  {name}: {why}", file=sys.stderr)
    return 1 if run.failed else 0


def _options(args: argparse.Namespace) -> dict:
    options = {}
    for o in args.option:
        name, eq, value = o.partition("=")
        if not eq or not name:
            raise UsageError(f"argument --option: expected NAME=VALUE, got {o!r}")
        options[name.strip()] = value.strip()
    return options


def _infer(args: argparse.Namespace) -> int:
    if args.model_dir is not None and not Path(args.model_dir).expanduser().is_dir():
        raise UsageError(f"argument --model-dir: {args.model_dir}: no such folder")
    if args.bids is not None:
        return _infer_bids(args)
    if args.input is None:
        raise UsageError("give the INPUT NIfTI, or --bids DATASET")
    image = input_file("INPUT", args.input)
    sidecar = input_file("--sidecar", args.sidecar) if args.sidecar else None
    out = output_dir("--out", args.out)
    from .networks import compute

    try:
        compute.use(args.device)
    except ValueError as e:
        raise UsageError(f"argument --device: {e}") from None
    from .infer_cli import infer

    options = _options(args)
    path, result = infer(args.task, image, out, sidecar=sidecar, method=args.method, maps=args.map, model_dir=args.model_dir, overwrite=args.overwrite, options=options, chi_method=args.chi_method)
    for m in result["maps"]:
        print(f"{m['name']} ({m['units']}): channel {m['channel']}")
    print(f"{result['task']} by {result['method']} in {result['seconds']:.1f} s -> {path}")
    return 0


def _check_bench(args: argparse.Namespace) -> None:
    """Options, weights (existing and loadable; defaults from :mod:`qmri.paths`) and the output
    folder of ``qmri bench``, before the benchmark starts."""
    suite = args.suite
    if args.tasks is not None:
        if suite not in BENCH_TASKS:
            raise UsageError(f"argument --tasks: not used by bench {suite}")
        bad = [t for t in args.tasks if t not in BENCH_TASKS[suite]]
        if bad or not args.tasks:
            raise UsageError(f"argument --tasks: bench {suite} takes {', '.join(BENCH_TASKS[suite])}, got {' '.join(args.tasks) or 'none'}")
    if args.ood != "yes" and suite not in ("qsm", "pvc", "oef"):
        raise UsageError(f"argument --ood: not used by bench {suite}")
    if suite == "oef" and args.ood == "only" and not {"qq_region", "best"} & set(args.tasks or BENCH_TASKS["oef"]):
        raise UsageError("argument --ood: only runs for --tasks qq_region and best (bench_oef_ood.md)")
    if suite == "oef" and args.first_subject >= args.subjects:
        raise UsageError(f"argument --first-subject: must be below --subjects ({args.subjects}), got {args.first_subject}")
    if suite not in BENCH_NETWORK:  # classical (and any suite without a network)
        if args.weights is not None:
            raise UsageError(f"argument --weights: not used by bench {suite}")
    elif suite == "oef":
        wd = Path(args.weights).expanduser() if args.weights else shipped("oefnet")
        where = f"argument --weights: {wd}" if args.weights else f"default --weights {wd}"
        if not wd.is_dir():
            raise UsageError(f"{where}: no such folder" + ("" if args.weights else f" (pass --weights, or set {MODEL_DIR_ENV})"))
        methods = tuple(args.tasks) if args.tasks else BENCH_TASKS["oef"]
        missing = [f"{m}.pt" for m in methods if m not in OEF_CLASSICAL and not (wd / f"{m}.pt").is_file()]
        if missing:
            raise UsageError(f"{where}: lacks {', '.join(missing)} (run `qmri train oef --model cnn3d|lstm|best`)")
        for m in methods:
            if m not in OEF_CLASSICAL:
                loadable_checkpoint("--weights", wd / f"{m}.pt")
        args.weights = str(wd)
    else:
        given = args.weights is not None
        w = input_file("--weights", args.weights if given else shipped(BENCH_NETWORK[suite]), default=not given)
        args.weights = str(loadable_checkpoint("--weights", w))
        if suite == "pvc":  # the network --weights does not replace is always the shipped one
            loadable_checkpoint("--weights", input_file("--weights", shipped("pvcnet"), default=True))
    output_dir("--out", args.out)


def _bench(args: argparse.Namespace) -> int:
    _check_bench(args)
    if args.suite == "classical":
        from .bench.classical import run

        run(args.out, subjects=args.subjects, resolution_mm=args.resolution, tasks=tuple(args.tasks) if args.tasks else None)
    elif args.suite == "qsm":
        if args.ood != "only":
            from .bench.qsm import run

            run(args.out, args.weights, subjects=args.subjects, resolution_mm=args.resolution)
        if args.ood != "no":
            from .bench.qsm_ood import run as run_ood

            run_ood(args.out, args.weights, subjects=1)
    elif args.suite == "pvc":
        from .tasks.pvc import DEFAULT_NETWORK

        weights = {DEFAULT_NETWORK: args.weights} if args.weights else None
        if args.ood != "only":
            from .bench.pvc import run

            run(args.out, weights, subjects=args.subjects, resolution_mm=args.resolution)
        if args.ood != "no":
            from .bench.pvc_ood import run as run_ood

            run_ood(args.out, weights, subjects=1)  # independent simulator, 2 mm, 1 mm, 2x2x3 mm (bench_pvc_ood.md)
    elif args.suite == "synth":
        from .bench.synth import run
        from .bench.synth_ood import run as run_ood

        run(args.out, args.weights, subjects=args.subjects, resolution_mm=args.resolution)
        run_ood(args.out, args.weights, subjects=1)  # 1 mm, other bias field, other noise (bench_synth_ood.md)
    elif args.suite == "oef":
        from .bench.oef import run

        methods = tuple(args.tasks) if args.tasks else BENCH_TASKS["oef"]
        maps = tuple(m for m in methods if m != "qq_region") if args.ood != "only" else ()
        if maps:
            run(
                args.out,
                args.weights,
                subjects=args.subjects,
                resolution_mm=args.resolution,
                other_snr_subjects=args.other_snr_subjects,
                reuse_rows=args.reuse_rows,
                first_subject=args.first_subject,
                methods=maps,
                snrs=tuple(args.snrs),
                noise_draws=args.noise_draws,
            )
        if "qq_region" in methods and args.ood != "only":  # the regional fit answers per region, not per voxel: its own report
            from .bench.oef_regions import run as run_regions

            run_regions(args.out, subjects=args.subjects, snrs=tuple(args.snrs), other_snr_subjects=args.other_snr_subjects, noise_draws=args.noise_draws, resolution_mm=args.resolution)
        if args.ood != "no" and ("qq_region" in methods or "best" in methods):  # independent partial-volume simulator (bench_oef_ood.md)
            from .bench.oef_ood import run as run_ood

            run_ood(args.out, args.weights, subjects=3, with_best="best" in methods)
    elif args.suite == "memory":
        from .bench.memory import run

        run(args.out)
    elif args.suite == "serve" and args.speed:
        from .bench.speed import run

        run(args.out, repeats=args.repeats, resolutions=tuple(args.speed_resolutions), device=args.device, rest=not args.no_rest, tasks=args.speed_tasks)
    elif args.suite == "serve":
        from .bench.serve import run

        res = run(args.out, bad=args.bad_inputs, concurrency=args.concurrency)
        return 0 if all(r["ok"] and r["files_unchanged"] for r in res["bad_inputs"] or []) else 1
    return 0


def _check_train(args: argparse.Namespace) -> None:
    """The output (weights file; oef: folder) and cache folder of ``qmri train``, before any work."""
    if getattr(args, "init", None):
        loadable_checkpoint("--init", args.init)
    if getattr(args, "cache_dir", None):
        output_dir("--cache-dir", args.cache_dir)
    flag = "--out" if args.out is not None else "--out (default)"
    out = args.out if args.out is not None else _train_cli(args.task).default_out(args)
    if args.task == "oef":
        output_dir(flag, out)
    else:
        output_file(flag, out)


def _replay(args: argparse.Namespace) -> int:
    """``qmri train <task> --recipe R``: run the recipe's stages (:mod:`qmri.training.replay`)."""
    from .training import replay

    try:
        recipe = replay.load(args.recipe)
    except ValueError as e:
        raise UsageError(f"argument --recipe: {e}") from None
    if recipe["task"] != args.task:
        raise UsageError(f"argument --recipe: {args.recipe} is a recipe for 'qmri train {recipe['task']}', not {args.task}")
    defaults = vars(_subparser(_subparser(build_parser(), "train"), args.task).parse_args([]))
    extra = sorted(k for k, v in vars(args).items() if k in defaults and k not in ("out", "device", "work", "recipe") and v != defaults[k])
    if extra:
        raise UsageError(f"argument --recipe: replays the recipe's own options; remove --{', --'.join(e.replace('_', '-') for e in extra)} (only --out, --device and --work go with it)")
    out = args.out
    if out is None:  # the default output of the last stage's options (e.g. pvc --condition-fwhm)
        last = _subparser(_subparser(build_parser(), "train"), args.task).parse_args([str(a) for a in recipe["stages"][-1]["args"]])
        last.task = args.task
        _check_train(last)
        out = _train_cli(args.task).default_out(last)
    work = Path(args.work) if args.work else Path(str(out) + ".stages")
    argvs = replay.stage_argvs(recipe, out, work, args.device)
    for i, argv in enumerate(argvs):
        note = recipe["stages"][i].get("note", "")
        log.info("recipe %s: stage %d/%d%s: qmri %s", recipe.get("network", args.recipe), i + 1, len(argvs), f" ({note})" if note else "", " ".join(argv))
        from .training.command import set_argv

        set_argv(argv)
        _train(build_parser().parse_args(argv))
    return 0


def _train_cli(task: str):
    """The command-line module (``qmri.models.<network>.cli``) of training task ``task``."""
    from .models import MODELS

    return next(m.module("cli") for m in MODELS.values() if m.train_task == task)


def _train(args: argparse.Namespace) -> int:
    if getattr(args, "recipe", None):
        return _replay(args)
    _check_train(args)
    _train_cli(args.task).train_command(args)
    return 0


def _models(args: argparse.Namespace) -> int:
    if args.model_dir is not None and not Path(args.model_dir).expanduser().is_dir():
        raise UsageError(f"argument --model-dir: {args.model_dir}: no such folder")
    from .models import MODELS, table

    if args.json:
        print(json.dumps(table(args.model_dir), indent=1))
        return 0
    for m in MODELS.values():
        print(f"{m.name}: {m.description}")
        print(f"  tasks: {', '.join(m.tasks)}; train: {m.train_command} (--recipe {' | '.join(m.recipes)})")
        print("  code: " + ", ".join(f"{role} {mod}" for role, mod in m.modules.items()))
        for row in table(args.model_dir):
            if row["network"] == m.name:
                sha = (row["sha256"] or "")[:12] or "MISSING"
                print(f"  weights: {row['weights']} (version {row['version']}, sha256 {sha})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="qmri", description="Quantitative brain imaging: phantoms, physics, methods.")
    ap.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    ap.add_argument("--debug", action="store_true", help="show the Python traceback of any error (also: QMRI_DEBUG=1)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars or progress logging (warnings and errors only)")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("phantom", help="generate digital head phantoms from the MNI152 anatomy")
    p.add_argument("--subjects", type=positive_int, default=1, help="number of subjects (default 1)")
    p.add_argument("--resolution", type=positive_float, default=2.0, help="isotropic voxel size in mm (default 2)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the first subject; subject i uses seed+i")
    p.add_argument("--lesions", choices=("auto", "none", "all"), default="auto", help="lesion draw (default auto)")
    p.add_argument("--out", required=True, help="output folder (one sub-<seed> folder per subject)")
    p.add_argument("--montage", action="store_true", help="also write montage.png per subject")
    p.set_defaults(func=_phantom)

    p = sub.add_parser("sample-data", help="regenerate the bundled sample data (anatomy and studies)")
    p.add_argument("--out", default="sample-data", help="sample-data folder (default: sample-data in the working directory)")
    p.add_argument("--subjects", type=positive_int, default=3)
    p.add_argument("--seed", type=nonneg_int, default=1000)
    p.add_argument("--resolution", type=positive_float, default=2.0, help="voxel size in mm (default 2)")
    p.set_defaults(func=_sample_data)

    p = sub.add_parser("simulate", help="simulate studies of one task (truth in labels/final)")
    p.add_argument("task", choices=("oef", "qsm", "pvc", "synth"))
    p.add_argument("--subjects", type=positive_int, default=1)
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the first subject; subject i uses seed+i")
    p.add_argument("--resolution", type=positive_float, default=2.0, help="voxel size in mm (default 2)")
    p.add_argument("--out", required=True, help="studies folder to write into")
    p.add_argument("--compact", action="store_true", help="store floats as scaled int16 (about 3x smaller)")
    p.set_defaults(func=_simulate)

    p = sub.add_parser("infer", help="one task's maps from a NIfTI file, without a server (the server's task code)")
    p.add_argument("task", choices=INFER_TASKS)
    p.add_argument("input", nargs="?", default=None, help="input NIfTI (the task's layout: see the README's task table); or --bids")
    p.add_argument("--bids", default=None, metavar="DATASET", help="run over every matching acquisition of a BIDS dataset, writing DATASET/derivatives/qmri/ (resumable)")
    p.add_argument(
        "--chi-method", default=None, help="oef: with --bids, which susceptibility derivative (desc) to use (default: any); on a qsm_raw study (e.g. from 'qmri import dicom'), the qsm_raw method that computes it first (default: that task's default)"
    )
    p.add_argument("--sidecar", default=None, help="JSON sidecar (default: the .json beside the input)")
    p.add_argument("--method", default=None, help="method (default: the task's default; an unknown one lists the choices)")
    p.add_argument("--map", nargs="+", default=None, help="only these output maps (default: all)")
    p.add_argument("--out", default=".", help="output folder (default: the working directory)")
    p.add_argument("--model-dir", default=None, help=f"folder of the network weights (default {model_dir()}, ${MODEL_DIR_ENV} overrides)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output of the same input, task and method")
    p.add_argument("--device", default="auto", help="where networks and torch solvers run: auto (CUDA when present, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE", help="a task option, e.g. tta=2 for the synthesis tasks (their choices: qmri models, or the server's /info)")
    p.set_defaults(func=_infer)

    p = sub.add_parser("export-pm", help="a result map as a DICOM Parametric Map (float values, UCUM units) referencing its source series")
    p.add_argument("map", help="a result NIfTI of qmri infer (its JSON beside it names maps and units), on the source series' grid")
    p.add_argument("--source", required=True, help="the DICOM folder the map was computed from")
    p.add_argument("--out", required=True, help="the Parametric Map file to write (.dcm)")
    p.add_argument("--map-name", default=None, help="which map of a multi-map result (default: the first)")
    p.add_argument("--series-uid", default=None, help="the referenced source series (default: the folder's only magnitude series)")
    p.set_defaults(func=_export_pm)

    p = sub.add_parser("import", help="scanner data (a DICOM folder or a BIDS dataset) -> studies in the app's layout")
    p.add_argument("kind", choices=("dicom", "bids"))
    p.add_argument("source", help="DICOM folder (a multi-echo GRE acquisition, CT, PET and T2-weighted MR series) or BIDS dataset root")
    p.add_argument("--studies", required=True, help="studies folder to write (e.g. the server's STUDIES)")
    p.add_argument("--id", default=None, help="dicom: study id when one study is written (default: the folder's name + _qsmraw, _ct, _pet or _t2w)")
    p.add_argument("--series-uid", default=None, help="dicom: only the acquisition containing this series")
    p.add_argument("--psf-fwhm-mm", type=float, default=None, help="dicom: the PET scanner's resolution (FWHM, mm), recorded for PVC")
    p.add_argument("--overwrite", action="store_true", help="replace existing studies of the same id")
    p.set_defaults(func=_import)

    p = sub.add_parser("models", help="the shipped networks: tasks, code modules, weights (version, sha256) and recipes")
    p.add_argument("--model-dir", default=None, help=f"folder of the network weights (default {model_dir()}, ${MODEL_DIR_ENV} overrides)")
    p.add_argument("--json", action="store_true", help="print the weights table as JSON")
    p.set_defaults(func=_models)

    p = sub.add_parser("train", help="train a task's network on phantoms and write its weights + model card")
    tsub = p.add_subparsers(dest="task", required=True, metavar="TASK")
    from .models import MODELS  # the registry; each network's cli module is torch-free

    for m in MODELS.values():
        module = m.module("cli")
        tp = tsub.add_parser(m.train_task, help=f"train {module.HELP}")
        module.add_arguments(tp)
        tp.add_argument(
            "--recipe", default=None, help="replay a shipped network's training (a name in lib/qmri/models/<network>/recipes/, e.g. qsmnet, synthnet, or a .json file): its options for every stage; only --out, --device and --work may be given with it"
        )
        tp.add_argument("--work", default=None, help="with a multi-stage --recipe: folder for the intermediate stages' weights (default: <out>.stages beside --out)")
        tp.set_defaults(func=_train)

    p = sub.add_parser("bench", help="benchmark methods on held-out phantoms (prints and saves tables)")
    p.add_argument(
        "suite",
        choices=("classical", "qsm", "pvc", "synth", "oef", "memory", "serve"),
        help="memory: peak memory per input value of every task and method (the server's memory admission); serve: the server on a copy of the sample studies, under bad input and load (see --bad-inputs, --concurrency)",
    )
    p.add_argument("--weights", default=None, help=f"network weights file (oef: the folder with best/cnn3d/lstm.pt; default: the shipped ones in the app's model folder {model_dir()}, ${MODEL_DIR_ENV} overrides)")
    p.add_argument("--other-snr-subjects", type=nonneg_int, default=1, help="oef: subjects also run at SNR 50 and 200 (all run at 100)")
    p.add_argument("--snrs", nargs="+", type=positive_float, default=[50.0, 100.0, 200.0], help="oef: echo-1 SNRs (100, the main one, on every subject; the others on --other-snr-subjects)")
    p.add_argument("--noise-draws", type=positive_int, default=4, help="oef: noise draws of the first subject at SNR 100 (whole-brain mean spread; best, cnn3d)")
    p.add_argument(
        "--ood",
        choices=("yes", "no", "only"),
        default="yes",
        help="qsm, pvc, oef: also run the out-of-distribution cases (qsm: qsm-forward fields, independent tissue model, 1 mm, 1x1x3 mm, cylinders, bench_qsm_ood.md; pvc: an independent PET simulator at 2 mm, 1 mm and 2x2x3 mm, bench_pvc_ood.md; oef: an independent simulator with partial-volume voxels, for qq_region and best, bench_oef_ood.md; minutes at 1 mm), skip them, or run only them (default yes)",
    )
    p.add_argument("--reuse-rows", action="store_true", help="oef: reuse stored results of the methods not in --tasks (see bench_oef_rows.json)")
    p.add_argument(
        "--tasks",
        nargs="*",
        choices=tuple(dict.fromkeys(BENCH_TASKS["classical"] + BENCH_TASKS["oef"])),
        metavar="TASK",
        help=f"classical: subset of tasks {' '.join(BENCH_TASKS['classical'])}; oef: subset of methods {' '.join(BENCH_TASKS['oef'])} (default all)",
    )
    p.add_argument("--subjects", type=positive_int, default=2)
    p.add_argument("--first-subject", type=nonneg_int, default=0, help="oef: skip the first subjects (with --reuse-rows: add subjects to a stored run)")
    p.add_argument("--resolution", type=positive_float, default=2.0, help="voxel size in mm (default 2)")
    p.add_argument("--bad-inputs", action="store_true", help="serve: send the bad-input catalogue and tabulate the answers")
    p.add_argument("--concurrency", type=nonneg_int, default=16, help="serve: parallel inferences of the load test (0: none; default 16)")
    p.add_argument("--speed", action="store_true", help="serve: time every task's default method in-process and over REST at 2 and 1 mm (bench_speed.md)")
    p.add_argument("--speed-resolutions", nargs="+", type=float, choices=(2.0, 1.0), default=[2.0, 1.0], help="serve --speed: voxel sizes (mm; default 2 1)")
    p.add_argument("--speed-tasks", nargs="+", default=None, choices=("qsm", "qsm_raw", "oef", "pvc", "synthetic_ct", "synthetic_mr"), help="serve --speed: only these tasks")
    p.add_argument("--repeats", type=positive_int, default=5, help="serve --speed: warm runs per case (median; default 5)")
    p.add_argument("--no-rest", action="store_true", help="serve --speed: in-process only")
    p.add_argument("--device", default="auto", help="serve --speed: auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--out", default="bench-results", help="output folder for markdown and JSON (default: bench-results in the working directory)")
    p.set_defaults(func=_bench)
    return ap


#: errors of bad input raised while a command works (exit 2) and runtime failures (exit 1); any other
#: exception is a bug and keeps its traceback
INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError, PermissionError, pickle.UnpicklingError, EOFError)
RUNTIME_ERRORS = (OSError, RuntimeError, MemoryError)


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror and e.filename:
        return f"{e.strerror}: {e.filename}"
    return str(e) or type(e).__name__


def _subparser(ap: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    action = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    from .training.command import set_argv

    set_argv(sys.argv[1:] if argv is None else argv)  # model cards name the command that ran
    # long commands (training, benchmarks, sample data, inference, imports) report progress by default; the others only with -v
    chatty = (args.verbose or args.command in ("train", "bench", "sample-data", "infer", "import")) and not args.quiet
    logging.basicConfig(level=logging.INFO if chatty else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.quiet:
        os.environ["TQDM_DISABLE"] = "1"  # tqdm reads its defaults from TQDM_* variables: every bar off
    debug = args.debug or os.environ.get("QMRI_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except UsageError as e:
        if debug:
            raise
        _subparser(ap, args.command).error(str(e))  # usage + "qmri <command>: error: ...", exit 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("qmri: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        if isinstance(e, INPUT_ERRORS) or type(e).__name__ == "ImageFileError":  # nibabel's, not imported here
            print(f"qmri: error: {_describe(e)}", file=sys.stderr)
            return 2
        if isinstance(e, RUNTIME_ERRORS):
            print(f"qmri: error: {type(e).__name__}: {_describe(e)} (qmri --debug shows the traceback)", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
