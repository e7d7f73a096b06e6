"""The independent OEF simulator of ``qmri bench oef --ood`` (qmri.bench.oef_ood): its f_s quadrature
agrees with the project's series, its truths are what it painted, and the regional fit finds its
high-OEF lesion."""

import numpy as np
import pytest

from qmri.bench import oef_ood as oo
from qmri.physics.qq import QQNET_TE_S, fs


def test_the_quadrature_of_fs_matches_the_projects_series():
    x = np.concatenate([np.linspace(0.0, 2.0, 50), np.linspace(2.0, 60.0, 200)])
    q = oo.fs_quadrature(x)
    assert np.abs(q - np.asarray(fs(x))).max() < 1e-5
    assert q[0] == pytest.approx(0.0, abs=1e-12)
    # long-time limit: f_s(x) -> x - 1 (Yablonskiy and Haacke), short-time: 0.3 x^2
    assert oo.fs_quadrature(np.array([60.0]))[0] == pytest.approx(59.0, rel=0.02)
    assert oo.fs_quadrature(np.array([0.1]))[0] == pytest.approx(0.3 * 0.01, rel=0.02)


@pytest.fixture(scope="module")
def phantom():
    return oo.make_phantom(oo.SEED0)


def test_the_phantom_paints_its_lesions_and_mirrors(phantom):
    ph = phantom
    assert ph.image.shape[-1] == len(QQNET_TE_S) + 1
    mid = int(round(-ph.affine[0, 3] / ph.affine[0, 0]))
    sides = []
    for name, les in ph.lesions.items():
        roi, ref = ph.rois[name], ph.rois[name + "_ref"]
        assert ph.roi_truth[name] == pytest.approx(les["OEF"], abs=1e-6)  # every blood-carrying compartment has the lesion's OEF
        assert not (roi & ref).any() and roi.sum() > 200 and ref.sum() > 200
        others = [n for n in ph.lesions if n != name]
        assert not any((ref & ph.rois[o]).any() for o in others)  # a reference is normal tissue
        sides.append(np.argwhere(roi)[:, 0].mean() < mid)
    assert sides[0] != sides[1]  # opposite hemispheres
    assert 8 <= ph.lesions["low_oef"]["OEF"] <= 20 and 58 <= ph.lesions["high_oef"]["OEF"] <= 72
    csf = ph.mask & ~np.isfinite(ph.oef)
    assert csf.sum() > 1000 and np.isfinite(ph.oef[ph.rois["low_oef"]]).all()
    assert np.all(ph.image[~ph.mask] == 0)


def test_the_regional_fit_recovers_the_high_oef_lesion(phantom):
    """Measured C 1.06 (true 61.3 against 43.6) on this subject."""
    from qmri.classical.qq_region import region_oef

    ph = phantom
    rois = {k: ph.rois[k] for k in ("high_oef", "high_oef_ref")}
    res = {r.name: r for r in region_oef(ph.image[..., :-1], ph.image[..., -1], ph.mask, QQNET_TE_S, rois)}
    c = (res["high_oef"].oef - res["high_oef_ref"].oef) / (ph.roi_truth["high_oef"] - ph.roi_truth["high_oef_ref"])
    assert res["high_oef"].informative and 0.7 <= c <= 1.5
