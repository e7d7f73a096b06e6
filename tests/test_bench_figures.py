"""The benchmarks' pictures: one helper (qmri.bench.figures) with a colour bar in units on every
panel, used by every bench's figure; each figure function runs on small made-up maps."""

from __future__ import annotations

import numpy as np
import pytest


def _labels_of_colour_bars(monkeypatch):
    """Record every colour bar label the helper sets."""
    import matplotlib.colorbar

    seen = []
    orig = matplotlib.colorbar.Colorbar.set_label

    def spy(self, label, *a, **k):
        if label:  # matplotlib itself sets an empty label when it builds a colour bar
            seen.append(label)
        return orig(self, label, *a, **k)

    monkeypatch.setattr(matplotlib.colorbar.Colorbar, "set_label", spy)
    return seen


def test_map_grid_draws_each_panel_with_its_units(tmp_path, monkeypatch):
    from qmri.bench.figures import Panel, axial, coronal, map_grid

    seen = _labels_of_colour_bars(monkeypatch)
    vol = np.random.default_rng(0).normal(size=(12, 14, 10))
    mask = np.zeros(vol.shape, bool)
    mask[3:9, 3:11, 2:8] = True
    outline = np.zeros(vol.shape, np.int8)
    outline[4:6, 4:6, 4:6] = 1
    rows = [[Panel("a", axial(vol, 5), "ppm", -1, 1, mask=axial(mask, 5), outline=axial(outline, 5)), Panel("b", coronal(vol, 7), "HU", -2, 2, "magma")], [Panel("c", axial(vol, 2), "SUV", 0, 1, "hot")]]
    out = map_grid(tmp_path / "f.png", rows, "title")
    assert out.stat().st_size > 1000 and seen == ["ppm", "HU", "SUV"]
    import matplotlib.image

    img = matplotlib.image.imread(out)
    assert img.ndim == 3 and img[..., :3].std() > 0.05  # something was drawn


def test_every_bench_figure_runs_on_small_maps_with_units(tmp_path, monkeypatch):
    from qmri.bench import oef, pvc, qsm, synth

    seen = _labels_of_colour_bars(monkeypatch)
    rng = np.random.default_rng(1)
    shape = (16, 18, 14)
    vol = lambda scale=1.0: rng.random(shape) * scale  # noqa: E731
    mask = np.zeros(shape, bool)
    mask[3:13, 3:15, 3:11] = True
    qsm._figure(tmp_path / "q.png", vol(0.1), {m: vol(0.1) for m in qsm.METHODS}, mask)
    outs = {k: vol(2.0) for k in ("input", "richardson_lucy", "rbv@ideal", "rbv@realistic", "iterative_yang@realistic", "pvcnet", "pvcnet_fwhm")}
    pvc._figure(tmp_path / "p.png", outs, vol(2.0), mask, 6.5)
    synth._picture(tmp_path / "s.png", vol(600), vol(1000) - 500, vol(1000) - 500, vol(600), vol(1000) - 500, vol(1000) - 500, mask)
    core = np.zeros(shape, bool)
    core[6:9, 6:9, 6:9] = True
    oef._figure(tmp_path / "o.png", vol(60), mask, {"infarct_core": {"mask": core}}, {"best": (vol(60), vol(10)), "qq_fit": (vol(60), None)}, "toy")
    from types import SimpleNamespace

    from qmri.bench import oef_ood

    hot, cold = np.zeros(shape, bool), np.zeros(shape, bool)
    hot[4:7, 5:8, 6:9], cold[10:13, 5:8, 6:9] = True, True
    rois = {"high_oef": hot, "high_oef_ref": np.flip(hot, 0), "low_oef": cold, "low_oef_ref": np.flip(cold, 0), "brain": mask}
    ph = oef_ood.OODPhantom(np.concatenate([vol(1.0)[..., None]] * 9, -1), mask, np.where(mask, vol(60), np.nan), rois, {}, np.eye(4), {})
    oef_ood._figure(tmp_path / "d.png", ph, {k: SimpleNamespace(oef=40.0) for k in rois}, vol(60), "toy")
    for f in ("q", "p", "s", "o", "d"):
        assert (tmp_path / f"{f}.png").stat().st_size > 1000
    assert {"chi (ppm)", "SUV", "HU", "a.u.", "OEF (%)", "sd (%-points)"} <= set(seen)
    n_qsm = len([m for m in qsm.METHODS if m != "constant"]) + 3  # truth, methods, two differences
    assert seen.count("chi (ppm)") == 2 * n_qsm and seen.count("SUV") == 16


@pytest.mark.parametrize("bench", ["qsm", "pvc", "synth", "oef", "oef_ood"])
def test_no_bench_draws_pictures_with_its_own_plotting_code(bench):
    import inspect

    import qmri.bench as b

    src = inspect.getsource(__import__(f"qmri.bench.{bench}", fromlist=["x"]))
    assert "plt.subplots" not in src and "map_grid" in src, f"{b.__name__}.{bench} draws its own figure"
