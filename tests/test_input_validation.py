"""Every bad input is a clear ValueError (HTTP 422 in the app), never a crash or a silently wrong map.

Pure lib (no server): typed sidecar readers, the QSM field unit check, the safe NIfTI loader, the
``map`` request parameter, and hostile arrays given straight to each task's ``run``.
"""

from __future__ import annotations

import gzip
import json
import math
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from qmri.io import sidecar_values as sv
from qmri.io.maps import QuantMap, requested_names, select_maps
from qmri.io.nifti_input import InputTooLarge, check_nifti_header, load_input_volume
from qmri.physics.dipole import GAMMA_BAR_MHZ_PER_T, forward_field
from qmri.tasks.oef import OEF
from qmri.tasks.pvc import PVC
from qmri.tasks.qsm import FIELD_P99_MAX_PPM, check_local_field_ppm, qsm_specs
from qmri.tasks.synthesis import SYNTHETIC_CT, SYNTHETIC_MR

REPO = Path(__file__).resolve().parents[1]
STUDIES = REPO / "sample-data" / "studies"
QSM, QSM_RAW = qsm_specs(None)
SPECS = {s.name: s for s in (OEF, QSM, QSM_RAW, PVC, SYNTHETIC_CT, SYNTHETIC_MR)}
AFF = np.diag([2.0, 2.0, 2.0, 1.0])
TE8 = [4.5, 9.5, 14.5, 19.5, 24.5, 29.5, 34.5, 39.5]
TE4 = TE8[:4]


def _ball(n=12, r=5.0):
    g = np.indices((n, n, n)).astype(np.float32) - (n - 1) / 2
    return np.sqrt((g**2).sum(0)) <= r


def _tiny_inputs():
    """Small valid inputs of each task, so that only the sidecar or array under test is wrong."""
    rng = np.random.default_rng(0)
    ball = _ball()
    field = np.where(ball, rng.normal(0, 0.03, ball.shape), 0).astype(np.float32)
    oef = np.concatenate([np.repeat(ball[..., None], 8, -1) * np.exp(-np.array(TE8) / 40.0), (ball * 0.05)[..., None]], -1).astype(np.float32)
    raw = np.concatenate([np.repeat(ball[..., None], 4, -1) * 1.0, np.zeros(ball.shape + (4,)), ball[..., None]], -1).astype(np.float32)
    pet = (1.0 + ball).astype(np.float32)
    return {
        "oef": (oef, {"echo_times_ms": TE8, "B0_T": 3.0}, "qq_fit"),
        "qsm": (field, {"B0_dir": [0, 0, 1], "B0_T": 3.0}, "tkd"),
        "qsm_raw": (raw, {"echo_times_ms": TE4, "B0_dir": [0, 0, 1], "B0_T": 3.0}, "tkd"),
        "pvc": (pet, {"psf_fwhm_mm": 6.0}, "sharpen"),
        "synthetic_ct": (pet * 300, {}, "bulk_density"),
        "synthetic_mr": (np.where(ball, 40.0, -1000.0).astype(np.float32), {}, "bulk_density"),
    }


INPUTS = _tiny_inputs()


def _run(task, image=None, sidecar=None, method=None, affine=AFF, **changes):
    img, sc, m = INPUTS[task]
    sc = dict(sc if sidecar is None else sidecar, **changes)
    return SPECS[task].run(img if image is None else image, affine, sc, method or m)


# ----------------------------------------------------------------------------- sidecar values
NAN, INF = float("nan"), float("inf")
B0_T_BAD = [[3], {"x": 3}, "3", True, NAN, INF, -1.0, 0, 25.0, 10**400, 10**5000, [[3.0]]]
B0_DIR_BAD = [[0, 0], [0, 0, "1"], [0, 0, True], [NAN, 0, 1], [0, 0, INF], [0, 0, 0], "z", {"x": 1}, [[0], [0], [1]], 1.0]
TE_BAD = [
    [NAN, 9.5, 14.5, 19.5],
    ["4.5", "9.5", "14.5", "19.5"],
    [True, 9.5, 14.5, 19.5],
    [19.5, 14.5, 9.5, 4.5],
    [4.5, 4.5, 9.5, 14.5],
    [-4.5, 9.5, 14.5, 19.5],
    [4.5, 9.5, 14.5, 1e6],
    4.5,
    "4.5, 9.5",
    {"te": [4.5]},
    [[4.5], [9.5], [14.5], [19.5]],
    [4.5, 9.5, 10**400, 19.5],
]
FWHM_BAD = [{"x": 6}, [6, 6], "6", True, NAN, [6, 6, NAN], [6, 6, True], 0, -6, 40.0, [[6]], [6, 6, "6"], list(range(1, 10**4))]


def _assert_names(err, key, value):
    msg = str(err.value)
    assert key in msg and "must be" in msg, msg
    assert sv.show(value)[:30] in msg, msg  # the bad value, quoted
    assert len(msg) < 400, msg


@pytest.mark.parametrize("task", ["oef", "qsm", "qsm_raw"])
@pytest.mark.parametrize("value", B0_T_BAD, ids=sv.show)
def test_b0_t_type_and_range(task, value):
    with pytest.raises(ValueError) as e:
        _run(task, B0_T=value)
    _assert_names(e, "B0_T", value)
    assert "tesla" in str(e.value)


@pytest.mark.parametrize("task", ["qsm", "qsm_raw"])
@pytest.mark.parametrize("value", B0_DIR_BAD, ids=sv.show)
def test_b0_dir_type(task, value):
    with pytest.raises(ValueError) as e:
        _run(task, B0_dir=value)
    _assert_names(e, "B0_dir", value)


@pytest.mark.parametrize("task", ["oef", "qsm_raw"])
@pytest.mark.parametrize("value", TE_BAD, ids=lambda v: sv.show(v)[:30])
def test_echo_times_type_order_and_range(task, value):
    with pytest.raises(ValueError) as e:
        _run(task, echo_times_ms=value)
    _assert_names(e, "echo_times_ms", value)
    assert "ms" in str(e.value)


def test_echo_times_in_seconds_are_not_plausible():
    with pytest.raises(ValueError, match="not plausible GRE echo times in ms"):
        _run("oef", echo_times_ms=[t / 1000 for t in TE8])


@pytest.mark.parametrize("value", FWHM_BAD, ids=lambda v: sv.show(v)[:30])
def test_psf_fwhm_type_and_range(value):
    with pytest.raises(ValueError) as e:
        _run("pvc", psf_fwhm_mm=value)
    _assert_names(e, "psf_fwhm_mm", value)
    assert "mm" in str(e.value)
    assert len(str(e.value)) < 400  # a 10^4-element list is quoted cut short


@pytest.mark.parametrize("task, key", [("oef", "echo_times_ms"), ("qsm", "B0_dir"), ("qsm_raw", "B0_dir"), ("pvc", "psf_fwhm_mm")])
def test_missing_or_null_required_key(task, key):
    sc = dict(INPUTS[task][1])
    del sc[key]
    for sidecar in (sc, dict(sc, **{key: None})):
        with pytest.raises(ValueError, match=f"sidecar lacks {key}"):
            _run(task, sidecar=sidecar)


@pytest.mark.parametrize(
    "task, units, match",
    [
        ("pvc", 5, "units"),
        ("pvc", {"a": 1}, "units"),
        ("pvc", [], "no entry for channel 0"),
        ("pvc", ["SUV" * 20], "at most 32 characters"),
        ("pvc", [7], "units"),
        ("qsm", "Hz", "local field must be in ppm.*'Hz'"),
        ("qsm", ["rad"], "local field must be in ppm.*'rad'"),
        ("oef", ["a.u."] * 8 + ["ppb"], "QSM channel.*must be in ppm.*'ppb'"),
        ("qsm_raw", ["a.u."] * 4 + ["deg"] * 4 + ["1"], "phase channels.*rad.*'deg'"),
    ],
)
def test_units_are_checked(task, units, match):
    with pytest.raises(ValueError, match=match):
        _run(task, units=units)


def test_the_units_string_is_passed_through():
    assert _run("pvc", units=["kBq/ml", "probability"])[0].units == "kBq/ml"
    assert _run("pvc")[0].units == "SUV"


@pytest.mark.parametrize("task", ["oef", "qsm", "pvc"])
def test_sidecar_not_an_object(task):
    with pytest.raises(ValueError, match="sidecar must be a JSON object"):
        SPECS[task].run(INPUTS[task][0], AFF, ["B0_T", 3], INPUTS[task][2])


def test_readers_accept_good_values():
    assert sv.field_strength_t({}) == 3.0 and sv.field_strength_t({"B0_T": 7}) == 7.0
    assert sv.fwhm_mm({"psf_fwhm_mm": 6}) == (6.0, 6.0, 6.0) and sv.fwhm_mm({"psf_fwhm_mm": [5, 6, 7.5]}) == (5.0, 6.0, 7.5)
    assert np.allclose(sv.direction({"B0_dir": [0, 3, 4]}), (0, 0.6, 0.8))
    assert np.allclose(sv.direction({"B0_dir": [1e308, 0, 1e308]}), (math.sqrt(0.5), 0, math.sqrt(0.5)))
    assert sv.echo_times_ms({"echo_times_ms": TE4}).tolist() == TE4
    assert "..." in sv.show("x" * 500) and len(sv.show("x" * 500)) <= sv.SHOW_CHARS
    assert sv.show(list(range(10**6))).endswith("...]") and "too large" in sv.show(10**5000)


# ----------------------------------------------------------------------------- QSM field units
def _sample_field(study):
    img = nib.load(STUDIES / f"{study}.nii.gz")
    meta = json.loads((STUDIES / f"{study}.json").read_text())
    return np.asarray(img.dataobj, dtype=np.float32), img.affine, meta


@pytest.fixture(scope="module")
def lesion_fields():
    """Local fields (ppm) of an ellipsoid brain with a haematoma (+1.4 ppm, 10 mm radius) and a
    calcification (-1.4 ppm), B0 along z and tilted 30 and 57 degrees."""
    sh = (48, 48, 48)
    g = np.indices(sh).astype(np.float32) - 23.5

    def ell(c, r):
        return sum(((g[i] - c[i]) / r[i]) ** 2 for i in range(3)) <= 1

    mask = ell((0, 0, 0), (21, 18, 16))
    chi = np.where(ell((0, 0, 0), (15, 12, 10)), -0.03, 0.0)
    chi[ell((-6, 3, 0), (4, 4, 4))] = 0.15
    chi[ell((8, -4, 2), (5, 5, 5))] = 1.4
    chi[ell((-4, -8, -5), (2, 2, 2))] = -1.4
    chi *= mask
    out = []
    for b0 in ([0, 0, 1], [0, math.sin(0.52), math.cos(0.52)], [math.sin(1.0), 0, math.cos(1.0)]):
        f = np.asarray(forward_field(chi, 2.0, b0)) * mask
        out.append((np.where(mask, f - f[mask].mean(), 0).astype(np.float32), mask, b0))
    return out


@pytest.mark.parametrize("study", ["sub-1000_qsm", "sub-1001_qsm"])
def test_genuine_sample_fields_pass_with_margin(study):
    field, aff, meta = _sample_field(study)
    mask = field != 0
    p99 = np.percentile(np.abs(field[mask]), 99)
    assert p99 < FIELD_P99_MAX_PPM / 5, p99  # measured 0.12 ppm (max 1.26 ppm inside lesions)
    check_local_field_ppm(field, mask, meta["B0_T"])


def test_genuine_lesion_fields_pass_and_invert(lesion_fields):
    for field, mask, b0 in lesion_fields:
        assert np.abs(field[mask]).max() > 0.4  # a strong lesion field next to the haematoma
        check_local_field_ppm(field, mask, 3.0)
        chi = _run("qsm", image=field, B0_dir=b0, method="tkd")[0].data
        assert np.isfinite(chi).all() and chi[mask].max() > 0.5


@pytest.mark.parametrize("b0_t", [3.0, 1.5])
def test_field_in_hz_is_refused(b0_t):
    field, aff, meta = _sample_field("sub-1000_qsm")
    hz = field * GAMMA_BAR_MHZ_PER_T * b0_t
    mask = field != 0
    assert np.percentile(np.abs(hz[mask]), 99) < 50  # the old max > 50 check let most such fields through
    with pytest.raises(ValueError, match=r"does not look like ppm.*Hz") as e:
        check_local_field_ppm(hz, mask, b0_t)
    assert f"1 ppm = {GAMMA_BAR_MHZ_PER_T * b0_t:.4g} Hz" in str(e.value)
    # the same through the task, with the sidecar's field strength
    crop = tuple(slice(n // 2 - 12, n // 2 + 12) for n in hz.shape)
    with pytest.raises(ValueError, match="Hz"):
        QSM.run(hz[crop], aff, dict(meta, B0_T=b0_t), "tkd")


def test_field_in_radians_is_refused(lesion_fields):
    field, mask, _ = lesion_fields[0]
    phase = field * 2 * np.pi * GAMMA_BAR_MHZ_PER_T * 3.0 * 0.020  # phase (rad) at TE = 20 ms, 3 T
    with pytest.raises(ValueError, match="radians"):
        check_local_field_ppm(phase, mask, 3.0)


def test_field_in_tesla_and_constant_fields_are_refused(lesion_fields):
    field, mask, _ = lesion_fields[0]
    with pytest.raises(ValueError, match="tesla"):
        check_local_field_ppm(field * 3e-6, mask, 3.0)
    with pytest.raises(ValueError, match="constant"):
        _run("qsm", image=np.where(mask, 0.05, 0).astype(np.float32))
    with pytest.raises(ValueError, match="constant"):
        _run("qsm", image=mask.astype(np.float32))  # a mask sent as the field


# ----------------------------------------------------------------------------- NIfTI input
def _save(path, data, affine=AFF):
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def _header_only(path, shape, dtype=np.float32, **fields):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    for k, v in fields.items():
        hdr[k] = v
    raw = hdr.binaryblock + b"\x00" * 4
    Path(path).write_bytes(gzip.compress(raw) if str(path).endswith(".gz") else raw)
    return path


def test_good_input_loads_as_float32(tmp_path):
    data = np.random.default_rng(1).random((5, 6, 7, 2))
    vol = load_input_volume(_save(tmp_path / "a.nii.gz", data))
    assert vol.data.dtype == np.float32 and vol.data.shape == data.shape and np.allclose(vol.affine, AFF)
    np.testing.assert_allclose(vol.data, data, rtol=1e-6)
    # scaled int16 and NIfTI-2, whatever the file name
    img = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), AFF)
    img.header.set_slope_inter(0.5, 1.0)
    nib.save(img, tmp_path / "s.nii")
    (tmp_path / "s.nii").rename(tmp_path / "upload.bin")
    assert np.allclose(load_input_volume(tmp_path / "upload.bin").data.ravel(), np.arange(60) * 0.5 + 1)
    nib.save(nib.Nifti2Image(data.astype(np.float32), AFF), tmp_path / "n2.nii.gz")
    assert load_input_volume(tmp_path / "n2.nii.gz").data.shape == data.shape
    assert load_input_volume(nib.Nifti1Image(data, AFF)).data.dtype == np.float32
    with pytest.raises(ValueError, match="must be a NIfTI image, got a MGHImage"):
        load_input_volume(nib.MGHImage(data.astype(np.float32), AFF))


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_input_is_refused(tmp_path, dtype):
    p = _save(tmp_path / "c.nii.gz", (np.ones((4, 4, 4)) * (1 + 2j)).astype(dtype))
    with pytest.raises(ValueError, match="complex-valued"):
        load_input_volume(p)
    with pytest.raises(ValueError, match="complex-valued"):  # an image already in memory
        load_input_volume(nib.load(p))
    with pytest.raises(ValueError, match="complex-valued"):  # straight to a task too
        _run("qsm", image=np.ones((12, 12, 12), dtype))


def test_rgb_input_is_refused(tmp_path):
    rgb = np.zeros((4, 4, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    with pytest.raises(ValueError, match="RGB"):
        load_input_volume(_save(tmp_path / "rgb.nii.gz", rgb))


@pytest.mark.parametrize(
    "shape, match",
    [((8, 8), "3D volume or a 4D"), ((4, 4, 4, 1, 2), "3D volume or a 4D"), ((4, 4, 0), "at least 1"), ((2, 2, 2, 65), "65 channels")],
)
def test_header_shape_is_checked(tmp_path, shape, match):
    p = _header_only(tmp_path / "h.nii", shape)
    with pytest.raises(ValueError, match=match):
        load_input_volume(p)


def test_header_bomb_is_refused_fast_without_allocating(tmp_path):
    p = _header_only(tmp_path / "bomb.nii.gz", (1200, 1200, 1200))
    assert p.stat().st_size < 200
    for call in (lambda: check_nifti_header(p, max_bytes=2**30), lambda: load_input_volume(p)):
        tracemalloc.start()
        t0 = time.perf_counter()
        with pytest.raises(InputTooLarge, match=r"\(1200, 1200, 1200\).*limit") as e:
            call()
        dt = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert dt < 0.05 and peak < 2**20, (dt, peak)
        assert isinstance(e.value, ValueError)
    info = check_nifti_header(_save(tmp_path / "ok.nii.gz", np.zeros((4, 5, 6), np.float32)), max_bytes=480)
    assert info.shape == (4, 5, 6) and info.nbytes == 480
    with pytest.raises(InputTooLarge, match="480 bytes.*479 bytes"):
        check_nifti_header(tmp_path / "ok.nii.gz", max_bytes=479)
    with pytest.raises(InputTooLarge, match="limit of 100"):
        load_input_volume(tmp_path / "ok.nii.gz", max_voxels=100)


def _corrupt(tmp_path, how):
    p = _save(tmp_path / "scan_of_patient.nii.gz", np.random.default_rng(2).random((30, 30, 30)).astype(np.float32))
    b = bytearray(p.read_bytes())
    if how == "truncated":
        b = b[: len(b) // 2]
    elif how == "flipped":
        b[len(b) // 2 : len(b) // 2 + 64] = b"\xff" * 64
    elif how == "garbage":
        b = bytearray(b"this is not an image at all" * 10)
    elif how == "empty":
        b = bytearray()
    elif how == "short_nii":  # uncompressed, data cut off
        p = _save(tmp_path / "scan_of_patient.nii", np.ones((30, 30, 30), np.float32))
        b = bytearray(p.read_bytes())[:5000]
    elif how == "extension":  # extension flag set, one extension claiming 1 GB
        p = tmp_path / "scan_of_patient.nii"
        raw = bytearray(_header_only(p, (4, 4, 4), vox_offset=368).read_bytes())
        raw[348] = 1
        b = raw + np.array([2**30, 0], "<i4").tobytes() + b"\x00" * 8 + b"\x00" * 256
    p.write_bytes(bytes(b))
    return p


@pytest.mark.parametrize("how", ["truncated", "flipped", "garbage", "empty", "short_nii", "extension"])
def test_corrupt_files_are_refused_without_the_path(tmp_path, how):
    p = _corrupt(tmp_path, how)
    with pytest.raises(ValueError, match="cannot read the input as NIfTI") as e:
        load_input_volume(p)
    msg = str(e.value)
    assert str(tmp_path) not in msg and "scan_of_patient" not in msg and "/tmp" not in msg, msg
    if how in ("garbage", "empty", "extension"):
        with pytest.raises(ValueError, match="cannot read"):
            check_nifti_header(p, max_bytes=2**30)


def test_missing_file_message_has_no_path(tmp_path):
    with pytest.raises(ValueError, match="does not exist") as e:
        load_input_volume(tmp_path / "nope.nii.gz")
    assert str(tmp_path) not in str(e.value)


def test_bad_geometry_and_values_are_refused(tmp_path):
    with pytest.raises(ValueError, match="pixdim"):
        load_input_volume(_pad(_header_only(tmp_path / "z.nii", (2, 2, 2), pixdim=[1, 0, 1, 1, 0, 0, 0, 0]), 32))
    srow = dict(sform_code=1, qform_code=0, srow_x=[1, 0, 0, 0], srow_y=[1, 0, 0, 0], srow_z=[0, 0, 1, 0])
    with pytest.raises(ValueError, match="singular"):
        load_input_volume(_pad(_header_only(tmp_path / "s.nii", (2, 2, 2), **srow), 32))
    nan = np.ones((4, 4, 4), np.float32)
    nan[0, 0, :2] = np.nan
    with pytest.raises(ValueError, match="2 NaN/Inf voxels"):
        load_input_volume(_save(tmp_path / "n.nii.gz", nan))
    huge = np.ones((4, 4, 4))
    huge[1, 1, 1] = 1e300  # float64 beyond float32's range
    with pytest.raises(ValueError, match="1 NaN/Inf voxels.*float32"):
        load_input_volume(_save(tmp_path / "h.nii.gz", huge))


def _pad(path, nbytes):
    with open(path, "ab") as f:
        f.write(b"\x00" * nbytes)
    return path


# ----------------------------------------------------------------------------- map parameter
@pytest.mark.parametrize(
    "value, match",
    [(5, "'map' must be a map name or a list"), ({"a": 1}, "'map' must be a map name"), ([], "empty list"), ([1], "must hold map names"), (["OEF", "OEF"], "more than once"), (["T2"], "unknown map")],
)
def test_map_parameter_types(value, match):
    with pytest.raises(ValueError, match=match) as e:
        requested_names(["OEF", "R2"], value)
    assert "['OEF', 'R2']" in str(e.value)
    maps = [QuantMap("OEF", np.zeros((2, 2, 2)), "%", (0, 80)), QuantMap("R2", np.zeros((2, 2, 2)), "1/s", (0, 40))]
    with pytest.raises(ValueError, match=match):
        select_maps(maps, value)


def test_map_parameter_good_values():
    assert requested_names(["OEF", "R2"], None) == ["OEF", "R2"]
    assert requested_names(["OEF", "R2"], "R2") == ["R2"] and requested_names(["OEF", "R2"], ("R2", "OEF")) == ["R2", "OEF"]


# ----------------------------------------------------------------------------- hostile arrays
HOSTILE = {
    "1x1x1": (lambda n: np.ones((1, 1, 1) + ((n,) if n else ()), np.float32)),
    "0 channels": (lambda n: np.zeros((12, 12, 12, 0), np.float32)),
    "5D": (lambda n: np.zeros((12, 12, 12, 1, 1), np.float32)),
    "all zero": (lambda n: np.zeros((12, 12, 12) + ((n,) if n else ()), np.float32)),
    "NaN": (lambda n: np.full((12, 12, 12) + ((n,) if n else ()), np.nan, np.float32)),
    "complex": (lambda n: np.ones((12, 12, 12) + ((n,) if n else ()), np.complex64)),
    "strings": (lambda n: np.full((12, 12, 12) + ((n,) if n else ()), "a")),
}
CHANNELS = {"oef": 9, "qsm": None, "qsm_raw": 9, "pvc": None, "synthetic_ct": None, "synthetic_mr": None}


@pytest.mark.parametrize("case", list(HOSTILE))
@pytest.mark.parametrize("task", list(SPECS))
def test_hostile_arrays_are_value_errors(task, case):
    """A ValueError naming the problem, or (for a 1-voxel or all-zero image some methods can
    process) finite maps on the input grid; never another exception."""
    image = HOSTILE[case](CHANNELS[task])
    try:
        maps = _run(task, image=image)
    except ValueError as e:
        assert len(str(e)) > 10
        return
    assert case in ("1x1x1", "all zero"), f"{task} accepted a {case} input"
    for m in maps:
        assert m.data.shape == image.shape[:3] and np.isfinite(m.data).all()


@pytest.mark.parametrize("task", list(SPECS))
@pytest.mark.parametrize("affine, match", [(np.diag([1.0, 0, 1, 1]), "singular"), (np.full((4, 4), np.nan), "not a finite"), (np.diag([0.002, 0.002, 0.002, 1]), "metres")])
def test_bad_affine_is_refused(task, affine, match):
    with pytest.raises(ValueError, match=match):
        _run(task, affine=affine)


def test_integer_and_bool_arrays_are_converted():
    mr = INPUTS["synthetic_mr"][0]
    assert _run("synthetic_mr", image=mr.astype(np.int16))[0].data.dtype == np.float32
    assert np.isfinite(_run("synthetic_ct", image=(INPUTS["synthetic_ct"][0] > 300))[0].data).all()


def test_task_specific_plausibility():
    oef = INPUTS["oef"][0].copy()
    oef[..., -1] *= 1000  # QSM in ppb
    with pytest.raises(ValueError, match="QSM channel does not look like ppm.*ppb"):
        _run("oef", image=oef)
    with pytest.raises(ValueError, match="spans 60 voxels"):
        _run("pvc", affine=np.diag([0.1, 0.1, 0.1, 1]))
    seg = np.concatenate([INPUTS["pvc"][0][..., None], np.full((12, 12, 12, 4), 2.0, np.float32)], -1)
    with pytest.raises(ValueError, match="probabilities.*0..1"):
        _run("pvc", image=seg, method="rbv")
    with pytest.raises(ValueError, match="a head CT in HU lies within"):
        _run("synthetic_mr", image=np.full((12, 12, 12), -1e30, np.float32))
    raw = INPUTS["qsm_raw"][0].copy()
    raw[..., -1] = 0
    raw[5:8, 5:8, 5:8, -1] = 1  # 27 voxels: nothing left after V-SHARP's erosion
    with pytest.raises(ValueError, match="after V-SHARP's erosion"):
        _run("qsm_raw", image=raw)
