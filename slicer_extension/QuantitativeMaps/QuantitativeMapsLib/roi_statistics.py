"""ROI statistics of quantitative maps per segment (MRML only, no Qt): the table a clinician reads.

For each segment of a segmentation and each map volume: voxel count, volume (ml), mean, standard
deviation, median, minimum and maximum of the map's values inside the segment, in the map's units
(the ``qmri.units`` attribute the module sets on every result). The segment is exported to a
labelmap on the map's own grid with Slicer's ``vtkSlicerSegmentationsModuleLogic`` (the same
resampling Segment Statistics uses), then the numbers are plain numpy.

Why not Slicer's Segment Statistics module: it is a scripted, Qt-dependent module that is not part
of slicer-core, so it cannot run (or be tested) headless; its scalar-volume plugin reports no
median by default and knows nothing of the map's units.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import vtk

try:  # inside Slicer, or slicer-core headless
    import slicer
except ImportError:  # pragma: no cover - only without Slicer
    slicer = None

from .scene import image_to_array, matrix_to_affine

#: The table's columns: (key, header, unit label or None for the map's own units).
COLUMNS = (
    ("segment", "Segment", ""),
    ("map", "Map", ""),
    ("units", "Units", ""),
    ("voxels", "Voxels", ""),
    ("volume_ml", "Volume", "ml"),
    ("mean", "Mean", None),
    ("sd", "SD", None),
    ("median", "Median", None),
    ("min", "Min", None),
    ("max", "Max", None),
)


def _segment_ids(segmentation_node, segment_ids: Sequence[str] | None) -> list[str]:
    seg = segmentation_node.GetSegmentation()
    all_ids = [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())]
    if segment_ids is None:
        return all_ids
    missing = [s for s in segment_ids if s not in all_ids]
    if missing:
        raise ValueError(f"segment(s) {', '.join(missing)} not in '{segmentation_node.GetName()}'")
    return list(segment_ids)


def segment_mask(segmentation_node, segment_id: str, reference_volume) -> np.ndarray:
    """Boolean (i, j, k) mask of one segment on ``reference_volume``'s grid."""
    scene = reference_volume.GetScene()
    label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "qmri roi statistics scratch")
    try:
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation_node, ids, label, reference_volume):
            raise ValueError(f"segment '{segment_id}' could not be resampled onto '{reference_volume.GetName()}'")
        mask = image_to_array(label.GetImageData()) > 0
    finally:
        scene.RemoveNode(label)
    ref_shape = image_to_array(reference_volume.GetImageData()).shape[:3]
    if mask.shape != ref_shape:  # an empty segment exports an empty image
        mask = np.zeros(ref_shape, bool)
    return mask


def voxel_volume_ml(volume_node) -> float:
    """Volume of one voxel in ml, from the IJK-to-RAS matrix (mm)."""
    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    a = np.array([[m.GetElement(r, c) for c in range(3)] for r in range(3)])
    return abs(float(np.linalg.det(a))) / 1000.0


def segment_statistics(segmentation_node, map_nodes: Sequence[Any], segment_ids: Sequence[str] | None = None) -> list[dict]:
    """One row per (segment, map): segment name, map name, units, voxels, volume_ml, mean, sd
    (sample, ddof 1), median, min, max of the map inside the segment (None when it is empty).

    Voxels that are not finite are left out of the statistics (and counted in ``voxels`` only if finite)."""
    if segmentation_node is None:
        raise ValueError("select a segmentation (draw ROIs in Segment Editor first)")
    if not map_nodes:
        raise ValueError("select at least one map")
    rows = []
    seg = segmentation_node.GetSegmentation()
    for sid in _segment_ids(segmentation_node, segment_ids):
        name = seg.GetSegment(sid).GetName()
        for node in map_nodes:
            values = image_to_array(node.GetImageData())
            mask = segment_mask(segmentation_node, sid, node)
            v = values[mask]
            v = v[np.isfinite(v)].astype(np.float64)
            stats = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0, "median": float(np.median(v)), "min": float(v.min()), "max": float(v.max())} if v.size else dict.fromkeys(("mean", "sd", "median", "min", "max"))
            rows.append({"segment": name, "map": node.GetName(), "units": node.GetAttribute("qmri.units") or "", "voxels": int(v.size), "volume_ml": round(v.size * voxel_volume_ml(node), 4), **stats})
    return rows


def _table(scene, name: str, columns: Sequence[tuple], rows: Sequence[dict], text: Sequence[str], digits: int):
    """A vtkMRMLTableNode with one column per ``(key, header, unit label)`` of ``columns``: text for
    the keys in ``text`` and for any column with an empty (None) cell, which a numeric column would
    show as 0; integer for ``voxels``; floating point otherwise (``digits`` significant digits)."""
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    for key, header, unit in columns:
        blank = any(row.get(key) is None for row in rows)
        col = table.AddColumn(vtk.vtkStringArray() if key in text or blank else (vtk.vtkIntArray() if key == "voxels" else vtk.vtkDoubleArray()))
        col.SetName(header)
        if unit:
            table.SetColumnUnitLabel(header, unit)
    for row in rows:
        r = table.AddEmptyRow()
        for c, (key, _, _) in enumerate(columns):
            value = row.get(key)
            table.SetCellText(r, c, "" if value is None else (f"{value:.{digits}g}" if isinstance(value, float) else str(value)))
    return table


def statistics_table(scene, rows: Sequence[dict], name: str = "qmri ROI statistics"):
    """A vtkMRMLTableNode of ``rows`` (columns :data:`COLUMNS`; the volume's unit label is ml, the
    statistics columns carry the map's units in the Units column since maps in one table differ)."""
    return _table(scene, name, COLUMNS, rows, ("segment", "map", "units"), 6)


def write_csv(rows: Sequence[dict], path: str | Path) -> Path:
    """``rows`` as CSV with a header naming each column's unit (the map's own in ``Units``)."""
    path = Path(path)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([f"{header} [{unit}]" if unit else header for _, header, unit in COLUMNS])
        for row in rows:
            w.writerow(["" if row.get(k) is None else row.get(k) for k, _, _ in COLUMNS])
    return path


def segments_label_map(segmentation_node, reference_volume, path: str | Path, segment_ids: Sequence[str] | None = None) -> dict[int, str]:
    """Write the segments as one integer label map on ``reference_volume``'s grid: a NIfTI at
    ``path`` with the reference's voxel-to-RAS affine (mm), label ``i + 1`` for the i-th segment (a
    voxel in several segments takes the later one), 0 elsewhere. This is the map the server's
    regional analysis takes (OEF: ``QMRIClient.infer(..., label=path)``). Returns label -> segment name."""
    import nibabel as nib

    if segmentation_node is None:
        raise ValueError("select a segmentation (draw ROIs in Segment Editor first)")
    seg = segmentation_node.GetSegmentation()
    shape = image_to_array(reference_volume.GetImageData()).shape[:3]
    labels = np.zeros(shape, np.int16)
    names = {}
    for i, sid in enumerate(_segment_ids(segmentation_node, segment_ids)):
        labels[segment_mask(segmentation_node, sid, reference_volume)] = i + 1
        names[i + 1] = seg.GetSegment(sid).GetName()
    names = {v: n for v, n in names.items() if (labels == v).any()}
    if not names:
        raise ValueError(f"no segment of '{segmentation_node.GetName()}' covers a voxel of '{reference_volume.GetName()}'")
    m = vtk.vtkMatrix4x4()
    reference_volume.GetIJKToRASMatrix(m)
    nib.save(nib.Nifti1Image(labels, matrix_to_affine(m)), str(path))
    return names


#: Columns of the regional table: (key, header, unit label).
REGION_COLUMNS = (
    ("segment", "Segment", ""),
    ("voxels", "Voxels", ""),
    ("value", "OEF", "%"),
    ("sd", "SD", "%"),
    ("ci95", "95 % interval", "%"),
    ("informative", "Informative", ""),
    ("mirror", "Mirror OEF", "%"),
    ("difference", "Difference", "%"),
    ("difference_ci95", "Difference 95 % interval", "%"),
)


def regional_rows(regions: Sequence[dict], names: dict[int, str]) -> list[dict]:
    """The server's ``regions`` (one entry per label) as rows of :data:`REGION_COLUMNS`, named by segment."""
    rows = []
    for r in regions:
        mirror, diff = r.get("mirror"), r.get("difference")
        rows.append(
            {
                "segment": names.get(int(r["label"]), str(r["label"])),
                "voxels": int(r["n_voxels"]),
                "value": float(r["OEF"]),
                "sd": float(r["OEF_sd"]),
                "ci95": f"{r['ci95'][0]:.1f} to {r['ci95'][1]:.1f}",
                "informative": "yes" if r["informative"] else "no (the echoes do not resolve it)",
                "mirror": None if mirror is None else float(mirror["OEF"]),
                "difference": None if diff is None else float(diff["OEF"]),
                "difference_ci95": "" if diff is None else f"{diff['ci95'][0]:.1f} to {diff['ci95'][1]:.1f}",
            }
        )
    return rows


def regional_table(scene, rows: Sequence[dict], name: str = "qmri regional OEF"):
    """A vtkMRMLTableNode of :func:`regional_rows`."""
    return _table(scene, name, REGION_COLUMNS, rows, ("segment", "ci95", "informative", "difference_ci95"), 4)
