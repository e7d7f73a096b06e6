"""The shared training loop: it fits, keeps the best epoch, stops early, and fine-tunes from a checkpoint."""

from __future__ import annotations

import time

import numpy as np
import torch

from qmri.training import loop


class LineRecipe:
    """Fit y = 3 x - 1 with one linear unit; validation = |w - 3| + |b + 1|."""

    name = "line"
    metric = "val_err"

    def __init__(self, stall_after: int | None = None):
        self.stall_after = stall_after
        self.calls = 0

    def build(self):
        return torch.nn.Linear(1, 1)

    def config(self):
        return {"kind": "line"}

    def batches(self, rng, steps, batch_size):
        for _ in range(steps):
            x = rng.uniform(-1, 1, (batch_size, 1)).astype(np.float32)
            yield {"x": x, "y": 3 * x - 1}

    def loss(self, model, batch, device):
        return torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])

    def validate(self, net, device):
        self.calls += 1
        if self.stall_after and self.calls > self.stall_after:
            return {"val_err": 10.0 + self.calls}  # worse every epoch: early stopping must trigger
        return {"val_err": float(abs(net.weight.item() - 3) + abs(net.bias.item() + 1))}


def test_loop_fits_and_saves_the_best_epoch(tmp_path):
    out = tmp_path / "line.pt"
    res = loop.train(LineRecipe(), out, epochs=6, steps_per_epoch=50, batch_size=16, lr=0.05, progress=False)
    assert res["metric"] == "val_err" and len(res["history"]) == 6
    assert res["best"]["val_err"] < 0.05  # converged to w = 3, b = -1
    state, cfg = loop.load_checkpoint(out)
    assert cfg["kind"] == "line" and cfg["epoch"] == res["best"]["epoch"]
    saved_err = abs(float(state["weight"]) - 3) + abs(float(state["bias"]) + 1)
    assert abs(saved_err - res["best"]["val_err"]) < 1e-5  # the file holds the best epoch's weights
    # cosine schedule: the last epoch's learning rate is near 5 % of the start
    assert res["history"][-1]["lr"] < 0.1 * 0.05


def test_patience_stops_and_keeps_the_earlier_best(tmp_path):
    out = tmp_path / "line.pt"
    res = loop.train(LineRecipe(stall_after=2), out, epochs=20, steps_per_epoch=5, batch_size=8, lr=0.05, progress=False, patience_epochs=3)
    assert len(res["history"]) == 5  # 2 improving epochs, then 3 without improvement
    assert res["best"]["epoch"] == 2 and loop.load_checkpoint(out)[1]["epoch"] == 2


def test_fine_tuning_starts_from_the_checkpoint(tmp_path):
    first = tmp_path / "a.pt"
    loop.train(LineRecipe(), first, epochs=4, steps_per_epoch=50, batch_size=16, lr=0.05, progress=False)
    res = loop.train(LineRecipe(), tmp_path / "b.pt", epochs=1, steps_per_epoch=1, batch_size=4, lr=1e-6, init=first, progress=False)
    assert res["history"][0]["val_err"] < 0.1  # a fresh Linear(1, 1) is far from (3, -1)


def test_progress_file_follows_the_loop(tmp_path):
    """The training process's progress (read by GET /train/): epoch of epochs, steps, loss, metric."""
    from qmri.training import progress as watch

    sink = tmp_path / "train_progress.json"
    assert watch.read(sink) is None
    watch.set_sink(sink)
    try:
        watch.report(force=True, stage="training", epoch=2, epochs=4, step=5, steps=10, loss=float("nan"))
        state = watch.read(sink)
        assert state["stage"] == "training" and state["fraction"] == 0.375 and state["loss"] is None
        watch.report(step=6)  # within a second of the last write: kept in memory only
        assert watch.read(sink)["step"] == 5
        watch.report(force=True, stage="epoch done", value=0.5, best=0.4)
        assert watch.read(sink)["step"] == 6 and watch.read(sink)["value"] == 0.5
        assert watch.read(sink, since=time.time() + 60) is None  # a stale file from an earlier training
    finally:
        watch.set_sink(None)
    watch.report(force=True, stage="ignored")  # no sink: nothing written
    assert watch.read(sink)["stage"] == "epoch done"


def test_a_process_ending_at_once_leaves_no_half_written_file(tmp_path):
    """The training's parent watch ends the process with os._exit; it takes WRITING first, so a
    write in progress (the progress file, published weights) completes and no .part file is left."""
    import threading

    from qmri.io.atomic import WRITING, atomic_write
    from qmri.training import progress as watch

    dest = tmp_path / "weights.pt"
    started = threading.Event()

    def slow_fill(out):
        out.write(b"half")
        started.set()
        time.sleep(0.5)
        out.write(b" and the rest")

    writer = threading.Thread(target=atomic_write, args=(dest, slow_fill))
    writer.start()
    assert started.wait(5)
    assert list(tmp_path.glob(".*.part"))  # mid-write: the part file exists
    with WRITING:  # what the parent watch does before os._exit
        assert dest.read_bytes() == b"half and the rest"
        assert not list(tmp_path.glob(".*.part"))
    writer.join()

    sink = tmp_path / "train_progress.json"
    watch.set_sink(sink)
    watch.report(force=True, stage="training")
    assert sink.exists()
    watch.discard()
    assert not sink.exists()
    watch.report(force=True, stage="after discard")  # nothing is written any more
    assert not sink.exists()
