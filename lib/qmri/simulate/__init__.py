"""Simulated studies: phantom subjects pushed through the physics forward models.

Each task module returns :class:`SimStudy` objects; :func:`qmri.simulate.driver.simulate` writes them
in the study layout of :mod:`qmri.io.study` with the ground truth as the ``labels/final`` target.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class SimStudy(NamedTuple):
    study_id: str
    image: np.ndarray
    sidecar: dict[str, Any]
    target: np.ndarray | None
