"""Multi-echo inputs as Slicer holds them (Volume Sequence with a proxy, MultiVolume attributes) and
the sidecar the scene can fill: echo times and the B0 direction from the volume's geometry."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from conftest import REPO

pytest.importorskip("slicer", reason="slicer-core (Slicer's MRML without Qt) is not installed")
sys.path.insert(0, str(REPO / "slicer_extension" / "QuantitativeMaps"))

from QuantitativeMapsLib.acquisition import b0_direction_ijk, echo_times_ms, frames, sidecar_from_scene  # noqa: E402
from QuantitativeMapsLib.scene import MapSceneLogic  # noqa: E402

TE = [4.5, 9.5, 14.5, 19.5]


def _tilted_affine(deg=20.0):
    """2 mm voxels, the slab tilted ``deg`` about R (an oblique axial acquisition)."""
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    aff = np.eye(4)
    aff[:3, :3] = np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ np.diag([2.0, 2.0, 2.0])
    aff[:3, 3] = [-20, -30, -10]
    return aff


def _echo_sequence(logic, aff, with_browser=True):
    import slicer

    scene = logic.scene
    seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "mGRE")
    seq.SetIndexName("EchoTime")
    seq.SetIndexUnit("ms")
    rng = np.random.default_rng(0)
    data = rng.uniform(100, 200, (6, 7, 5, len(TE))).astype(np.float32)
    for e, te in enumerate(TE):
        frame = logic.add_volume(data[..., e], aff, f"echo {e}")
        seq.SetDataNodeAtValue(frame, f"{te:g}")
        scene.RemoveNode(frame)  # the sequence keeps its own copy
    proxy = None
    if with_browser:
        scene.RegisterNodeClass(slicer.vtkMRMLSequenceBrowserNode())
        browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "mGRE browser")
        browser.SetAndObserveMasterSequenceNodeID(seq.GetID())
        proxy = logic.add_volume(data[..., 0], aff, "mGRE")  # what the browser shows: one echo
        browser.AddProxyNode(proxy, seq, False)
    return seq, proxy, data


def test_a_volume_sequence_proxy_gives_every_echo_and_its_echo_times():
    logic = MapSceneLogic()
    aff = _tilted_affine()
    seq, proxy, data = _echo_sequence(logic, aff)
    for node in (seq, proxy):  # picked as the sequence or as the volume the views show
        a, got_aff = frames(node)
        assert a.shape == data.shape
        np.testing.assert_array_equal(a, data)
        np.testing.assert_allclose(got_aff, aff, atol=1e-9)
        assert echo_times_ms(node) == TE
    # stacked with the QSM map as the OEF task's 4D input
    qsm = logic.add_volume(np.full((6, 7, 5), 0.05, np.float32), aff, "QSM")
    stacked, _ = logic.stack_volumes([proxy, qsm])
    assert stacked.shape == (6, 7, 5, len(TE) + 1) and np.allclose(stacked[..., -1], 0.05)


def test_multivolume_attributes_give_echo_times():
    logic = MapSceneLogic()
    node = logic.add_volume(np.zeros((3, 3, 3), np.float32), np.eye(4), "mv")
    node.SetAttribute("MultiVolume.FrameIdentifyingDICOMTagName", "EchoTime")
    node.SetAttribute("MultiVolume.FrameLabels", "4.5,9.5,14.5,19.5")
    assert echo_times_ms(node) == TE
    node.SetAttribute("MultiVolume.FrameIdentifyingDICOMTagName", "TriggerTime")
    assert echo_times_ms(node) is None  # frames of something else: unknown


def test_b0_direction_from_the_geometry():
    logic = MapSceneLogic()
    axial = logic.add_volume(np.zeros((3, 3, 3), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]), "axial")
    assert b0_direction_ijk(axial) == pytest.approx([0, 0, 1])
    tilted = logic.add_volume(np.zeros((3, 3, 3), np.float32), _tilted_affine(20.0), "tilted")
    b = np.array(b0_direction_ijk(tilted))
    # the slab is tilted 20 deg about R: B0 has a component along the second voxel axis
    np.testing.assert_allclose(b, [0, np.sin(np.radians(20)), np.cos(np.radians(20))], atol=1e-6)
    # LPS-flipped storage (x and y reversed): same B0 up to sign, the dipole kernel does not care
    flipped = logic.add_volume(np.zeros((3, 3, 3), np.float32), np.diag([-1.0, -1.0, 1.0, 1.0]), "lps")
    assert b0_direction_ijk(flipped) == pytest.approx([0, 0, 1])


def test_sidecar_filled_with_what_the_task_asks_and_the_scene_knows():
    logic = MapSceneLogic()
    seq, proxy, _ = _echo_sequence(logic, _tilted_affine(10.0))
    raw = {"inputs": {"sidecar": "echo_times_ms, B0_dir, B0_T (default 3)"}}
    got = sidecar_from_scene([proxy, proxy, None], raw)
    assert got["echo_times_ms"] == TE and np.allclose(got["B0_dir"], [0, np.sin(np.radians(10)), np.cos(np.radians(10))], atol=1e-6)
    assert "B0_T" not in got  # not in the images: the user's
    assert sidecar_from_scene([proxy], {"inputs": {"sidecar": "psf_fwhm_mm (one or three values, mm)"}}) == {}
