"""The display hints and input slots every task announces in /info (qmri.io.display): the one source
the Slicer module and REST clients read."""

from __future__ import annotations

import pytest

from qmri.io.display import COLORMAPS, display, slot
from qmri.tasks.registry import TASKS, task_spec


@pytest.mark.parametrize("task", TASKS)
def test_every_output_has_a_display_hint_and_every_task_its_input_slots(task):
    spec = task_spec(task)
    for name, out in spec.outputs.items():
        hint = out["display"]
        assert hint["colormap"] in COLORMAPS and hint["legend"] and len(hint["legend"]) <= 24, (task, name)  # fits a legend
        assert out["units"] in hint["legend"] or out["units"].endswith("(SUV)"), (task, name)
        if hint["colormap"] == "diverging":
            assert hint["threshold"] is None  # signed: zeros are values inside the brain
        assert (hint["percentile"] is not None) == isinstance(out["display_range"], str), (task, name)
    slots = spec.inputs["slots"]
    assert slots and all(set(s) == {"key", "label", "optional"} for s in slots)
    assert not slots[0]["optional"]


def test_display_refuses_what_a_client_could_not_show():
    with pytest.raises(ValueError, match="unknown colour map"):
        display("jet", "x")
    with pytest.raises(ValueError, match="empty"):
        display("grey", "x", windows={"bone": (10.0, 10.0)})
    assert slot("ct", "Head CT (HU)") == {"key": "ct", "label": "Head CT (HU)", "optional": False}
