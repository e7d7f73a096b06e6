"""The benchmarks' pictures: rows of map panels, each with its colour bar labelled in its units.

One helper for every ``bench-results/*.png`` so that they read alike: a panel is a 2D slice of a
map with a title, a colour map, a window (``vmin``..``vmax``) and the units its colour bar names
(ppm, SUV, HU, %, a.u.); voxels outside an optional mask are left blank; an optional label outline
(e.g. lesion regions) is drawn on top. Slices are shown with the array's first axis to the right and
its second axis upwards (RAS arrays: axial slices from above, coronal from the front).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np


@dataclass
class Panel:
    """One 2D slice to show. ``image``: (X, Y) array; ``units``: the colour bar's label."""

    title: str
    image: np.ndarray
    units: str
    vmin: float
    vmax: float
    cmap: str = "gray"
    mask: np.ndarray | None = None
    outline: np.ndarray | None = None  # integer labels: a contour around each value > 0
    outline_colours: Sequence[str] = ("w", "r", "c", "y")


def axial(volume: np.ndarray, z: int) -> np.ndarray:
    return np.asarray(volume)[:, :, z]


def coronal(volume: np.ndarray, y: int) -> np.ndarray:
    return np.asarray(volume)[:, y, :]


def map_grid(path: str | Path, rows: Sequence[Sequence[Panel]], title: str, panel_inches: float = 2.6) -> Path:
    """Save ``rows`` of panels (each with its colour bar and units) under ``title`` as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(panel_inches * n_cols, panel_inches * 1.15 * n_rows + 0.4), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.axis("off")
            if j >= len(row):
                continue
            p = row[j]
            img = np.asarray(p.image, dtype=np.float64)
            if p.mask is not None:
                img = np.where(np.asarray(p.mask, bool), img, np.nan)
            im = ax.imshow(img.T, origin="lower", cmap=p.cmap, vmin=p.vmin, vmax=p.vmax, interpolation="nearest")
            if p.outline is not None and np.any(p.outline):
                levels = [v - 0.5 for v in range(1, int(np.max(p.outline)) + 1)]
                ax.contour(np.asarray(p.outline, float).T, levels=levels, colors=list(p.outline_colours)[: len(levels)], linewidths=0.6)
            ax.set_title(p.title, fontsize=8)
            cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
            cb.set_label(p.units, fontsize=7)
            cb.ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
