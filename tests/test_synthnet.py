"""scCycleGAN (MR <-> CT): structural loss, intensity scaling, shipped weights, trainer over REST."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
import torch
from scipy import ndimage

from qmri.models.synthnet.loss import spatially_correlative_loss
from qmri.models.synthnet.net import SynthCycleGAN
from qmri.models.synthnet.predict import HU_RANGE, MR_RANGE, crop_slices, from_unit, load_synthnet, pad_slices, synthetic_ct, to_unit
from qmri.models.synthnet.data import SynthVolume

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "apps" / "qmri" / "model" / "synthnet" / "synthnet.pt"
STUDIES = REPO / "sample-data" / "studies"


def _head_slice(n: int = 64) -> np.ndarray:
    """A head-like slice: scalp ring, dark skull ring, brain with a bright ventricle (smoothed)."""
    yy, xx = np.mgrid[:n, :n] - n / 2
    r = np.hypot(yy, xx)
    img = np.where(r < 28, 0.5, 0.0) + np.where(r < 25, -0.4, 0.0) + np.where(r < 22, 0.3, 0.0)
    img += np.where(np.hypot(yy + 4, xx - 5) < 6, 0.5, 0.0)
    return ndimage.gaussian_filter(img, 0.7)


def test_sc_loss_zero_for_identical_and_structure_over_intensity():
    img = _head_slice()
    x = torch.tensor(img, dtype=torch.float32)[None, None]
    g = torch.Generator().manual_seed(0)
    q = (torch.randint(0, 64, (1, 256), generator=g), torch.randint(0, 64, (1, 256), generator=g))
    assert abs(float(spatially_correlative_loss(x, x, queries=q))) < 1e-5
    # geometric distortion: a smooth random displacement field of ~1 voxel
    rng = np.random.default_rng(0)
    d = [ndimage.gaussian_filter(rng.standard_normal(img.shape), 4) for _ in range(2)]
    d = [3.0 * di / np.abs(di).max() for di in d]
    grid = np.mgrid[:64, :64].astype(float)
    warped = ndimage.map_coordinates(img, [grid[0] + d[0], grid[1] + d[1]], order=1, mode="nearest")
    w = torch.tensor(warped, dtype=torch.float32)[None, None]
    l1 = float((w - x).abs().mean())
    # monotone intensity remap (a gamma-like curve on [0, 1]) scaled to the same L1 change
    base = x.clamp(0, 1)
    curve = base.sqrt() - base  # >= 0, x + a * curve is monotone for a <= 1
    a = l1 / float(curve.abs().mean())
    assert a <= 1.0
    remap = x + a * curve
    assert abs(float((remap - x).abs().mean()) - l1) < 1e-4 * max(l1, 1)
    l_geo = float(spatially_correlative_loss(x, w, queries=q))
    l_int = float(spatially_correlative_loss(x, remap, queries=q))
    assert l_geo > 3 * l_int, (l_geo, l_int)
    # a contrast inversion (bone dark on MR, bright on CT) keeps the self-similarity maps
    assert float(spatially_correlative_loss(x, 1.0 - 2.0 * x, queries=q)) < 0.05 * l_geo


def test_intensity_scaling_round_trips():
    hu = np.linspace(HU_RANGE[0], HU_RANGE[1], 101, dtype=np.float32)
    np.testing.assert_allclose(from_unit(to_unit(hu, "ct"), "ct"), hu, atol=0.05)
    assert to_unit(np.float32(-1024), "ct") == -1 and to_unit(np.float32(3000), "ct") == 1
    assert to_unit(np.array([-3000.0, 5000.0]), "ct").tolist() == [-1.0, 1.0]  # clipped
    mr = np.linspace(MR_RANGE[0], MR_RANGE[1], 101, dtype=np.float32)
    np.testing.assert_allclose(from_unit(to_unit(mr, "mr"), "mr"), mr, atol=0.01)
    s = np.random.default_rng(0).uniform(-1, 1, (3, 37, 42)).astype(np.float32)
    p, hw = pad_slices(s)
    assert p.shape[1] % 4 == 0 and p.shape[2] % 4 == 0 and np.array_equal(crop_slices(p, hw), s)
    with pytest.raises(ValueError):
        to_unit(hu, "pet")


def test_volume_geometry_preserved_and_bad_input_rejected():
    net = SynthCycleGAN(width=4, n_blocks=1, d_width=4)
    vol = np.random.default_rng(1).uniform(0, 600, (21, 26, 5)).astype(np.float32)
    out = synthetic_ct(net, vol)
    assert out.shape == vol.shape and out.dtype == np.float32
    assert out.min() >= HU_RANGE[0] - 1e-3 and out.max() <= HU_RANGE[1] + 1e-3
    with pytest.raises(ValueError, match="3D"):
        synthetic_ct(net, vol[..., 0])
    with pytest.raises(ValueError, match="finite"):
        synthetic_ct(net, np.full((16, 16, 2), np.nan, np.float32))


@pytest.fixture(scope="module")
def held_out():
    """Sample subject sub-1000 (seed 1000; training used 50000.., validation 51000..): MR, CT, head."""
    mr = nib.load(STUDIES / "sub-1000_t2w.nii.gz").get_fdata(dtype=np.float32)
    ct = nib.load(STUDIES / "labels" / "final" / "sub-1000_t2w.nii.gz").get_fdata(dtype=np.float32)
    return mr, ct, ct > -500


def test_shipped_weights_beat_bulk_density(held_out):
    from qmri.classical.bulk_density import synthetic_ct_bulk_density
    from qmri.metrics.synthrad import evaluate_sct

    mr, ct, head = held_out
    net, cfg = load_synthnet(WEIGHTS)
    assert WEIGHTS.stat().st_size < 25e6 and cfg["hu_range"] == list(HU_RANGE) and cfg["mr_range"] == list(MR_RANGE)
    net_r = evaluate_sct(synthetic_ct(net, mr), ct, head)
    bulk_r = evaluate_sct(synthetic_ct_bulk_density(mr, voxel_size_mm=2.0), ct, head)
    assert net_r["mae"] < bulk_r["mae"], (net_r, bulk_r)


def test_network_task_rejects_a_ct_as_mr(held_out):
    from qmri.tasks.synthesis import synthesis_specs

    sct_task, smr_task = synthesis_specs(WEIGHTS)
    assert sct_task.default_method == "sccyclegan" and "bulk_density" in sct_task.methods
    mr, ct, _ = held_out
    with pytest.raises(ValueError, match="CT"):
        sct_task.run(ct, np.eye(4), {}, "sccyclegan")
    with pytest.raises(ValueError, match="HU"):
        smr_task.run(mr, np.eye(4), {}, "sccyclegan")


def test_trainer_over_rest_publishes_a_model_both_tasks_use(server, model_dir):
    from conftest import served_weights_moved_aside
    from test_tasks_rest import infer, train_and_wait

    url, _ = server
    weights = Path(model_dir) / "synthnet" / "synthnet.pt"
    info = requests.get(f"{url}/info/", timeout=30).json()
    assert "synthetic_ct" in info["trainers"]
    for task in ("synthetic_ct", "synthetic_mr"):
        assert info["models"][task]["default_method"] == "sccyclegan"
    before = {t: infer(url, t, s)[1].get_fdata() for t, s in (("synthetic_ct", "sub-1000_t2w"), ("synthetic_mr", "sub-1000_ct"))}
    with served_weights_moved_aside(weights):
        stats = train_and_wait(url, "synthetic_ct", {"max_epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "crop": 32})
        assert weights.exists() and stats["published"]
        assert stats["epochs"] == 1 and np.isfinite(stats["best"]["val_sct_mae_hu"])
        from qmri.training.loop import load_checkpoint

        cfg = load_checkpoint(weights)[1]  # the trainer's default recipe: generator-only steps with back-translation
        assert cfg["backtranslation_weight"] == 1.0 and cfg["pretrain_steps"] == 2 and cfg["pseudo_sct"] == "tissue_mixture"
        assert cfg["backtranslation_ssim_weight"] == 1.5 and cfg["backtranslation_hybrid_weight"] == 3.0 and cfg["hybrid_brain"] == "drawn_mixture"
        assert cfg["ema_decay"] == 0.0  # off by default: a short run's average would lean on the starting weights
        for task, study in (("synthetic_ct", "sub-1000_t2w"), ("synthetic_mr", "sub-1000_ct")):
            status, after, meta = infer(url, task, study)
            assert status == 200 and meta["method"] == "sccyclegan"
            assert not np.allclose(before[task], after.get_fdata())  # the published weights are in use


def _toy_volume(rng):
    """A 24 x 24 x 8 toy head: random T2w (100-600 a.u.) and CT (0-1500 HU) inside a square, air outside."""
    head = np.zeros((24, 24, 8), bool)
    head[4:20, 4:20] = True
    mr = np.where(head, rng.uniform(100, 600, head.shape), 5.0).astype(np.float32)
    ct = np.where(head, rng.uniform(0, 1500, head.shape), -1000.0).astype(np.float32)
    return SynthVolume(mr, ct, head, "toy")


def test_recipe_losses_and_discriminator_pixel_weights():
    from qmri.models.synthnet.train import SynthRecipe, _pix_weight

    rng = np.random.default_rng(0)
    vol = _toy_volume(rng)
    r = SynthRecipe([vol], [vol], [vol], crop=16, net={"width": 4, "n_blocks": 1, "d_width": 4, "d_layers": 2})
    net = r.build()
    batch = next(r.batches(rng, 1, 2))
    assert batch["mr"].shape == (2, 1, 16, 16) and batch["mr"].min() >= -1 and batch["ct"].max() <= 1
    x, y = torch.from_numpy(batch["mr"]), torch.from_numpy(batch["ct"])
    w = _pix_weight(net.d_mr, x)
    assert w.shape == x.shape and float(w.min()) >= 0 and float(w.max()) <= 1
    terms, fake_ct, fake_mr = r.generator_losses(net, x, y)
    assert set(terms) == {"adv", "cyc", "pix", "str", "idt"} and all(torch.isfinite(t) for t in terms.values())
    assert fake_ct.shape == x.shape
    before = [p.detach().clone() for p in net.parameters()]
    assert np.isfinite(r.step(net, batch, "cpu"))
    assert all(not torch.equal(a, b) for a, b in zip(before[:2], list(net.parameters())[:2]))  # generators moved
    m = r.validate(net, "cpu")
    assert set(m) >= {"val_score", "val_sct_mae_hu", "val_smr_ssim", "val_sct_bone_dice"}


def test_ema_weights_are_validated_and_saved(tmp_path):
    """``ema_decay`` d: after steps with weights w_1..w_k the scored network holds e_1 = w_1,
    e_k = d e_(k-1) + (1 - d) w_k (closed form, every parameter), the training network keeps its own
    weights, and the loop validates and saves the average; d outside [0, 1) is refused."""
    from qmri.training.loop import load_checkpoint, train
    from qmri.models.synthnet.train import SynthRecipe

    rng = np.random.default_rng(0)
    vol = _toy_volume(rng)
    kw = dict(crop=16, net={"width": 4, "n_blocks": 1, "d_width": 4, "d_layers": 2}, warm_only_steps=100, bt=1.0)
    d = 0.7
    r = SynthRecipe([vol], [vol], [vol], ema_decay=d, **kw)
    assert r.config()["ema_decay"] == d
    torch.manual_seed(0)
    net = r.build()
    assert r.eval_model(net) is net  # nothing to average before the first step
    expected = None
    for batch in r.batches(rng, 3, 2):
        r.step(net, batch, "cpu")
        w = {k: v.detach().clone() for k, v in net.state_dict().items() if v.is_floating_point()}
        expected = w if expected is None else {k: d * expected[k] + (1 - d) * w[k] for k in w}
    scored = r.eval_model(net)
    assert scored is not net
    got = scored.state_dict()
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-5, atol=1e-6)
    moved = [k for k in expected if k.startswith("g_") and not torch.allclose(w[k], expected[k])]
    assert moved  # the average differs from the last weights
    with pytest.raises(ValueError, match="ema_decay"):
        SynthRecipe([vol], [vol], [vol], ema_decay=1.0, **kw)

    out = tmp_path / "synthnet.pt"
    seen = []
    r2 = SynthRecipe([vol], [vol], [vol], ema_decay=d, **kw)
    validate = r2.validate
    r2.validate = lambda n, device: seen.append(n) or validate(n, device)
    res = train(r2, out, epochs=1, steps_per_epoch=2, batch_size=2, lr=1e-4, seed=0, device="cpu", progress=False)
    assert seen[0] is r2.eval_model(r2._state["net"]) and seen[0] is not r2._state["net"]
    state, cfg = load_checkpoint(out)
    assert cfg["ema_decay"] == d and res["best"]["epoch"] == 1
    for k, v in seen[0].state_dict().items():
        torch.testing.assert_close(state[k], v)


def test_backtranslation_noise_matches_the_acquisition_and_joins_the_pretraining_loss(held_out):
    """The noise given to a translation is the modality's own, estimated from unpaired images:
    the sample CT's 5 HU (sidecar) and the sample MR's Rician floor; the pretraining loss with
    back-translation adds a positive term and still trains both generators."""
    from qmri.models.synthnet.train import SynthRecipe, _ct_noise_sd_hu, _mr_noise_sd, add_ct_noise, add_mr_noise

    mr, ct, head = held_out
    assert abs(_ct_noise_sd_hu([SynthVolume(None, ct, head)]) - 5.0) < 0.5
    sd = _mr_noise_sd([SynthVolume(mr, None, head)])
    assert 4.0 < sd < 9.0  # the simulator's sd is the WM signal (~180 a.u. with bias) / SNR 30 = ~6 a.u.
    torch.manual_seed(0)
    zero = torch.full((1, 1, 128, 128), -1.0)  # 0 a.u.: the magnitude has the Rician mean sd sqrt(pi/2)
    got = (float(add_mr_noise(zero, 6.0).mean()) + 1.0) * 0.5 * (MR_RANGE[1] - MR_RANGE[0])
    assert abs(got - 6.0 * np.sqrt(np.pi / 2)) < 0.2
    flat = torch.zeros((1, 1, 128, 128))
    noisy_hu = (add_ct_noise(flat, 5.0) - flat) * 0.5 * (HU_RANGE[1] - HU_RANGE[0])
    assert abs(float(noisy_hu.std()) - 5.0) < 0.2

    rng = np.random.default_rng(0)
    vol = SynthVolume(mr[..., 40:48], ct[..., 40:48], head[..., 40:48], "sample")
    kw = dict(crop=32, net={"width": 4, "n_blocks": 1, "d_width": 4, "d_layers": 2}, warm_only_steps=10)
    plain, bt = SynthRecipe([vol], [vol], [vol], **kw), SynthRecipe([vol], [vol], [vol], bt=1.0, **kw)
    assert bt.config()["backtranslation_weight"] == 1.0 and abs(bt.config()["bt_ct_noise_sd_hu"] - 5.0) < 0.5
    batch = next(plain.batches(rng, 1, 2))
    torch.manual_seed(0)
    net = plain.build()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    loss_plain = plain.step(net, batch, "cpu")
    net.load_state_dict(state)
    before = [p.detach().clone() for p in net.generators()]
    loss_bt = bt.step(net, batch, "cpu")
    assert np.isfinite(loss_bt) and loss_bt > loss_plain + 0.05
    moved = [not torch.equal(a, b) for a, b in zip(before, net.generators())]
    n_mr2ct = len(list(net.g_mr2ct.parameters()))
    assert any(moved[:n_mr2ct]) and any(moved[n_mr2ct:])


def _extra_term(held_out, extra: dict, expected_of, **base_kw):
    """Run one pretraining step of a tiny recipe with and without the ``extra`` weights, from the same
    generators and noise draws; ``expected_of(d)`` computes the term the extra weights should add from
    the step's own intermediates (``d``: x, gx = G(x), ct_of_x = G(x) + CT noise, batch, net, recipe),
    inside the step's RNG sequence. Returns (expected, loss difference, volume, recipe kwargs)."""
    from qmri.models.synthnet.train import SynthRecipe, add_ct_noise, add_mr_noise

    mr, ct, head = held_out
    vol = SynthVolume(mr[..., 40:48], ct[..., 40:48], head[..., 40:48], "sample")
    kw = dict(crop=32, net={"width": 4, "n_blocks": 1, "d_width": 4, "d_layers": 2}, warm_only_steps=10, bt=1.0, **base_kw)
    base, variant = SynthRecipe([vol], [vol], [vol], **kw), SynthRecipe([vol], [vol], [vol], **{**kw, **extra})
    batch = next(variant.batches(np.random.default_rng(0), 1, 2))  # the base recipe ignores any extra channel
    torch.manual_seed(0)
    net = base.build()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = torch.as_tensor(batch["mr"]), torch.as_tensor(batch["ct"])
    with torch.no_grad():  # the step's noise draws, in its order: MR noise on F(y), then CT noise on G(x)
        torch.manual_seed(1)
        add_mr_noise(net.g_ct2mr(y), base.mr_noise_sd)
        gx = net.g_mr2ct(x)
        ct_of_x = add_ct_noise(gx, base.ct_noise_sd_hu)
        expected = float(expected_of(dict(x=x, gx=gx, ct_of_x=ct_of_x, batch=batch, net=net, recipe=base)))
    torch.manual_seed(1)
    loss_base = base.step(net, batch, "cpu")
    net.load_state_dict(state)
    torch.manual_seed(1)
    loss_variant = variant.step(net, batch, "cpu")
    for k, w in extra.items():
        assert variant.config()[{"bt_ssim": "backtranslation_ssim_weight", "bt_hybrid": "backtranslation_hybrid_weight", "hybrid_brain": "hybrid_brain"}[k]] == w
    return expected, loss_variant - loss_base, vol, kw


def test_backtranslation_ssim_term_adds_one_minus_ssim_of_the_ct_to_mr_translation(held_out):
    """``bt_ssim`` adds w x (1 - SSIM) of F(noisy G(x)) against the real MR x, nothing else: with the
    same weights and noise draw, the loss grows by exactly w times (1 - SSIM); negative weights are refused."""
    from monai.losses import SSIMLoss

    from qmri.models.synthnet.train import SynthRecipe

    expected, diff, vol, kw = _extra_term(held_out, {"bt_ssim": 0.5}, lambda d: SSIMLoss(spatial_dims=2, data_range=2.0, win_size=7)(d["net"].g_ct2mr(d["ct_of_x"]), d["x"]))
    assert 0.0 < expected < 2.0  # 1 - SSIM, SSIM in [-1, 1] (an untrained generator is near 0)
    assert abs(diff - 0.5 * expected) < 1e-4
    with pytest.raises(ValueError, match="bt_ssim"):
        SynthRecipe([vol], [vol], [vol], bt_ssim=-1.0, **kw)
    with pytest.raises(ValueError, match="needs bt > 0"):
        SynthRecipe([vol], [vol], [vol], **{**kw, "bt": 0.0, "bt_ssim": 0.5})


def test_hybrid_sct_takes_soft_tissue_from_the_tissue_mixture_and_the_rest_from_the_generator():
    """Brain/CSF/muscle voxels (both sCTs in their soft-tissue ranges) come from the tissue mixture;
    a voxel either calls bone, fat or air keeps the generator's value."""
    from qmri.models.synthnet.predict import from_unit, to_unit
    from qmri.models.synthnet.train import hybrid_sct

    tm = np.array([25.0, 15.0, 40.0, 900.0, 30.0, -90.0, 30.0])
    gen = np.array([28.0, 22.0, 35.0, 850.0, 400.0, -80.0, -60.0])
    out = from_unit(hybrid_sct(torch.as_tensor(to_unit(tm, "ct")), torch.as_tensor(to_unit(gen, "ct"))).numpy(), "ct")
    np.testing.assert_allclose(out, [25.0, 15.0, 40.0, 850.0, 400.0, -80.0, -60.0], atol=1e-3)
    # with a brain map, soft-tissue voxels inside the skull take the map's value; so do T2w-dark
    # (darker than WM) voxels inside the skull that the generator puts below HYBRID_DARK_G_MAX_HU
    # (venous sinuses), but not brighter ones, nor dark ones it calls bone; the rest is unchanged
    from qmri.physics.ct_mr import tissue_t2w_intensity
    from qmri.models.synthnet.train import HYBRID_DARK_G_MAX_HU

    assert HYBRID_DARK_G_MAX_HU == 400.0
    tm = np.array([25.0, 15.0, 40.0, 900.0, 30.0, -90.0, 30.0, 25.0, 25.0, 25.0])
    gen = np.array([28.0, 22.0, 35.0, 850.0, 200.0, -80.0, -60.0, 200.0, 200.0, 600.0])
    wm = tissue_t2w_intensity("wm")
    mr = np.array([wm, 500.0, 300.0, 20.0, 250.0, 400.0, 200.0, 0.7 * wm, 0.7 * wm, 0.7 * wm])
    inside = torch.tensor([True, False, True, True, True, False, False, True, False, True])
    brain = torch.as_tensor(to_unit(np.full(10, 33.0), "ct"))
    out = from_unit(hybrid_sct(torch.as_tensor(to_unit(tm, "ct")), torch.as_tensor(to_unit(gen, "ct")), (inside, brain, torch.as_tensor(to_unit(mr, "mr")))).numpy(), "ct")
    np.testing.assert_allclose(out, [33.0, 15.0, 33.0, 850.0, 200.0, -80.0, -60.0, 33.0, 200.0, 600.0], atol=1e-3)


def test_drawn_brain_hu_follows_the_three_mixture_lines_with_per_image_compartment_hu():
    """Table signals of venous blood, WM, GM and CSF map to CT numbers inside each compartment's
    published range; a 50/50 WM/GM signal maps to the mean of that image's WM and GM numbers, a
    signal darker than blood to blood's; the numbers are drawn per image around the table means."""
    from qmri.models.synthnet.predict import from_unit, to_unit
    from qmri.physics.ct_mr import TISSUE_PROPERTIES as TP
    from qmri.physics.ct_mr import tissue_t2w_intensity as sig
    from qmri.models.synthnet.train import drawn_brain_hu

    s = np.array([sig("venous_blood"), sig("wm"), 0.5 * (sig("wm") + sig("cortical_gm")), sig("cortical_gm"), sig("csf"), 0.5 * sig("venous_blood")])
    x = torch.as_tensor(np.broadcast_to(to_unit(s, "mr"), (200, 1, 1, 6)).copy())
    hu = from_unit(drawn_brain_hu(x, torch.Generator().manual_seed(0)).numpy(), "ct")[:, 0, 0]
    for j, c in enumerate(("venous_blood", "wm", None, "cortical_gm", "csf")):
        if c is None:
            continue
        lo, hi = TP[c].hu_range
        assert np.all((hu[:, j] >= lo - 0.02) & (hu[:, j] <= hi + 0.02)), c
        assert abs(hu[:, j].mean() - TP[c].hu) < 0.5, c  # 200 draws of sd <= 3 HU (clipping is near-symmetric)
        assert 0.5 * TP[c].hu_sd < hu[:, j].std() < 1.2 * TP[c].hu_sd, c
    np.testing.assert_allclose(hu[:, 2], 0.5 * (hu[:, 1] + hu[:, 3]), atol=0.05)
    np.testing.assert_allclose(hu[:, 5], hu[:, 0], atol=0.02)
    assert np.corrcoef(hu[:, 1], hu[:, 4])[0, 1] < 0.3  # independent draws per compartment


def test_backtranslation_hybrid_with_the_drawn_brain(held_out):
    """``hybrid_brain='drawn_mixture'``: the MR pool carries the tissue-mixture inside-the-skull mask,
    and the hybrid term inverts the hybrid whose brain is :func:`drawn_brain_hu` of the training MR
    (its draws, then the CT noise, after the back-translation's own draws); unknown names are refused."""
    from monai.losses import SSIMLoss

    from qmri.models.synthnet.train import SynthRecipe, add_ct_noise, drawn_brain_hu, hybrid_sct

    def expected_of(d):
        inside = torch.as_tensor(d["batch"]["mr_inside_skull"])
        assert inside.float().mean() > 0.1
        brain = (inside, drawn_brain_hu(d["x"]), d["x"])
        out = d["net"].g_ct2mr(add_ct_noise(hybrid_sct(torch.as_tensor(d["batch"]["mr_pseudo_ct"]), d["gx"], brain), d["recipe"].ct_noise_sd_hu))
        return torch.nn.functional.l1_loss(out, d["x"]) + 0.5 * SSIMLoss(spatial_dims=2, data_range=2.0, win_size=7)(out, d["x"])

    expected, diff, vol, kw = _extra_term(held_out, {"bt_hybrid": 2.0, "hybrid_brain": "drawn_mixture"}, expected_of, bt_ssim=0.5)
    assert expected > 0.05
    assert abs(diff - 2.0 * expected) < 1e-4
    with pytest.raises(ValueError, match="hybrid_brain"):
        SynthRecipe([vol], [vol], [vol], **{**kw, "bt_hybrid": 0.5, "hybrid_brain": "atlas"})


def test_backtranslation_hybrid_term_inverts_the_hybrid_sct_of_the_training_mr(held_out):
    """``bt_hybrid`` adds w x (L1 + bt_ssim x (1 - SSIM)) of F(hybrid sCT of x + CT noise) against the
    real MR x, nothing else (its CT noise drawn after the back-translation's own draws); it needs
    back-translation and the tissue-mixture pseudo-sCT."""
    from monai.losses import SSIMLoss

    from qmri.models.synthnet.train import SynthRecipe, add_ct_noise, hybrid_sct

    def expected_of(d):
        out = d["net"].g_ct2mr(add_ct_noise(hybrid_sct(torch.as_tensor(d["batch"]["mr_pseudo_ct"]), d["gx"]), d["recipe"].ct_noise_sd_hu))
        return torch.nn.functional.l1_loss(out, d["x"]) + 0.5 * SSIMLoss(spatial_dims=2, data_range=2.0, win_size=7)(out, d["x"])

    expected, diff, vol, kw = _extra_term(held_out, {"bt_hybrid": 2.0}, expected_of, bt_ssim=0.5)
    assert expected > 0.05
    assert abs(diff - 2.0 * expected) < 1e-4
    with pytest.raises(ValueError, match="bt_hybrid"):
        SynthRecipe([vol], [vol], [vol], **{**kw, "bt_hybrid": -1.0})
    with pytest.raises(ValueError, match="bt_hybrid is a term of the back-translation"):
        SynthRecipe([vol], [vol], [vol], **{**kw, "bt": 0.0, "bt_ssim": 0.0, "bt_hybrid": 0.5})
    with pytest.raises(ValueError, match="tissue_mixture"):
        SynthRecipe([vol], [vol], [vol], **{**kw, "bt_hybrid": 0.5, "pseudo_sct": "bulk_density"})


def test_shift_average_is_aligned_and_averages_the_grid_phases():
    """``shift_average`` k: an identity generator gives back its input exactly (every offset is
    cropped back into register); a stride-2 block average (2x2 mean, nearest upsampling: the
    aliasing of a stride-2 generator) averaged over the 2 x 2 offsets is, inside the slice, the
    separable [1, 2, 1] / 4 filter, whatever the grid phase; k < 1 is refused."""
    from qmri.models.synthnet.predict import translate_slices

    def filter_121(y):
        return ndimage.correlate1d(ndimage.correlate1d(y, [0.25, 0.5, 0.25], axis=1), [0.25, 0.5, 0.25], axis=2)

    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (2, 21, 18)).astype(np.float32)
    for k in (1, 2, 3):
        np.testing.assert_allclose(translate_slices(torch.nn.Identity(), x, shift_average=k), x, atol=1e-6)
    block = torch.nn.Sequential(torch.nn.AvgPool2d(2), torch.nn.Upsample(scale_factor=2, mode="nearest"))
    for y in (x, x[:, 1:, 1:]):  # two grid phases
        got = translate_slices(block, y, flip_average=False, shift_average=2)
        np.testing.assert_allclose(got[:, 2:-2, 2:-2], filter_121(y)[:, 2:-2, 2:-2], atol=1e-5)
    plain = translate_slices(block, x, flip_average=False, shift_average=1)
    assert np.abs(plain - filter_121(x))[:, 2:-2, 2:-2].max() > 0.1  # without the offsets it is not that filter
    with pytest.raises(ValueError, match="shift_average"):
        translate_slices(torch.nn.Identity(), x, shift_average=0)


def test_flip_average_makes_the_translation_mirror_equivariant(held_out):
    """With left-right flip averaging (and the default in-plane offset averaging, whose offsets are
    mirror-symmetric) a mirrored CT gives exactly the mirrored sMR (whole-slice inference, no
    tiling); without it the shipped generator is measurably not equivariant."""
    from qmri.models.synthnet.predict import synthetic_mr

    _, ct, _ = held_out
    net, _ = load_synthnet(WEIGHTS)
    net.tile = None  # whole padded slices: the tiling grid is then symmetric too
    slab = ct[..., 40:44]
    both = synthetic_mr(net, slab), synthetic_mr(net, slab[::-1].copy())[::-1]
    plain = synthetic_mr(net, slab, flip_average=False, shift_average=1), synthetic_mr(net, slab[::-1].copy(), flip_average=False, shift_average=1)[::-1]
    err, err_plain = float(np.abs(both[0] - both[1]).max()), float(np.abs(plain[0] - plain[1]).max())
    assert err < 0.05, err  # a.u. (CSF ~580 a.u.): float32 rounding only
    assert err_plain > 10.0 and err_plain > 100 * err, (err, err_plain)
