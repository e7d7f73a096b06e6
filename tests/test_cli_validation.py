"""The ``qmri`` command line refuses bad input before working, with a message instead of a traceback.

Each case runs the real CLI (``python -m qmri.cli``, the module behind the ``qmri`` entry point) in a
subprocess from a temporary working directory, and checks the exit code, that stderr names the
option and its value, that there is no traceback, and that it failed fast (before any work).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAST_S = 20.0  # a refusal must come before any work (phantoms, training, benchmarks take minutes)


def qmri(*args: str, cwd: Path, env: dict | None = None) -> tuple[int, str, float]:
    """Run ``python -m qmri.cli ARGS`` in ``cwd``: (exit code, stderr, seconds)."""
    e = {k: v for k, v in os.environ.items() if k not in ("QMRI_MODEL_DIR", "QMRI_DEBUG")}
    e.update(env or {})
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "qmri.cli", *args], cwd=cwd, env=e, capture_output=True, text=True, timeout=120)
    return p.returncode, p.stderr, time.monotonic() - t0


def refused(args, cwd, *expected: str, code: int = 2, env: dict | None = None) -> str:
    rc, err, s = qmri(*args, cwd=cwd, env=env)
    assert rc == code, (args, rc, err)
    assert "Traceback" not in err, err
    for text in expected:
        assert text in err, (args, text, err)
    assert s < FAST_S, (args, s)
    return err


# -- counts, seeds, sizes and choices: argparse types ------------------------------------------------

BAD_VALUES = [
    (["phantom", "--subjects", "-1", "--out", "o"], "--subjects", "must be a positive integer, got -1"),
    (["phantom", "--subjects", "0", "--out", "o"], "--subjects", "got 0"),
    (["phantom", "--seed", "-3", "--out", "o"], "--seed", "must be a non-negative integer, got -3"),
    (["phantom", "--resolution", "0", "--out", "o"], "--resolution", "must be a positive number, got 0"),
    (["simulate", "qsm", "--subjects", "0", "--out", "o"], "--subjects", "got 0"),
    (["simulate", "pvc", "--resolution", "nan", "--out", "o"], "--resolution", "got nan"),
    (["sample-data", "--subjects", "-2"], "--subjects", "got -2"),
    (["bench", "qsm", "--subjects", "0"], "--subjects", "got 0"),
    (["bench", "oef", "--other-snr-subjects", "-1"], "--other-snr-subjects", "got -1"),
    (["bench", "classical", "--resolution", "-2"], "--resolution", "got -2"),
    (["bench", "oef", "--subjects", "2", "--first-subject", "2"], "--first-subject", "must be below --subjects (2), got 2"),
    (["train", "qsm", "--epochs", "0"], "--epochs", "got 0"),
    (["train", "pvc", "--steps", "-5"], "--steps", "got -5"),
    (["train", "synth", "--batch", "0"], "--batch", "got 0"),
    (["train", "qsm", "--train-subjects", "0"], "--train-subjects", "got 0"),
    (["train", "pvc", "--workers", "0"], "--workers", "got 0"),
    (["train", "qsm", "--lr", "-0.001"], "--lr", "got -0.001"),
    (["train", "synth", "--ema-decay", "1.5"], "--ema-decay", "got 1.5"),
    (["train", "synth", "--loss-weights", "{bad"], "--loss-weights", "got {bad"),
    (["train", "synth", "--val-slices", "2"], "--val-slices", "at least 7 (the SSIM window), got 2"),
    (["train", "pvc", "--channels", "16,x"], "--channels", "got 16,x"),
    (["train", "oef", "--voxels", "0"], "--voxels", "got 0"),
    (["train", "qsm", "--device", "gpu"], "--device", "got gpu"),
    (["train", "oef", "--model", "foo"], "--model", "invalid choice: 'foo'"),
    (["simulate", "nosuch", "--out", "o"], "task", "invalid choice: 'nosuch'"),
    (["bench", "classical", "--tasks", "nosuch"], "--tasks", "invalid choice: 'nosuch'"),
    (["bench", "classical", "--tasks", "lstm"], "--tasks", "bench classical takes synth, pvc, qsm, oef, got lstm"),
    (["bench", "qsm", "--tasks", "oef"], "--tasks", "not used by bench qsm"),
    (["bench", "classical", "--weights", "w.pt"], "--weights", "not used by bench classical"),
    (["bench", "synth", "--ood", "only"], "--ood", "not used by bench synth"),
    (["bench", "qsm", "--ood", "maybe"], "--ood", "invalid choice: 'maybe'"),
    (["bench", "oef", "--tasks", "cnn3d", "--ood", "only"], "--ood", "only runs for --tasks qq_region and best"),
    (["train", "qsm", "--randomised", "1.5"], "--randomised", "must be a number in [0, 1], got 1.5"),
]


@pytest.mark.parametrize("args,flag,message", BAD_VALUES, ids=[" ".join(a) for a, _, _ in BAD_VALUES])
def test_bad_values_are_usage_errors(tmp_path, args, flag, message):
    refused(args, tmp_path, f"argument {flag}: ", message, "usage: qmri")
    assert not (tmp_path / "o").exists() and not (tmp_path / "bench-results").exists()  # nothing written


# -- output folders: checked (created, probed) before working ----------------------------------------

UNWRITABLE = [
    ["phantom", "--out", "/dev/null/x"],
    ["simulate", "oef", "--out", "/dev/null/x"],
    ["sample-data", "--out", "/dev/null/x"],
    ["bench", "classical", "--out", "/dev/null/x"],
    ["train", "oef", "--out", "/dev/null/x"],  # oef: the weights folder itself
    ["train", "qsm", "--out", "/dev/null/x/qsmnet.pt"],  # others: the weights file's folder
]


@pytest.mark.parametrize("args", UNWRITABLE, ids=[" ".join(a) for a in UNWRITABLE])
def test_unwritable_output_is_refused_before_work(tmp_path, args):
    refused(args, tmp_path, f"cannot write to --out {args[-1]}: ", "Not a directory")


def test_output_that_is_a_file_and_unwritable_cache_are_refused(tmp_path):
    (tmp_path / "f").write_text("")
    refused(["simulate", "qsm", "--out", "f"], tmp_path, "cannot write to --out f: exists and is not a folder")
    refused(["train", "synth", "--out", "w.pt", "--cache-dir", "/dev/null/c"], tmp_path, "cannot write to --cache-dir /dev/null/c")


def test_writable_dir_creates_parents_and_leaves_no_probe(tmp_path):
    from qmri.cli_args import PathError, writable_dir, writable_file

    d = writable_dir(tmp_path / "a" / "b")
    assert d.is_dir() and list(d.iterdir()) == []
    assert writable_file(tmp_path / "c" / "w.pt") == tmp_path / "c" / "w.pt" and (tmp_path / "c").is_dir()
    with pytest.raises(PathError, match="is a folder"):
        writable_file(tmp_path / "c")


# -- weights: exist, are files (oef: a folder with the checkpoints) and load ---------------------------


def test_missing_and_bad_weights_are_refused(tmp_path):
    for suite in ("qsm", "synth", "pvc"):
        refused(["bench", suite, "--weights", "/missing"], tmp_path, "argument --weights: no such file: /missing")
    refused(["bench", "qsm", "--weights", str(tmp_path)], tmp_path, f"argument --weights: not a file: {tmp_path}")
    (tmp_path / "empty").mkdir()
    refused(["bench", "oef", "--weights", "empty"], tmp_path, "argument --weights: empty: lacks lstm.pt, cnn3d.pt, best.pt")
    refused(["train", "pvc", "--init", "/missing.pt"], tmp_path, "argument --init: no such file: /missing.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    refused(["bench", "synth", "--weights", "junk.pt"], tmp_path, "argument --weights: cannot load junk.pt as weights")
    assert not (tmp_path / "bench-results").exists()


# -- default weights: the app's model folder, whatever the working directory -------------------------


def test_default_weights_resolve_from_another_working_directory(tmp_path):
    """Run from ``tmp_path`` (not the repository): the default weights are found and load, so the
    command gets as far as its (unwritable) output folder, and stops there."""
    assert not (tmp_path / "apps").exists()
    for suite in ("qsm", "pvc", "synth", "oef"):
        err = refused(["bench", suite, "--out", "/dev/null/x"], tmp_path, "cannot write to --out /dev/null/x")
        assert "weights" not in err.strip().splitlines()[-1]


def test_model_dir_override(tmp_path):
    refused(["bench", "qsm"], tmp_path, f"default --weights {tmp_path / 'none' / 'qsmnet' / 'qsmnet.pt'}: no such file", "QMRI_MODEL_DIR", env={"QMRI_MODEL_DIR": str(tmp_path / "none")})
    refused(["bench", "oef"], tmp_path, f"default --weights {tmp_path / 'none' / 'oefnet'}: no such folder", env={"QMRI_MODEL_DIR": str(tmp_path / "none")})
    # training's default output is the model folder too
    refused(["train", "oef"], tmp_path, "cannot write to --out (default) /dev/null/m/oefnet", env={"QMRI_MODEL_DIR": "/dev/null/m"})
    refused(["train", "pvc", "--condition-fwhm"], tmp_path, "cannot write to --out (default) /dev/null/m/pvcnet_fwhm/pvcnet_fwhm.pt", env={"QMRI_MODEL_DIR": "/dev/null/m"})
    assert not (tmp_path / "none").exists()


def test_every_default_weights_path_comes_from_the_model_folder(monkeypatch, tmp_path):
    from qmri import paths
    from qmri.bench.pvc import shipped_weights
    from qmri.models.oefnet import cli as oef_cli
    from qmri.models.pvcnet import cli as pvc_cli
    from qmri.models.qsmnet import cli as qsm_cli
    from qmri.models.synthnet import cli as synth_cli

    model = REPO / "apps" / "qmri" / "model"
    monkeypatch.delenv(paths.MODEL_DIR_ENV, raising=False)
    assert paths.model_dir() == model
    from qmri.models import MODELS, shipped

    for m in MODELS.values():
        for w in m.weights:
            assert shipped(Path(w).stem) == model / w and shipped(Path(w).stem).exists(), w
    assert shipped("oefnet") == model / "oefnet" and shipped("oefnet").is_dir()
    with pytest.raises(ValueError, match="unknown network 'nope'; choose from qsmnet, pvcnet_fwhm"):
        shipped("nope")
    monkeypatch.setenv(paths.MODEL_DIR_ENV, str(tmp_path))
    assert qsm_cli.default_out() == tmp_path / "qsmnet" / "qsmnet.pt"
    assert synth_cli.default_out() == tmp_path / "synthnet" / "synthnet.pt"
    assert pvc_cli.default_out() == tmp_path / "pvcnet" / "pvcnet.pt"
    assert pvc_cli.default_out(argparse.Namespace(condition_fwhm=True)) == tmp_path / "pvcnet_fwhm" / "pvcnet_fwhm.pt"
    assert oef_cli.default_out() == tmp_path / "oefnet"
    assert shipped_weights() == {"pvcnet": tmp_path / "pvcnet" / "pvcnet.pt", "pvcnet_fwhm": tmp_path / "pvcnet_fwhm" / "pvcnet_fwhm.pt"}
    src = "\n".join(p.read_text() for p in [REPO / "lib/qmri/cli.py", *(REPO / "lib/qmri/bench").glob("*.py"), *(REPO / "lib/qmri/models").glob("*/cli.py")])
    assert '"apps/qmri/model' not in src and 'Path("apps' not in src


def test_parser_constants_match_the_modules_and_build_without_torch():
    from qmri import cli
    from qmri.bench import classical, oef
    from qmri.metrics.synthrad import SSIM_WIN
    from qmri.tasks.pvc import DEFAULT_NETWORK
    from qmri.models.synthnet import cli as synth_cli
    from qmri.models.synthnet import train as synth_train

    assert cli.BENCH_TASKS == {"classical": tuple(classical.BENCHES), "oef": tuple(oef.METHODS)}
    assert cli.BENCH_NETWORK["pvc"] == DEFAULT_NETWORK
    from qmri.tasks.registry import TASKS

    assert cli.INFER_TASKS == TASKS
    from qmri.models.pvcnet import net as pvcnet
    from qmri.models.pvcnet import cli as pvc_cli

    assert pvc_cli.DEFAULT_CHANNELS == tuple(pvcnet.DEFAULT_CHANNELS) and pvc_cli.RESIDUALS == tuple(pvcnet.RESIDUALS)
    assert synth_cli.HYBRID_BRAIN == tuple(synth_train.HYBRID_BRAIN)
    assert synth_cli.SSIM_WIN == SSIM_WIN
    code = "import sys, qmri.cli; qmri.cli.build_parser(); assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_each_train_task_owns_its_options_and_defaults(capsys):
    """``qmri train <task>`` parses with that task's own defaults (one source: its *_cli module) and
    refuses another task's options."""
    from qmri import cli

    ap = cli.build_parser()
    synth = ap.parse_args(["train", "synth"])
    pvc = ap.parse_args(["train", "pvc"])
    qsm = ap.parse_args(["train", "qsm"])
    assert (synth.train_subjects, synth.epochs, synth.steps) == (4, 30, 100)
    assert (pvc.train_subjects, pvc.batch, pvc.lr, pvc.patch) == (6, 2, 1e-3, 64)
    assert (qsm.epochs, qsm.steps, qsm.lr, qsm.randomised) == (20, 40, 1e-3, 0.0)
    with pytest.raises(SystemExit):
        ap.parse_args(["train", "qsm", "--patch", "32"])
    assert "unrecognized arguments: --patch 32" in capsys.readouterr().err


# -- errors while working: "qmri: error:" and an exit code, no traceback (unless --debug) ------------


def test_errors_while_working_are_messages(monkeypatch, capsys, tmp_path):
    import qmri.anatomy.phantom as phantom
    from qmri.cli import main

    def fail(exc):
        def make_subject(*a, **k):
            raise exc

        monkeypatch.setattr(phantom, "make_subject", make_subject)

    args = ["phantom", "--out", str(tmp_path / "o")]
    monkeypatch.delenv("QMRI_DEBUG", raising=False)
    fail(ValueError("lesion draw failed"))
    assert main(args) == 2 and "qmri: error: lesion draw failed" in capsys.readouterr().err
    fail(FileNotFoundError(2, "No such file or directory", "/x/mni.nii.gz"))
    assert main(args) == 2 and "qmri: error: No such file or directory: /x/mni.nii.gz" in capsys.readouterr().err
    fail(RuntimeError("CUDA out of memory"))
    assert main(args) == 1 and "qmri: error: RuntimeError: CUDA out of memory" in capsys.readouterr().err
    fail(KeyError("bug"))  # a genuine bug keeps its traceback
    with pytest.raises(KeyError):
        main(args)
    fail(ValueError("shown with its traceback"))
    with pytest.raises(ValueError):
        main(["--debug", *args])


def test_argument_types():
    from qmri import cli_args as ca

    assert ca.positive_int("3") == 3 and ca.nonneg_int("0") == 0 and ca.positive_float("0.5") == 0.5
    assert ca.int_list("16,32") == "16,32" and ca.json_weights('{"pix": 100}') == '{"pix": 100}' and ca.device_name("cuda:1") == "cuda:1"
    for fn, bad in ((ca.positive_int, "1.5"), (ca.positive_int, "x"), (ca.nonneg_int, "-1"), (ca.positive_float, "inf"), (ca.nonneg_float, "-0.1"), (ca.unit_interval, "1"), (ca.json_weights, "[1]"), (ca.json_weights, '{"pix": -1}')):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(f"got {bad}")):
            fn(bad)
