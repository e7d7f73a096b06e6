"""Shared fixtures: small phantoms and a real MONAI Label server on a copy of the sample studies."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

from qmri.bench.serve import start_server, stop_server  # noqa: F401  (one launcher for the bench and the tests)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample-data"


@pytest.fixture(scope="session")
def small_subject():
    """A deformed 4 mm phantom with every lesion type (working grid 2 mm, about 1 s after the template)."""
    from qmri.anatomy.phantom import make_subject

    return make_subject(7, voxel_size_mm=4.0, lesions="all", amyloid_positive=True, supersample=2)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A copy of apps/qmri/model that the test server serves and its trainers publish into."""
    d = tmp_path_factory.mktemp("model")
    shutil.copytree(REPO / "apps" / "qmri" / "model", d, dirs_exist_ok=True)
    return d


@pytest.fixture(scope="session")
def server(tmp_path_factory, model_dir):
    """Start the real app with ``monailabel start_server`` on a copy of sample-data/studies.

    The copy keeps the repository clean (MONAI Label writes its datastore index beside the studies).
    Weights are served from a copy of apps/qmri/model (``--conf model_dir``), so training in tests never
    touches the shipped files. Yields the base URL and the studies folder; the server is stopped at
    the end of the session.
    """
    studies = tmp_path_factory.mktemp("studies")
    shutil.copytree(SAMPLE / "studies", studies, dirs_exist_ok=True)
    proc, url = start_server(studies, model_dir, tmp_path_factory.mktemp("server_log") / "server.log")
    yield url, studies
    stop_server(proc)


@contextmanager
def served_weights_moved_aside(weights: Path):
    """Train over REST with no served weights: the trainer publishes only weights no worse than the
    served ones, and a 2-step test run from the shipped weights may well be worse; without served
    weights it trains from scratch and publishes. The shipped file is put back afterwards."""
    weights = Path(weights)
    aside = weights.with_name(weights.name + ".aside")
    os.replace(weights, aside)
    try:
        yield weights
    finally:
        os.replace(aside, weights)


# -- markers: `pytest -m "not server"` is the quick subset (no MONAI Label server started) ------------
def pytest_configure(config):
    config.addinivalue_line("markers", "server: starts the real MONAI Label server (the shared one on a copy of the sample studies, or a private one)")
    config.addinivalue_line("markers", "weights: loads the shipped network weights of apps/qmri/model")


def pytest_collection_modifyitems(config, items):
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "server" in names or "own" in names:  # own: test_server_hardening's private servers
            item.add_marker(pytest.mark.server)
        if "model_dir" in names or "WEIGHTS" in getattr(item.module, "__dict__", {}):
            item.add_marker(pytest.mark.weights)


def server_maps(task, ranges=None):
    """A result JSON's map entries as the server writes them: units, display range and the display
    hint from the task's own spec (the single source), with numeric ranges where the server computes them."""
    from qmri.tasks.registry import task_spec

    out = []
    for i, (name, o) in enumerate(task_spec(task).outputs.items()):
        rng = (ranges or {}).get(name, o["display_range"])
        out.append({"name": name, "units": o["units"], "display_range": rng, "display": o["display"], "channel": i})
    return out
