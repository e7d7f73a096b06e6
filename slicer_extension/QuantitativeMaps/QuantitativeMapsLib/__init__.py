"""Slicer-free parts of the Quantitative Maps module: server client, display presets, MRML scene logic.

``client`` and ``presets`` need only the standard library and ``requests``; ``scene`` needs MRML
(3D Slicer, or the ``slicer-core`` wheel headless) and is imported on demand.
"""

from .client import ConsentRequired, InferResult, Job, QMRIClient, QMRIClientError  # noqa: F401
from .presets import Preset, preset_for  # noqa: F401
