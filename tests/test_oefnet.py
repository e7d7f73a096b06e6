"""OEF networks: the seed-000 schedule, the seed-001 sequence, shipped weights, trainer over REST, echo-time 4xx."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
import torch

from conftest import REPO, SAMPLE
from qmri.models.oefnet import net as oef_nets
from qmri.models.oefnet.predict import load_oef_net, predict_oef
from qmri.physics.qq import PARAM_LOWER, PARAM_UPPER, QQNET_TE_S, oef_from_y
from qmri.models.oefnet.train import OEFRecipe, physics_residual, warmup_cosine_restarts_factor

WEIGHTS = REPO / "apps" / "qmri" / "model" / "oefnet"
STUDY = SAMPLE / "studies" / "sub-1000_oef.nii.gz"


def test_schedule_matches_seed_000_at_chosen_steps():
    """CosineAnnealingWarmupRestarts: 100 warm-up steps, 1000-step cycles, cycle_mult 1, peak x0.9 per cycle."""
    f = warmup_cosine_restarts_factor
    floor = 0.01
    assert f(0) == pytest.approx(floor)
    assert f(50) == pytest.approx(floor + (1 - floor) * 0.5)  # halfway through the linear warm-up
    assert f(100) == pytest.approx(1.0)  # peak = base lr 1e-3
    assert f(550) == pytest.approx(floor + (1 - floor) * 0.5)  # half of the 900-step cosine
    assert f(999) == pytest.approx(floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * 899 / 900)))
    assert f(1000) == pytest.approx(floor)  # restart: warm-up again
    assert f(1100) == pytest.approx(0.9)  # second cycle peaks at 0.9
    assert f(2100) == pytest.approx(0.81)  # third at 0.9^2 (cycles stay 1000 steps long)
    # the recipe's LambdaLR drives Adam's lr exactly so
    net = torch.nn.Linear(2, 2)
    rec = OEFRecipe.__new__(OEFRecipe)
    rec.arch = "cnn3d"
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = rec.scheduler(opt, 5000)
    lrs = []
    for _ in range(1101):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[100] == pytest.approx(1e-3) and lrs[1100] == pytest.approx(0.9e-3) and lrs[1000] == pytest.approx(1e-5)


def test_lstm_sequence_construction_and_layers():
    x = np.arange(9, dtype=np.float32)[None]
    seq = oef_nets.to_sequence(x)
    assert seq.shape == (1, 5, 5)
    np.testing.assert_array_equal(seq[0], [[0, 1, 2, 3, 4], [1, 2, 3, 4, 5], [2, 3, 4, 5, 6], [3, 4, 5, 6, 7], [4, 5, 6, 7, 8]])
    np.testing.assert_array_equal(oef_nets.to_sequence(torch.from_numpy(x)).numpy(), seq)
    with pytest.raises(ValueError):
        oef_nets.to_sequence(np.zeros((1, 8)))
    net = oef_nets.OEFLSTM()
    assert [m.hidden_size for m in net.lstms] == [512, 256, 128, 64]
    assert [m.negative_slope for m in net.head if isinstance(m, torch.nn.LeakyReLU)] == [0.01] * 3
    assert sum(isinstance(m, torch.nn.Linear) for m in net.head) == 4  # 3 Dense + 5-unit output
    assert net(torch.randn(7, 9)).shape == (7, 5)


def test_cnn3d_structure_and_bounded_unet():
    net = oef_nets.cnn3d()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(9, 16), (16, 32), (32, 64), (64, 5)]
    assert sum(isinstance(m, torch.nn.LeakyReLU) for m in net.modules()) == 3
    assert not any(isinstance(m, (torch.nn.BatchNorm3d, torch.nn.Dropout, torch.nn.InstanceNorm3d)) for m in net.modules())
    unet = oef_nets.BoundedUNet((4, 4, 8, 8, 8, 4)).eval()
    with torch.no_grad():
        for w in unet.unet.final_conv.parameters():
            w.fill_(50.0)  # drive the sigmoid to saturation: outputs must stay inside the bounds
        p = oef_nets.denormalise(unet(torch.randn(1, 9, 32, 32, 32)).movedim(1, -1)).numpy()
    assert np.all(p >= PARAM_LOWER - 1e-4) and np.all(p <= PARAM_UPPER + 1e-4)


def test_context_network_features_are_brain_masked_averages():
    net = oef_nets.ContextNet().eval()
    x = torch.zeros(1, 9, 20, 20, 20)
    x[:, :, 4:16, 4:16, 4:16] = torch.arange(1, 10, dtype=torch.float32).view(1, 9, 1, 1, 1)  # constant inside a "brain"
    f = net.features(x)
    assert f.shape == (1, 9 * 6 + 5, 20, 20, 20)
    inside = f[0, :, 4:16, 4:16, 4:16]
    for k in range(5):  # each scale's average of a constant is the constant, up to the brain edge
        block = inside[9 + 10 * k : 18 + 10 * k]
        assert torch.allclose(block, torch.arange(1, 10, dtype=torch.float32).view(9, 1, 1, 1).expand_as(block), atol=1e-4)
    assert torch.all(f[0, :, :4] == 0)  # nothing outside the brain
    with torch.no_grad():
        p = oef_nets.denormalise(net(x).movedim(1, -1)).numpy()
    assert np.all(p >= PARAM_LOWER - 1e-4) and np.all(p <= PARAM_UPPER + 1e-4)


def test_context_pyramid_matches_the_direct_blur_and_ignores_the_array_around_the_brain():
    """The large scales (a Gaussian pyramid) agree with the direct 97-tap blur; the features depend
    on the brain only, not on how much empty array surrounds it; the brain-voxel path equals them."""
    with pytest.raises(ValueError, match="ascending"):
        oef_nets.pyramid_plan((2.0, 1.0))
    with pytest.raises(ValueError, match=">= 4 voxels"):
        oef_nets.pyramid_plan((1.0, 2.0, 3.0), coarse_from=2.0)
    # 2x2x2 means add a variance of 1/4 voxel^2; the coarse blur (in coarse voxels) makes up the rest
    assert oef_nets.pyramid_plan((1.0, 2.0, 4.0, 8.0, 16.0)) == [("fine", 1.0), ("fine", 2.0), ("coarse", pytest.approx(15.75**0.5 / 2)), ("coarse", pytest.approx(63.75**0.5 / 2)), ("coarse", pytest.approx(255.75**0.5 / 2))]
    g = np.mgrid[:40, :44, :36].astype(np.float32)
    c = np.array([20, 22, 18], np.float32).reshape(3, 1, 1, 1)
    mask = (((g - c) / np.array([15, 17, 13], np.float32).reshape(3, 1, 1, 1)) ** 2).sum(0) < 1
    rate = 0.1 + 0.05 * np.sin(g[0] / 6) * np.cos(g[1] / 9)  # a smooth decay-rate field
    x = np.zeros((9,) + mask.shape, np.float32)
    x[:8] = np.exp(-rate[None] * np.arange(8).reshape(8, 1, 1, 1)) * mask
    x[8] = np.sin(g[2] / 5) * mask
    xt = torch.from_numpy(x)[None]
    with torch.no_grad():
        f_dir = oef_nets.ContextNet(coarse_from=1e9).features(xt)[0][:, mask]
        net = oef_nets.ContextNet()
        f = net.features(xt)[0]
        fb = f[:, mask]
        assert torch.allclose(fb[:29], f_dir[:29], atol=1e-6)  # the voxel and sigma 1, 2: direct blurs, identical
        err = (fb[29:] - f_dir[29:]).abs()
        assert err.max() < 0.02 and err.mean() < 1.5e-3, (err.max(), err.mean())
        # the tolerance separates scales: sigma 16 differs from sigma 32 mm far more than the pyramid from the direct blur
        assert (f_dir[39:49] - f_dir[49:59]).abs().mean() > 5 * err.mean()
        big = torch.nn.functional.pad(xt, (3, 6, 0, 5, 7, 1))  # the same brain inside a larger, shifted array
        fbig = net.features(big)[0][:, 7:47, 0:44, 3:39]
        assert torch.allclose(fbig, f, atol=1e-6)
        assert torch.allclose(net.brain_features(xt, torch.from_numpy(mask)), fb.T, atol=1e-6)
        part = mask.copy()
        part[:20] = False  # a mask that is part of the brain: the same values at its voxels
        assert torch.allclose(net.brain_features(xt, torch.from_numpy(part)), f[:, part].T, atol=1e-6)


def test_context_blurs_equal_zero_padded_gaussians_and_the_pooled_pyramid():
    """The per-axis matrices reproduce, on an odd-sized array, the operations the features are
    defined by: scipy's zero-padded separable correlation (fine scales) and, for coarse ones, 2x2x2
    means, that correlation on the coarse grid and trilinear interpolation back (torch's)."""
    from scipy.ndimage import correlate1d

    rng = np.random.default_rng(3)
    v = rng.normal(size=(3, 23, 18, 21)).astype(np.float32)
    net = oef_nets.ContextNet()
    with torch.no_grad():
        got = net.blurred(torch.from_numpy(v)[None])
    for i, ((kind, _), b) in enumerate(zip(net.plan, got)):
        k = getattr(net, f"g{i}").numpy().astype(np.float64)
        if kind == "fine":
            ref = v.astype(np.float64)
        else:
            padded = np.pad(v, [(0, 0)] + [(0, n % 2) for n in v.shape[1:]]).astype(np.float64)
            c, d, h, w = padded.shape
            ref = padded.reshape(c, d // 2, 2, h // 2, 2, w // 2, 2).mean((2, 4, 6))
        for axis in (1, 2, 3):
            ref = correlate1d(ref, k, axis=axis, mode="constant", cval=0.0)
        if kind == "coarse":
            up = torch.nn.functional.interpolate(torch.from_numpy(ref)[None], scale_factor=2, mode="trilinear", align_corners=False)[0]
            ref = up[:, : v.shape[1], : v.shape[2], : v.shape[3]].numpy()
        assert b.shape == (1,) + v.shape
        np.testing.assert_allclose(b[0].numpy(), ref, atol=2e-6)
    assert not np.allclose(got[2][0].numpy(), got[3][0].numpy(), atol=1e-2)  # the scales differ
    with pytest.raises(ValueError, match="unknown scale kind"):
        oef_nets.axis_operator(9, "medium", net.g0)


def test_context_checkpoints_keep_the_feature_grid_they_were_trained_on(tmp_path):
    """Weights saved before the large scales moved to the coarse grid (no ``coarse_from`` in their
    config) load with the direct blurs; new ones record the grid and load with the pyramid."""
    from qmri.training.loop import save_checkpoint

    te = [round(1000 * t, 3) for t in QQNET_TE_S]
    old = oef_nets.SetContextNet(hidden=oef_nets.CONTEXT_HIDDEN, coarse_from=float("inf"))
    save_checkpoint(tmp_path / "old.pt", old, {"arch": "setcontext", "arch_kwargs": {}, "echo_times_ms": te})
    assert load_oef_net(tmp_path / "old.pt").net.plan == [("fine", s) for s in oef_nets.CONTEXT_SIGMAS]
    rec = OEFRecipe("setcontext", [], [])
    assert rec.config()["arch_kwargs"] == {"coarse_from": oef_nets.CONTEXT_COARSE_FROM, "hidden": list(oef_nets.CONTEXT_HIDDEN), "uncertainty": True, "profile": True}
    save_checkpoint(tmp_path / "new.pt", oef_nets.SetContextNet(uncertainty=True, profile=True), {**rec.config(), "echo_times_ms": te})
    assert [k for k, _ in load_oef_net(tmp_path / "new.pt").net.plan] == ["fine", "fine", "coarse", "coarse", "coarse"]
    with pytest.raises(RuntimeError, match="size mismatch"):  # the two grids' kernels are not interchangeable
        oef_nets.SetContextNet(hidden=oef_nets.CONTEXT_HIDDEN).load_state_dict(old.state_dict())


def test_set_context_network_pools_the_whole_brain_the_same_in_training_and_inference():
    """The whole-brain code is a mean over voxels (order-free); the volume path, the banked-voxel path
    of inference and the recipe's training path give the same parameters; outputs stay in bounds."""
    from qmri.models.oefnet.predict import predict_normalised
    from qmri.models.oefnet.data import FeatureBank
    from qmri.models.oefnet.train import SET_VOLUMES

    torch.manual_seed(0)
    net = oef_nets.SetContextNet(uncertainty=True, **oef_nets.DEFAULT_FEATURES).eval()  # as the recipe builds it
    rng = np.random.default_rng(0)
    x = np.zeros((14, 14, 14, 9), np.float32)
    mask = np.zeros((14, 14, 14), bool)
    mask[3:11, 2:12, 4:10] = True
    x[mask] = np.concatenate([np.cumprod(rng.uniform(0.8, 1.0, (mask.sum(), 8)), -1), rng.normal(0, 1, (mask.sum(), 1))], -1)
    x[..., 0][mask] = 1.0
    xt = torch.from_numpy(np.moveaxis(x, -1, 0).copy())[None]
    with torch.no_grad():
        f = net.features(xt)[0].movedim(0, -1)[torch.from_numpy(mask)]
        g = net.global_code(f)
        assert torch.allclose(net.global_code(f[torch.randperm(len(f))]), g, atol=1e-5)
        vol = net(xt)[0].movedim(0, -1)[torch.from_numpy(mask)]
        brain = net.predict_brain(f, chunk=50)  # chunked: the code is still that of every voxel
        assert torch.allclose(vol, brain, atol=1e-5) and torch.allclose(brain, net.head_with_code(f, g), atol=1e-5)
        assert np.allclose(predict_normalised(net, "setcontext", x, mask)[mask], brain.numpy(), atol=1e-5)
        assert brain.shape[1] == 6  # five parameters + the log sd of Y
        p = oef_nets.denormalise(brain[:, :5]).numpy()
        assert np.all(p >= PARAM_LOWER - 1e-4) and np.all(p <= PARAM_UPPER + 1e-4)
    # the code: a ridge fit from brain statistics to subject-level targets; training batches carry each volume's statistics
    n = 300
    bank = []
    for i in range(12):  # subjects whose decay (hence the statistics) scales with a known level
        lvl = 0.9 + 0.01 * i
        xb = x[mask][:n].copy()
        xb[:, 1:8] = xb[:, 1:8] ** lvl
        fv = np.concatenate([xb, rng.normal(size=(n, net.n_features - 9))], 1).astype(np.float32)
        yb = np.tile(np.float32([0, 0, lvl, 0, 0]), (n, 1))
        bank.append(FeatureBank(fv, yb, xb, f"v{i}", 100.0))
    rec = OEFRecipe("setcontext", [], [], banks=bank)
    fitted = rec.build()
    with torch.no_grad():
        code = [fitted.global_code(torch.from_numpy(b.f))[2].item() for b in bank]
    assert np.allclose(code, [0.9 + 0.01 * i for i in range(12)], atol=0.01)  # the code reads the level back
    assert float(fitted.code_alpha) > 0
    batch = next(rec.batches(rng, 1, 2048))
    assert batch["s"].shape == (SET_VOLUMES, oef_nets.n_summary(net.n_features)) and batch["g"].shape == (SET_VOLUMES, oef_nets.GLOBAL_CODE)
    assert batch["f"].shape == (SET_VOLUMES, 2048 // SET_VOLUMES, net.n_features)
    assert batch["y"].shape == (SET_VOLUMES, 256, 5) and batch["x"].shape == (SET_VOLUMES, 256, 9)
    loss = rec.loss(fitted.train(), {k: torch.from_numpy(v) for k, v in batch.items()}, "cpu")
    loss.backward()
    assert torch.isfinite(loss) and fitted.head[0].weight.grad.abs().sum() > 0


def test_physics_residual_is_small_for_the_true_parameters():
    from qmri.physics.qq import qbold_magnitude, qq_susceptibility

    rng = np.random.default_rng(0)
    n = 50
    par = np.stack([rng.uniform(1.0, 1.2, n), rng.uniform(10, 25, n), rng.uniform(0.4, 0.8, n), rng.uniform(0.01, 0.05, n), rng.uniform(-0.1, 0.1, n)], -1)
    sig = qbold_magnitude(*par.T, QQNET_TE_S)
    chi = qq_susceptibility(par[:, 2], par[:, 3], par[:, 4])
    x = torch.tensor(np.concatenate([sig, 10 * chi[:, None]], -1).T[None, :, :, None, None], dtype=torch.float32)
    m = torch.ones(1, 1, n, 1, 1)
    z = torch.tensor(oef_nets.normalise_params(par).T[None, :, :, None, None], dtype=torch.float32)
    assert float(physics_residual(z, x, m)) < 1e-6
    z_bad = z.clone()
    z_bad[:, 2] += 1.0  # Y off by one QQ-NET sd (0.1)
    assert float(physics_residual(z_bad, x, m)) > 0.1  # measured 0.6: Y is weakly identified (the QQ problem)


def _block(half=12):
    img = nib.load(STUDY)
    d = img.get_fdata(dtype=np.float32)
    c = [n // 2 for n in d.shape[:3]]
    box = tuple(slice(x - half, x + half) for x in c)
    tgt = nib.load(SAMPLE / "studies" / "labels" / "final" / STUDY.name).get_fdata(dtype=np.float32)
    meta = json.loads(STUDY.with_name("sub-1000_oef.json").read_text())
    return d, tgt, box, meta


def test_shipped_weights_load_with_their_echo_times_and_predict_in_bounds():
    d, _, box, meta = _block()
    mask = d[..., -1] != 0
    for name in ("best", "cnn3d", "lstm"):
        assert (WEIGHTS / f"{name}.pt").stat().st_size < 25e6
        model = load_oef_net(WEIGHTS / f"{name}.pt")
        assert model.echo_times_ms == [4.5, 9.5, 14.5, 19.5, 24.5, 29.5, 34.5, 39.5]
        assert model.config["model"] == name
        sub = tuple(slice(b.start + 6, b.stop - 6) for b in box)  # 12^3 voxels keep the LSTM fast
        maps = predict_oef(model, d[sub][..., :8], d[sub][..., 8], mask[sub], meta["echo_times_ms"])
        m = mask[sub]
        assert np.all((maps["OEF"][m] >= 0) & (maps["OEF"][m] <= 100)) and np.all(maps["OEF"][~m] == 0)
        assert np.all((maps["R2"][m] >= PARAM_LOWER[1]) & (maps["R2"][m] <= PARAM_UPPER[1]))
    assert load_oef_net(WEIGHTS / "best.pt").config["selected_from"] in ("setcontext", "context", "unet", "cnn3d", "lstm")


def test_shipped_weights_beat_the_classical_fit():
    """Sample subject sub-1000 (seed 1000: never trained on) at its SNR 153; block of 24^3 voxels."""
    from qmri.tasks.oef import run_oef

    d, tgt, box, meta = _block()
    mask = d[..., -1] != 0
    oef_true = 100 * oef_from_y(tgt[..., 2])
    best = predict_oef(load_oef_net(WEIGHTS / "best.pt"), d[..., :8], d[..., 8], mask, meta["echo_times_ms"])
    fit = {m.name: m.data for m in run_oef(d[box], np.eye(4), meta, "qq_fit")}
    bm = mask[box]
    rmse_net = np.sqrt(np.mean((best["OEF"][box] - oef_true[box])[bm] ** 2))
    rmse_fit = np.sqrt(np.mean((fit["OEF"] - oef_true[box])[bm] ** 2))
    assert rmse_net < rmse_fit, (rmse_net, rmse_fit)
    r2_net = np.sqrt(np.mean((best["R2"][box] - tgt[box][..., 1])[bm] ** 2))
    r2_fit = np.sqrt(np.mean((fit["R2"] - tgt[box][..., 1])[bm] ** 2))
    assert r2_net < r2_fit, (r2_net, r2_fit)


def test_shipped_best_shows_a_24mm_infarct_with_a_calibrated_sd():
    """A 24 mm infarct core (OEF 10 %, v unchanged, so only the oxygenation differs) painted into the
    sample subject's true parameters, echoes re-simulated at echo-1 SNR 100: the shipped default
    shows it lower than the mirror-image tissue (a constant map scores C = 0). Measured C = 0.10:
    issue 24's C >= 0.5 is NOT met by the shipped weights (see the model card); this asserts what
    they do. Its OEF_sd covers the error of most brain voxels at 2 sd."""
    from qmri.metrics.oef import contrast_recovery, coverage
    from qmri.physics.oef_physiology import midline_index, mirror_lr
    from qmri.physics.qq import add_noise, qbold_magnitude, qq_susceptibility

    d, tgt, _, meta = _block()
    mask = d[..., -1] != 0
    S0, R2, Y, v, cnb = (tgt[..., k].astype(np.float64) for k in range(5))
    mid = midline_index(mask)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in mask.shape], indexing="ij"), -1)
    centre = np.array([mid - 14, np.argwhere(mask)[:, 1].mean(), np.argwhere(mask)[:, 2].mean() + 4])  # 28 mm left of the midline
    sphere = (np.sum((grid - centre) ** 2, -1) <= 6.0**2) & mask & (v > 0)
    Y = np.where(sphere, 0.98 * (1 - 0.10), Y)
    te = np.asarray(meta["echo_times_ms"]) / 1000.0
    rng = np.random.default_rng(24)
    sig = add_noise(qbold_magnitude(S0, R2, Y, v, cnb, te), 100.0, rng, mask=mask)
    sig[~mask] = 0.0
    chi = np.where(mask, qq_susceptibility(Y, v, cnb) + rng.normal(0, 0.005, mask.shape), 0.0)
    maps = predict_oef(load_oef_net(WEIGHTS / "best.pt"), sig, chi, mask, meta["echo_times_ms"])
    truth = np.where(mask, 100 * oef_from_y(Y), 0.0)
    ref = mirror_lr(sphere, mid) & mask & ~sphere
    assert sphere.sum() > 500 and ref.sum() > 300
    c = contrast_recovery(maps["OEF"], truth, sphere, ref)
    assert c >= 0.05, c
    cov = coverage(maps["OEF"], truth, maps["OEF_sd"], mask)
    assert 0.85 <= cov <= 0.99, cov


def test_mismatched_echo_times_are_refused_by_the_networks_only():
    from qmri.tasks.oef import oef_spec

    d, _, _, meta = _block(3)
    spec = oef_spec({k: WEIGHTS / f"{k}.pt" for k in ("best", "cnn3d", "lstm")})
    assert spec.methods == ("best", "cnn3d", "lstm", "qq_fit", "qq_spatial") and spec.default_method == "best"
    c = [n // 2 for n in d.shape[:3]]
    small = d[c[0] - 3 : c[0] + 3, c[1] - 3 : c[1] + 3, c[2] - 3 : c[2] + 3]
    other = dict(meta, echo_times_ms=[5.0 + 5 * i for i in range(8)])
    for method in ("best", "cnn3d", "lstm"):
        with pytest.raises(ValueError, match=r"trained for echo times \[4.5, 9.5, 14.5"):
            spec.run(small, np.eye(4), other, method)
    maps = spec.run(small, np.eye(4), other, "qq_fit")  # the classical fit takes any echo times
    assert [m.name for m in maps] == ["OEF", "S0", "R2", "Y", "v", "chi_nb", "OEF_sd"]
    assert maps[-1].units == "%" and np.all(maps[-1].data >= 0)


def test_mismatched_echo_study_gets_4xx_over_rest(server, tmp_path):
    from test_tasks_rest import _oef_block, infer, upload

    url, _ = server
    data, aff, meta, _ = _oef_block(4)
    upload(url, tmp_path, "oef_te", data, aff)
    other = dict(meta, echo_times_ms=[5.0 + 5 * i for i in range(8)])
    status, _, detail = infer(url, "oef", "oef_te", {"sidecar": other})
    assert 400 <= status < 500 and "trained for echo times [4.5, 9.5" in detail and "qq_fit" in detail, (status, detail)
    status, _, res = infer(url, "oef", "oef_te", {"sidecar": other, "method": "qq_fit"})
    assert status == 200, res


def test_trainer_over_rest_publishes_a_model_the_infer_task_uses(server, model_dir, tmp_path):
    from conftest import served_weights_moved_aside
    from test_tasks_rest import _oef_block, infer, train_and_wait, upload

    url, _ = server
    weights = Path(model_dir) / "oefnet" / "best.pt"
    info = requests.get(f"{url}/info/", timeout=30).json()
    assert "oef" in info["trainers"] and info["models"]["oef"]["default_method"] == "best"
    data, aff, meta, _ = _oef_block(8)
    upload(url, tmp_path, "oef_train_check", data, aff)
    status, before, _ = infer(url, "oef", "oef_train_check", {"sidecar": meta})
    assert status == 200
    with served_weights_moved_aside(weights):
        stats = train_and_wait(url, "oef", {"network": "best", "max_epochs": 1, "steps_per_epoch": 2, "batch_size": 1, "lr": 1e-3, "device": "cpu"})
        assert weights.exists() and stats["published"]
        assert stats["model"] == "best" and stats["epochs"] == 1 and stats["best_metric"] > 0
        assert stats["train_studies"] == ["sub-1000_oef"]
        status, after, res = infer(url, "oef", "oef_train_check", {"sidecar": meta})
    assert status == 200 and res["method"] == "best"
    assert not np.allclose(before.get_fdata(), after.get_fdata())  # the new weights are in use
