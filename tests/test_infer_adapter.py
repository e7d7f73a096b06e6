"""The app's shared infer adapter: float maps on the input grid, JSON with units, 4xx on bad input."""

from __future__ import annotations

import json
import sys

import nibabel as nib
import numpy as np
import pytest
from fastapi import HTTPException

from conftest import REPO

sys.path.insert(0, str(REPO / "apps" / "qmri"))
from lib.infers.quantitative import QuantitativeInferTask  # noqa: E402

from qmri.io.maps import QuantMap  # noqa: E402

AFFINE = np.array([[-1.5, 0.1, 0, 80], [0, 1.5, 0, -110], [0, 0, 3.0, -60], [0, 0, 0, 1]])


class Scale(QuantitativeInferTask):
    """Multiplies the image by the sidecar's 'gain' (a test double of a real method)."""

    def __init__(self):
        super().__init__("scale", {"image": "3D"}, {"scaled": {"units": "a.u."}}, ("times", "plus"), "times", required_sidecar=("gain",))

    def compute(self, image, affine, sidecar, method, options):
        g = float(sidecar["gain"])
        out = image * g if method == "times" else image + g
        return [QuantMap("scaled", out, "a.u.", (0, 10))]


def _study(tmp_path, data, sidecar):
    p = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINE), p)
    if sidecar is not None:
        (tmp_path / "img.json").write_text(json.dumps(sidecar))
    return str(p)


def test_result_has_input_geometry_and_units(tmp_path):
    data = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    f, res = Scale()({"image": _study(tmp_path, data, {"gain": 3})})
    img = nib.load(f)
    assert img.shape == data.shape and np.allclose(img.affine, AFFINE)
    assert img.get_data_dtype() == np.float32
    np.testing.assert_allclose(img.get_fdata(), 3 * data, rtol=1e-6)
    assert res["maps"][0]["units"] == "a.u." and res["method"] == "times"
    info = Scale().info()
    assert info["methods"] == ["times", "plus"] and info["default_method"] == "times"


def test_sidecar_in_request_overrides_file(tmp_path):
    data = np.ones((2, 3, 4), np.float32)
    f, _ = Scale()({"image": _study(tmp_path, data, None), "sidecar": json.dumps({"gain": 2}), "method": "plus"})
    assert np.allclose(nib.load(f).get_fdata(), 3.0)


@pytest.mark.parametrize(
    "case, match",
    [("nan", "NaN"), ("no_sidecar", "missing sidecar"), ("no_key", "gain"), ("method", "unknown method 'bogus'"), ("not_nifti", "cannot read")],
)
def test_bad_input_is_422_naming_the_problem(tmp_path, case, match):
    data = np.ones((2, 3, 4), np.float32)
    req = {"image": _study(tmp_path, data, {"gain": 1})}
    if case == "nan":
        data[0, 0, 0] = np.nan
        req["image"] = _study(tmp_path, data, {"gain": 1})
    elif case == "no_sidecar":
        (tmp_path / "img.json").unlink()
    elif case == "no_key":
        (tmp_path / "img.json").write_text("{}")
    elif case == "method":
        req["method"] = "bogus"
    elif case == "not_nifti":
        (tmp_path / "img.nii.gz").write_bytes(b"not an image")
    with pytest.raises(HTTPException) as e:
        Scale()(req)
    assert e.value.status_code == 422
    assert match in e.value.detail
