"""Replayable recipes: every shipped network's training as a file that ``qmri train <task> --recipe`` replays."""

from __future__ import annotations

import json

import pytest

from qmri import cli
from qmri.training import replay


@pytest.mark.parametrize("name", replay.names())
def test_every_shipped_recipe_parses_with_todays_options(name, tmp_path):
    r = replay.load(name)
    argvs = replay.stage_argvs(r, tmp_path / "out.pt", tmp_path / "work")
    ap = cli.build_parser()
    for argv in argvs:
        if "--init" in argv:  # the previous stage's weights exist when a stage starts
            init = tmp_path / argv[argv.index("--init") + 1]
            init.parent.mkdir(parents=True, exist_ok=True)
            init.touch()
        a = ap.parse_args(argv)  # an option renamed or removed since the recipe was written fails here
        assert a.task == r["task"]
    assert argvs[-1][argvs[-1].index("--out") + 1] == str(tmp_path / "out.pt")
    for prev, cur in zip(argvs, argvs[1:]):  # each stage fine-tunes the previous one's weights
        assert cur[cur.index("--init") + 1] == prev[prev.index("--out") + 1]


def test_the_recipes_cover_the_shipped_networks():
    assert {"qsmnet", "pvcnet", "pvcnet_fwhm", "synthnet", "oef_best", "oef_cnn3d", "oef_lstm"} <= set(replay.names())
    assert len(replay.load("synthnet")["stages"]) == 12  # stage 0 (H100) and the 11 CPU stages


def _refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_recipe_misuse_is_a_usage_error(tmp_path, capsys):
    assert "is a recipe for 'qmri train synth', not qsm" in _refused(["train", "qsm", "--recipe", "synthnet", "--out", str(tmp_path / "w.pt")], capsys)
    assert "remove --epochs" in _refused(["train", "qsm", "--recipe", "qsmnet", "--epochs", "3", "--out", str(tmp_path / "w.pt")], capsys)
    assert "no recipe 'nosuch'; shipped recipes: oef_best" in _refused(["train", "qsm", "--recipe", "nosuch"], capsys)


def test_a_two_stage_recipe_chains_its_stages(tmp_path):
    """Stage 2 fine-tunes stage 1's weights: its model card records --init <stage 1>."""
    tiny = ["--train-subjects", "1", "--val-subjects", "1", "--epochs", "1", "--steps", "1", "--batch", "1", "--resolution", "4"]
    f = tmp_path / "tiny.json"
    f.write_text(json.dumps({"network": "tiny", "task": "qsm", "stages": [{"args": tiny}, {"args": tiny + ["--lr", "1e-4"]}]}))
    out = tmp_path / "net" / "qsmnet.pt"
    assert cli.main(["train", "qsm", "--recipe", str(f), "--out", str(out), "--device", "cpu"]) == 0
    stage0 = tmp_path / "net" / "qsmnet.pt.stages" / "stage0.pt"
    assert stage0.exists() and out.exists()
    meta = json.loads((out.parent / "metadata.json").read_text())["models"]["qsmnet.pt"]
    assert meta["recipe"]["train_subjects"] == ["qsm-20000"]
    assert meta["command"] == f"qmri train qsm {' '.join(tiny)} --lr 1e-4 --out {out} --init {stage0} --device cpu"


@pytest.mark.parametrize("name", ["qsmnet", "pvcnet", "synthnet", "oef_best"])
def test_each_server_trainer_takes_its_defaults_from_the_recipe(name):
    """One source of defaults: ``POST /train`` fine-tunes with the recipe file's ``fine_tune`` section."""
    ft = replay.fine_tune(name)
    assert all(k in ft for k in replay.FINE_TUNE_KEYS) and 0 < ft["lr"] <= 1e-3


def test_bare_train_synth_is_the_stable_recipe_not_the_adversarial_one():
    """``qmri train synth`` without options trains what the shipped weights were trained with (every
    step generator-only, the final stage's loss weights), and so does the server's fine-tune."""
    a = cli.build_parser().parse_args(["train", "synth"])
    final = cli.build_parser().parse_args(["train", "synth", *replay.load("synthnet")["stages"][-1]["args"]])
    assert a.pretrain_steps >= a.epochs * a.steps  # the adversarial phase never begins
    loss = ("backtranslation", "pseudo_weight", "backtranslation_ssim", "backtranslation_hybrid", "hybrid_brain")
    assert {k: getattr(a, k) for k in loss} == {k: getattr(final, k) for k in loss} == {k: replay.fine_tune("synthnet")[k] for k in loss}


def test_synth_stages_name_every_loss_option():
    """The replay of a stage must not change when a default does: each stage names its loss options."""
    for st in replay.load("synthnet")["stages"]:
        for opt in ("--pretrain-steps", "--pretrain-lr", "--backtranslation", "--pseudo-weight", "--backtranslation-ssim", "--backtranslation-hybrid", "--hybrid-brain"):
            assert opt in st["args"], (st.get("note"), opt)
