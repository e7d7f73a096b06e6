"""Test-time augmentation of the synthesis generators: batched passes, the request's ``tta`` choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qmri.models.synthnet.net import ResnetGenerator
from qmri.models.synthnet.predict import _translate, translate_slices
from qmri.tasks.spec import TaskSpec
from qmri.tasks.synthesis import TTA_CHOICES, tta_passes


def _reference(gen, x, k, flip, tile):
    """The passes one by one (the implementation before they were batched)."""
    h, w = x.shape[-2:]
    out = np.zeros(x.shape, np.float32)
    for dy in range(k):
        for dx in range(k):
            xs = np.pad(x, ((0, 0), (dy, k - 1 - dy), (dx, k - 1 - dx)), constant_values=-1.0)
            y = _translate(gen, xs, 4, "cpu", tile, 0.25)
            if flip:
                y = 0.5 * (y + _translate(gen, xs[:, ::-1], 4, "cpu", tile, 0.25)[:, ::-1])
            out += y[:, dy : dy + h, dx : dx + w]
    return out / k**2


@pytest.mark.parametrize("k,flip,tile", [(1, False, None), (1, True, None), (2, True, None), (2, True, 32)])
def test_batched_passes_equal_the_passes_one_by_one(k, flip, tile):
    torch.manual_seed(0)
    gen = ResnetGenerator(width=4, n_blocks=1).eval()
    x = np.random.default_rng(0).uniform(-1, 1, (3, 37, 41)).astype(np.float32)
    with torch.no_grad():
        got = translate_slices(gen, x, 4, "cpu", tile, overlap=0.25, flip_average=flip, shift_average=k)
        ref = _reference(gen, x, k, flip, tile)
    np.testing.assert_allclose(got, ref, atol=2e-5)


def test_tta_choices_map_to_passes():
    assert [tta_passes(t) for t in TTA_CHOICES] == [{"flip_average": False, "shift_average": 1}, {"flip_average": True, "shift_average": 1}, {"flip_average": True, "shift_average": 2}]
    with pytest.raises(ValueError, match="tta must be one of 1, 2, 8"):
        tta_passes(4)


def test_task_options_are_checked_before_work():
    calls = []
    spec = TaskSpec("t", "", {}, {}, ("m",), "m", lambda i, a, s, m, tta=None: calls.append(tta) or [], options={"tta": {"choices": [1, 2, 8], "default": 8, "help": ""}})
    spec.call(None, None, {}, "m", {"tta": "2"})
    spec.call(None, None, {}, "m")
    assert calls == [2, 8]
    for bad, msg in (({"tta": "3"}, "option tta must be one of 1, 2, 8, got '3'"), ({"tta": "x"}, "got 'x'"), ({"speed": 1}, "option(s) 'speed' not accepted by t; options: tta")):
        with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            spec.call(None, None, {}, "m", bad)
    assert len(calls) == 2
