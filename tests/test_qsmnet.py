"""QSMnet: loss terms, rotation augmentation vs the forward model, shipped weights, trainer over REST."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import requests
import torch

from conftest import REPO
from qmri.models.qsmnet.loss import QSMnetLoss, dipole_convolve
from qmri.physics.dipole import forward_field
from qmri.physics.rotation import rotate_volume, rotation_about, rotation_to_z

WEIGHTS = REPO / "apps" / "qmri" / "model" / "qsmnet" / "qsmnet.pt"


def test_loss_terms_hand_computed():
    n = 8
    mask = torch.ones(1, 1, n, n, n)
    target = torch.zeros(1, 1, n, n, n)
    loss = QSMnetLoss(voxel_size_mm=2.0)
    # a constant offset: L1 = 0.1; its dipole field is 0 (D(0) = 0) and its gradient is 0
    total, parts = loss(target + 0.1, target, mask)
    assert float(parts["l1"]) == pytest.approx(0.1, rel=1e-6)
    assert float(parts["model"]) == pytest.approx(0.0, abs=1e-7) and float(parts["gradient"]) == pytest.approx(0.0, abs=1e-7)
    assert float(total) == pytest.approx(0.1, rel=1e-6)
    # a plane wave cos(2 pi z / n) along B0: D = 1/3 - 1 = -2/3, so model = 2/3 mean|cos|
    z = torch.arange(n, dtype=torch.float32)
    wave = torch.cos(2 * torch.pi * z / n).expand(n, n, n)[None, None]
    mean_abs_cos = float(np.mean(np.abs(np.cos(2 * np.pi * np.arange(n) / n))))
    _, parts = loss(wave.clone(), target, mask)
    assert float(parts["model"]) == pytest.approx(2 / 3 * mean_abs_cos, rel=1e-5)
    # the same wave across B0 (along x): D = 1/3
    _, parts = loss(wave.permute(0, 1, 4, 3, 2).contiguous(), target, mask)
    assert float(parts["model"]) == pytest.approx(1 / 3 * mean_abs_cos, rel=1e-5)
    # a ramp 0.01 * x: forward differences 0.01 except the last plane (0), on one axis only
    ramp = (0.01 * torch.arange(n, dtype=torch.float32)).view(n, 1, 1).expand(n, n, n)[None, None]
    _, parts = loss(ramp.clone(), target, mask)
    assert float(parts["gradient"]) == pytest.approx(0.01 * (n - 1) / n, rel=1e-5)
    # masked: only mask voxels count
    half = mask.clone()
    half[..., : n // 2] = 0
    offset = target.clone()
    offset[..., n // 2 :] = 0.2
    _, parts = loss(offset, target, half)
    assert float(parts["l1"]) == pytest.approx(0.2, rel=1e-6)


def test_dipole_convolve_matches_forward_model_without_padding():
    rng = np.random.default_rng(0)
    chi = rng.normal(size=(16, 16, 16))
    a = dipole_convolve(torch.from_numpy(chi), 2.0).numpy()
    b = forward_field(chi, 2.0, (0, 0, 1), pad=0)
    np.testing.assert_allclose(a, b, atol=1e-10)


def _blobs(n=48):
    g = np.indices((n, n, n)).astype(float)
    chi = np.zeros((n, n, n))
    for c, s, v in (((20, 24, 22), 4.0, 0.2), ((28, 20, 27), 3.0, -0.15), ((24, 30, 20), 3.5, 0.1)):
        chi += v * np.exp(-((g - np.reshape(c, (3, 1, 1, 1))) ** 2).sum(0) / (2 * s**2))
    return chi


def test_rotation_augmentation_preserves_forward_model():
    """field(R chi, B0 = R z) == R field(chi, z): rotating chi and B0 together changes nothing."""
    chi = _blobs()
    rot = rotation_about(0, 20.0)
    z = np.array([0.0, 0.0, 1.0])
    lhs = forward_field(rotate_volume(chi, rot, 1.0, order=3), 1.0, rot @ z, pad=True)
    rhs = rotate_volume(forward_field(chi, 1.0, z, pad=True), rot, 1.0, order=3)
    inner = np.zeros_like(chi, bool)
    inner[10:-10, 10:-10, 10:-10] = True
    err = np.linalg.norm((lhs - rhs)[inner]) / np.linalg.norm(rhs[inner])
    assert err < 0.03, err
    # and a rotation that is NOT applied to B0 does change the field (the augmentation matters)
    other = forward_field(rotate_volume(chi, rot, 1.0, order=3), 1.0, z, pad=True)
    assert np.linalg.norm((other - rhs)[inner]) / np.linalg.norm(rhs[inner]) > 0.2


@pytest.mark.parametrize("b0", [(0, 0, 1), (0, 0.34, 0.94), (0.5, -0.2, 0.84), (0, 0, -1)])
def test_rotation_to_z(b0):
    r = rotation_to_z(b0)
    np.testing.assert_allclose(r @ (np.array(b0) / np.linalg.norm(b0)), [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)


@pytest.fixture(scope="module")
def held_out_brain():
    from qmri.models.qsmnet.data import local_field, make_volume

    vol = make_volume(31337, 2.0)  # a seed no training, validation or sample subject uses
    field = local_field(vol.chi, vol.mask, vol.voxel_size_mm, rng=np.random.default_rng(1))
    return vol, field


def test_shipped_weights_beat_tkd(held_out_brain):
    from qmri.classical.qsm import tkd
    from qmri.models.qsmnet.predict import load_qsmnet, predict_chi
    from qmri.models.qsmnet.train import nrmse

    vol, field = held_out_brain
    net, cfg = load_qsmnet(WEIGHTS)
    assert cfg["b0_dir_trained"] == [0.0, 0.0, 1.0] and cfg["voxel_size_mm"] == 2.0
    chi_net = predict_chi(net, field, vol.mask, (2.0,) * 3)
    chi_tkd = np.asarray(tkd(field, vol.mask, 2.0))
    e_net, e_tkd = nrmse(chi_net, vol.chi, vol.mask), nrmse(chi_tkd, vol.chi, vol.mask)
    assert e_net < 0.85 * e_tkd, (e_net, e_tkd)


def test_data_consistency_step_fixes_the_deep_grey_means(held_out_brain):
    """The support-constrained CG step after the network (the served ``qsmnet``) restores the
    contrast the network smooths away: deep-grey-nucleus means against the brain mean and the
    overall NRMSE."""
    from qmri.anatomy.labels import DEEP_GM_LABELS
    from qmri.anatomy.phantom import make_subject
    from qmri.models.qsmnet.predict import load_qsmnet, predict_chi
    from qmri.simulate.driver import crop_box
    from qmri.models.qsmnet.train import nrmse

    vol, field = held_out_brain
    s = make_subject(31337, 2.0, lesions="all", subject_id=vol.subject)  # the fixture's anatomy
    labels = s.labels[crop_box(s.brain_mask, s.voxel_size_mm, 8.0)]
    net, _ = load_qsmnet(WEIGHTS)
    direct = predict_chi(net, field, vol.mask, (2.0,) * 3, refine_iterations=0)
    served = predict_chi(net, field, vol.mask, (2.0,) * 3)

    def worst_nucleus(est):
        e, r = est - est[vol.mask].mean(), vol.chi - vol.chi[vol.mask].mean()
        return max(abs(e[labels == lab].mean() - r[labels == lab].mean()) for lab in DEEP_GM_LABELS if (labels == lab).any())

    # measured: NRMSE 0.33 -> 0.14, worst nucleus 0.0175 -> 0.0022 ppm
    assert nrmse(served, vol.chi, vol.mask) < 0.7 * nrmse(direct, vol.chi, vol.mask)
    assert worst_nucleus(served) < 0.01 and worst_nucleus(served) < worst_nucleus(direct)


def test_oblique_b0_is_rotated_to_z(held_out_brain):
    """A field acquired with B0 tilted 25 deg is inverted well only when the tilt is known."""
    from qmri.models.qsmnet.predict import load_qsmnet, predict_chi
    from qmri.models.qsmnet.data import local_field
    from qmri.models.qsmnet.train import nrmse

    vol, _ = held_out_brain
    b0 = rotation_about(0, 25.0) @ np.array([0.0, 0.0, 1.0])
    field = local_field(vol.chi, vol.mask, 2.0, b0_dir=b0, rng=np.random.default_rng(2))
    net, _ = load_qsmnet(WEIGHTS)
    right = nrmse(predict_chi(net, field, vol.mask, (2.0,) * 3, b0_dir=b0), vol.chi, vol.mask)
    wrong = nrmse(predict_chi(net, field, vol.mask, (2.0,) * 3), vol.chi, vol.mask)
    assert right < wrong - 0.05, (right, wrong)


def test_trainer_over_rest_publishes_a_model_the_infer_task_uses(server, model_dir):
    from conftest import served_weights_moved_aside
    from test_tasks_rest import infer, train_and_wait

    url, _ = server
    weights = Path(model_dir) / "qsmnet" / "qsmnet.pt"
    info = requests.get(f"{url}/info/", timeout=30).json()
    assert "qsm" in info["trainers"] and info["models"]["qsm"]["default_method"] == "qsmnet"
    status, before, _ = infer(url, "qsm", "sub-1000_qsm")
    assert status == 200
    with served_weights_moved_aside(weights):
        stats = train_and_wait(url, "qsm", {"max_epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "lr": 1e-3})
        assert weights.exists() and stats["published"] and stats["decision"].startswith("published")
        assert stats["epochs"] == 1 and stats["best_metric"] > 0
        status, after, meta = infer(url, "qsm", "sub-1000_qsm")
    assert status == 200 and meta["method"] == "qsmnet"
    assert not np.allclose(before.get_fdata(), after.get_fdata())  # the new weights are in use


def test_distributed_data_parallel_training_on_cpu(tmp_path):
    """The trainers' multi-GPU path (torch.distributed DDP), exercised with 2 gloo processes on CPU."""
    from qmri.models.qsmnet.predict import load_qsmnet
    from qmri.models.qsmnet.data import QSMVolume
    from qmri.models.qsmnet.train import train_qsm

    g = np.indices((32, 32, 32)) - 15.5
    mask = (g**2).sum(0) < 14**2
    chi = np.where(mask, _blobs(32).astype(np.float32), 0.0).astype(np.float32)
    vol = QSMVolume(chi, mask, 2.0, "blobs")
    out = tmp_path / "ddp.pt"
    res = train_qsm(out, [vol], [vol], epochs=1, steps_per_epoch=2, batch_size=2, patch=16, features=(4, 4, 8, 8, 16, 4), progress=False, world_size=2, device="cpu")
    assert res["config"]["world_size"] == 2 and len(res["history"]) == 1
    net, cfg = load_qsmnet(out)
    assert cfg["epoch"] == 1 and np.isfinite(res["best"]["val_nrmse"])
