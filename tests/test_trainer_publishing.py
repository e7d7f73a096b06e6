"""The trainer publishes new weights only when they are no worse than the served ones on the same
validation data, and checks a client's training parameters before anything starts."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
from fastapi import HTTPException

from conftest import REPO

sys.path.insert(0, str(REPO / "apps" / "qmri"))
from lib.server.train_requests import finished_tasks, train_params  # noqa: E402
from lib.trainers.network import NetworkTrainer  # noqa: E402

from qmri.training.loop import load_checkpoint, save_checkpoint, train  # noqa: E402


class Datastore:
    def datalist(self):
        return [{"image": f"s{i}", "label": f"l{i}"} for i in range(3)]


def _trainer(weights, new_score, init_score):
    """A trainer whose fit 'learns' weights scoring ``new_score``; the starting weights score
    ``init_score`` (both minimised), as the loop reports them."""
    calls = []

    def fit(out, train_items, val_items, init, p):
        calls.append({"init": init, "epochs": p["max_epochs"]})
        torch.save({"new": True}, out)
        return {"metric": "val", "best": {"val": new_score}, "init_metrics": None if init is None else {"val": init_score}, "history": []}

    return NetworkTrainer("test", weights, {}, lambda dl, p: list(range(len(dl))), fit, "val"), calls


@pytest.mark.parametrize("new, served, published", [(0.5, 0.6, True), (0.6, 0.6, True), (0.7, 0.6, False)])
def test_publishes_only_weights_no_worse_than_the_served(tmp_path, new, served, published):
    weights = tmp_path / "net" / "net.pt"
    weights.parent.mkdir()
    torch.save({"served": True}, weights)
    before = weights.read_bytes()
    trainer, calls = _trainer(weights, new, served)
    stats = trainer({"max_epochs": 1}, Datastore())
    assert stats["published"] is published and stats["served_metric"] == served and stats["best_metric"] == new
    assert (weights.read_bytes() != before) is published
    assert (weights.parent / "net_previous.pt").exists() is published
    assert ("not published" in stats["decision"]) is (not published)
    assert "/" not in stats["weights"]  # no server path in /info
    assert json.loads((weights.parent / "train_stats.json").read_text())["decision"] == stats["decision"]
    assert calls == [{"init": weights, "epochs": 1}]


def test_from_scratch_is_compared_with_the_served_weights_scored_apart(tmp_path):
    weights = tmp_path / "net.pt"
    torch.save({"served": True}, weights)
    before = weights.read_bytes()
    trainer, calls = _trainer(weights, 0.9, 0.4)
    stats = trainer({"max_epochs": 3, "from_scratch": True}, Datastore())
    assert calls == [{"init": None, "epochs": 3}, {"init": weights, "epochs": 0}]  # the served weights scored, not trained
    assert not stats["published"] and weights.read_bytes() == before


def test_no_served_weights_publishes(tmp_path):
    weights = tmp_path / "net.pt"
    trainer, _ = _trainer(weights, 0.9, None)
    stats = trainer({"max_epochs": 1}, Datastore())
    assert stats["published"] and weights.exists() and stats["served_metric"] is None


class Recipe:
    """A one-parameter regression: the loop's starting-weights score is the validation metric of ``init``."""

    name, metric = "toy", "val"

    def build(self):
        return torch.nn.Linear(1, 1, bias=False)

    def config(self):
        return {}

    def batches(self, rng, steps, batch_size):
        for _ in range(steps):
            x = rng.normal(size=(batch_size, 1)).astype(np.float32)
            yield {"x": x, "y": 2 * x}

    def loss(self, model, batch, device):
        return ((model(batch["x"]) - batch["y"]) ** 2).mean()

    def validate(self, net, device):
        return {"val": float((net.weight.detach()[0, 0] - 2.0) ** 2)}


def test_loop_scores_the_starting_weights_on_validation(tmp_path):
    init = tmp_path / "init.pt"
    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(5.0)
    save_checkpoint(init, net, {})
    res = train(Recipe(), tmp_path / "out.pt", epochs=0, steps_per_epoch=1, batch_size=4, lr=0.1, init=init, progress=False)
    assert res["init_metrics"] == {"val": 9.0} and res["history"] == []
    res = train(Recipe(), tmp_path / "out.pt", epochs=2, steps_per_epoch=5, batch_size=8, lr=0.1, init=init, progress=False)
    assert res["init_metrics"]["val"] == 9.0 and res["best"]["val"] < 9.0
    assert load_checkpoint(tmp_path / "out.pt")[1]["epoch"] >= 1
    assert train(Recipe(), tmp_path / "o2.pt", epochs=1, steps_per_epoch=1, batch_size=4, lr=0.1, progress=False)["init_metrics"] is None


DEFAULTS = {"max_epochs": 5, "steps_per_epoch": 20, "batch_size": 2, "lr": 1e-4, "from_scratch": False, "device": "cuda if available", "multi_gpu": False, "gpus": "all", "network": "best"}


@pytest.mark.parametrize(
    "params, word",
    [
        ({"max_epochs": 0}, "max_epochs"),
        ({"max_epochs": 2.5}, "integer"),
        ({"max_epochs": True}, "integer"),
        ({"lr": float("nan")}, "lr"),
        ({"lr": 5}, "lr"),
        ({"batch_size": "4"}, "integer"),
        ({"from_scratch": "yes"}, "true or false"),
        ({"device": "cuda;id"}, "device"),
        ({"gpus": "0,../1"}, "gpus"),
        ({"network": "x" * 100}, "short string"),
        ({"model": "pvc"}, "unknown training parameter"),
        ([1], "json object"),
    ],
)
def test_training_parameters_are_checked(params, word):
    with pytest.raises(HTTPException) as e:
        train_params(params, DEFAULTS)
    assert e.value.status_code == 422 and word in e.value.detail.lower()


def test_good_training_parameters_pass_typed():
    p = train_params({"max_epochs": 3.0, "lr": 1e-3, "device": "cuda:1", "gpus": "0,1", "from_scratch": True, "network": "lstm"}, DEFAULTS)
    assert p == {"max_epochs": 3, "lr": 1e-3, "device": "cuda:1", "gpus": "0,1", "from_scratch": True, "network": "lstm"}
    assert isinstance(p["max_epochs"], int)


def test_finished_tasks_are_kept_across_restarts(tmp_path):
    live = [{"id": "a", "status": "DONE", "details": ["x"]}, {"id": "b", "status": "RUNNING"}]
    assert [t["id"] for t in finished_tasks(tmp_path, live)] == ["a", "b"]
    kept = json.loads((tmp_path / "train_tasks.json").read_text())
    assert [t["id"] for t in kept] == ["a"]  # only finished tasks are kept
    assert [t["id"] for t in finished_tasks(tmp_path, [])] == ["a"]  # after a restart: nothing live


def test_parent_watch_only_in_a_training_process_of_a_guarded_server(monkeypatch):
    """The watch that ends an orphaned training never starts in the server itself or without one
    (in-process it would end this process); the SIGKILL test in test_server_hardening covers the rest."""
    import lib.trainers.network as net

    monkeypatch.setattr(net, "_PARENT", {"pid": None})
    monkeypatch.delenv(net.SERVER_PID_ENV, raising=False)
    net.stop_with_parent()
    assert net._PARENT["pid"] is None and not net.parent_gone()
    monkeypatch.setenv(net.SERVER_PID_ENV, str(os.getpid()))
    net.stop_with_parent()
    assert net._PARENT["pid"] is None and not net.parent_gone()
