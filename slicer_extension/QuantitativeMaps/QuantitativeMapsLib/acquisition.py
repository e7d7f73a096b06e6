"""What the scene already knows about an acquisition (MRML only, no Qt): the frames of multi-echo
inputs and the sidecar keys that can be read from them, so the user types JSON only when nothing
is known.

- **Frames**: a multi-echo series arrives in Slicer as a Volume Sequence (4D NRRD, DICOM with the
  Sequences module; the scene then holds a ``vtkMRMLSequenceNode`` and a browser whose *proxy*
  scalar volume shows one frame), as a MultiVolume (one node, one image component per frame) or as
  a vector volume. :func:`frames` turns any of them into a channels-last array.
- **Echo times (ms)**: from a sequence whose index is the echo time (index name containing "echo"
  or "TE", or unit "ms"), from the frames' ``DICOM.EchoTime`` attributes, or from a MultiVolume's
  ``MultiVolume.FrameLabels`` when its frame tag is ``EchoTime``.
- **B0 direction in array axes**: the main field lies along the scanner's z axis, which is the
  patient S axis (DICOM patient coordinates follow the table for every standard patient position;
  the sign does not matter to the dipole kernel). In the input's voxel axes it is therefore the
  third row of the IJK-to-RAS direction matrix: ``B0_ijk = D^T (0, 0, 1)`` with ``D`` the
  direction cosines (spacing removed).
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np
import vtk

from .scene import image_to_array, matrix_to_affine

ECHO_INDEX = re.compile(r"echo|\bte\b", re.IGNORECASE)


def sequence_of(node):
    """The sequence behind ``node``: the node itself if it is a ``vtkMRMLSequenceNode``, the
    sequence a browser shows through it if it is a proxy volume, else None."""
    if node is None:
        return None
    if node.IsA("vtkMRMLSequenceNode"):
        return node
    scene = node.GetScene()
    if scene is None:
        return None
    browsers = scene.GetNodesByClass("vtkMRMLSequenceBrowserNode")
    for i in range(browsers.GetNumberOfItems()):
        browser = browsers.GetItemAsObject(i)
        is_proxy = getattr(browser, "IsProxyNodeID", None) or browser.IsProxyNode  # IsProxyNodeID from Slicer 5.8
        if is_proxy(node.GetID()):
            return browser.GetSequenceNode(node)
    return None


def _ijk_to_ras(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return matrix_to_affine(m)


def frames(node, atol_mm: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """(array (i, j, k[, frames]) float32, IJK-to-RAS affine) of a scalar, vector or multi-volume,
    or of every frame of a volume sequence (given as the sequence or as its proxy volume)."""
    seq = sequence_of(node)
    if seq is None:
        if node is None or node.GetImageData() is None:
            raise ValueError("the selected volume has no image data")
        return image_to_array(node.GetImageData()).astype(np.float32), _ijk_to_ras(node)
    n = seq.GetNumberOfDataNodes()
    if n == 0:
        raise ValueError(f"the sequence '{seq.GetName()}' has no frames")
    arrays, ref = [], None
    for i in range(n):
        frame = seq.GetNthDataNode(i)
        if frame is None or not frame.IsA("vtkMRMLVolumeNode") or frame.GetImageData() is None:
            raise ValueError(f"frame {i + 1} of the sequence '{seq.GetName()}' is not a volume")
        a, aff = image_to_array(frame.GetImageData()).astype(np.float32), _ijk_to_ras(frame)
        if a.ndim != 3:
            raise ValueError(f"frame {i + 1} of the sequence '{seq.GetName()}' has {a.shape[3]} components; one per frame is expected")
        if ref is None:
            ref = (a.shape, aff)
        elif a.shape != ref[0] or not np.allclose(aff, ref[1], atol=atol_mm):
            raise ValueError(f"the frames of the sequence '{seq.GetName()}' are not on one grid (frame {i + 1}: shape {a.shape} vs {ref[0]})")
        arrays.append(a)
    return (np.stack(arrays, axis=-1) if n > 1 else arrays[0]), ref[1]


def _floats(values: Sequence[Any]) -> list[float] | None:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return out if out and all(np.isfinite(out)) and all(v > 0 for v in out) else None


def echo_times_ms(node) -> list[float] | None:
    """The echo times (ms) of a multi-echo input, or None when the scene does not know them."""
    seq = sequence_of(node)
    if seq is not None:
        n = seq.GetNumberOfDataNodes()
        if ECHO_INDEX.search(seq.GetIndexName() or "") or (seq.GetIndexUnit() or "").strip().lower() == "ms":
            te = _floats([seq.GetNthIndexValue(i) for i in range(n)])
            if te:
                return te
        te = _floats([(seq.GetNthDataNode(i).GetAttribute("DICOM.EchoTime") or "") for i in range(n)])
        if te:
            return te
        return None
    if node is None:
        return None
    tag = (node.GetAttribute("MultiVolume.FrameIdentifyingDICOMTagName") or "").strip()
    labels = node.GetAttribute("MultiVolume.FrameLabels")
    if tag == "EchoTime" and labels:
        te = _floats(labels.split(","))
        unit = (node.GetAttribute("MultiVolume.FrameIdentifyingDICOMTagUnits") or "ms").strip().lower()
        if te and unit in ("s", "sec", "second", "seconds"):
            te = [t * 1000.0 for t in te]
        return te
    return None


def b0_direction_ijk(node) -> list[float]:
    """The main field's direction in ``node``'s array axes (unit vector; see the module docstring)."""
    seq = sequence_of(node)
    ref = seq.GetNthDataNode(0) if seq is not None and seq.GetNumberOfDataNodes() else node
    a = _ijk_to_ras(ref)[:3, :3]
    d = a / np.linalg.norm(a, axis=0)  # direction cosines: columns are the voxel axes in RAS
    b = d.T @ np.array([0.0, 0.0, 1.0])
    b = b / np.linalg.norm(b)
    return [float(round(x, 6)) + 0.0 for x in b]


def sidecar_from_scene(nodes: Sequence[Any], task_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """The sidecar keys the task asks for (its ``/info`` ``inputs["sidecar"]`` text) that the scene
    knows: ``B0_dir`` from the first input's geometry, ``echo_times_ms`` from the first input whose
    frames carry echo times. Keys it cannot know (B0_T, psf_fwhm_mm) are left to the user."""
    wanted = str(((task_info or {}).get("inputs") or {}).get("sidecar", ""))
    nodes = [n for n in nodes if n is not None]
    out: dict[str, Any] = {}
    if not nodes:
        return out
    if "B0_dir" in wanted:
        out["B0_dir"] = b0_direction_ijk(nodes[0])
    if "echo_times_ms" in wanted:
        for n in nodes:
            te = echo_times_ms(n)
            if te:
                out["echo_times_ms"] = te
                break
    return out
