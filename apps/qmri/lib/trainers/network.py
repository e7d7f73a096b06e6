"""One MONAI Label trainer for every network of the app: train from the datastore, publish, report.

Each network supplies what differs in its package's ``fine_tune`` module
(``qmri.models.<network>.fine_tune``, see :func:`network_trainer`): how datastore studies become
training items (``volumes``) and how the network is fitted to them (``fit``, which calls
:func:`qmri.training.loop.train`), its recipe, description and metric. This class does the rest the
same way for all of them:

- the request's parameters (``max_epochs``, ``steps_per_epoch``, ``batch_size``, ``lr``,
  ``from_scratch``, ``device``, ``torch_threads`` (0: half the cores, the server answers requests on
  the other half), MONAI Label's ``multi_gpu``/``gpus``, and the task's own), whose
  defaults are the ``fine_tune`` section of the network's recipe file
  (:func:`qmri.training.replay.fine_tune`): the command line's recipes and the server read one file;
- the split (the last study validates; a single study trains and validates);
- fine-tuning from the served weights unless ``from_scratch``;
- publishing only weights no worse than the served ones on the same validation data (the loop
  scores the starting weights before training; from scratch, the served ones are scored apart),
  atomically: the new file replaces the served one by ``os.replace`` and the previous model is
  kept as ``*_previous.pt``; infer tasks reload weights whose file changed
  (:class:`qmri.networks.weights.ReloadingWeights`), so the next request uses the new model;
- stopping without publishing when the server that started the training process is gone;
- ``train_stats.json`` beside the weights (the decision and both scores), returned by
  :meth:`stats` to ``/info``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask
from qmri.io.atomic import WRITING, atomic_copy, atomic_write_text
from qmri.models import MODELS
from qmri.networks import compute
from qmri.training import progress as watch
from qmri.training import replay

logger = logging.getLogger(__name__)

#: Request parameters every trainer takes beside its recipe's ``fine_tune`` section (epochs, steps,
#: batch, learning rate and the network's own: ``lib/qmri/models/<network>/recipes/<recipe>.json``).
COMMON_DEFAULTS = {"from_scratch": False, "device": "cuda if available", "multi_gpu": False, "gpus": "all", "torch_threads": 0}


def _true(v) -> bool:
    return str(v).lower() in ("true", "1", "yes")


class NetworkTrainer(TrainTask):
    """``volumes(datalist, params) -> items``; ``fit(out_path, train, val, init_or_None, params) -> result``.

    ``weights``: the served file, or a dict name -> file when the task has several networks; then the
    request's ``network`` picks the one to train and publish (default: the dict's first).
    ``params`` given to ``volumes``/``fit`` hold the request merged over the defaults, with
    ``device`` (None = CUDA when available) and ``world_size`` (from ``multi_gpu``/``gpus``) resolved.
    """

    def __init__(
        self,
        description: str,
        weights: str | Path | Dict[str, str | Path],
        defaults: Dict[str, Any],
        volumes: Callable[[list, Dict[str, Any]], list],
        fit: Callable[[Path, list, list, Path | None, Dict[str, Any]], dict],
        metric_name: str,
    ):
        super().__init__(description)
        self.weights = {k: Path(v) for k, v in weights.items()} if isinstance(weights, dict) and len(weights) > 1 else {"model": Path(next(iter(weights.values())) if isinstance(weights, dict) else weights)}
        self.defaults = {**COMMON_DEFAULTS, **defaults}
        if len(self.weights) > 1:
            self.defaults.setdefault("network", next(iter(self.weights)))
        self.volumes = volumes
        self.fit = fit
        self.metric_name = metric_name
        self.stats_path = next(iter(self.weights.values())).with_name("train_stats.json")

    def config(self) -> Dict[str, Any]:
        return dict(self.defaults)

    @staticmethod
    def world_size(p: Dict[str, Any]) -> int:
        """MONAI Label's multi-GPU option: ``multi_gpu`` with ``gpus`` "all" or a list like "0,1"."""
        if not _true(p.get("multi_gpu", False)):
            return 1
        import torch

        n = torch.cuda.device_count() if p.get("gpus", "all") == "all" else len(str(p["gpus"]).split(","))
        return n if n > 1 else 1

    def stats(self) -> Dict[str, Any]:
        return json.loads(self.stats_path.read_text()) if self.stats_path.exists() else {}

    def target(self, p: Dict[str, Any]) -> Path:
        # MONAI Label puts the trainer's own name in the request's "model", so the weights file to
        # train is chosen by "network" (only for trainers with several weights files)
        key = str(p.get("network", "model")) if len(self.weights) > 1 else "model"
        if key not in self.weights:
            raise ValueError(f"unknown network '{key}' for this trainer; choose one of {sorted(self.weights)}")
        return self.weights[key]

    @property
    def progress_path(self) -> Path:
        """Where the running training writes its progress (:mod:`qmri.training.progress`), read by
        ``GET /train/``."""
        return self.stats_path.with_name("train_progress.json")

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any]:
        stop_with_parent()
        watch.set_sink(self.progress_path)
        try:
            return self._train(request, datastore)
        finally:
            watch.set_sink(None)
            self.progress_path.unlink(missing_ok=True)

    def _train(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any]:
        watch.report(force=True, stage="reading the studies")
        p = {**self.config(), **request}
        # the server keeps answering requests while this process trains: on the CPU it takes half
        # the cores unless the request says otherwise (torch_threads > 0), so neither starves
        n = int(p.get("torch_threads") or 0)
        compute.set_threads(n if n > 0 else max(1, compute.cores() // 2))
        p["device"] = None if p["device"] == "cuda if available" else p["device"]
        p["world_size"] = self.world_size(p)
        weights = self.target(p)
        items = self.volumes([{"image": d["image"], "label": d.get("label")} for d in datastore.datalist()], p)
        if not items:
            raise ValueError(f"no studies usable for training in the datastore: {self.description}")
        train, val = (items[:-1], items[-1:]) if len(items) > 1 else (items, items)
        served = weights if weights.exists() else None
        init = None if _true(p["from_scratch"]) else served
        logger.info("%s: training on %d studies (%d validation), init %s", weights.name, len(train), len(val), init.name if init else None)
        t0 = time.time()
        with tempfile.TemporaryDirectory(prefix="qmri_train_") as tmp:
            _PARENT["tmp"].append(tmp)  # removed by the parent watch too, if it ends this process
            out = Path(tmp) / weights.name
            res = self.fit(out, train, val, init, p)
            if not out.exists():
                raise RuntimeError("training produced no weights (no finite validation metric)")
            metric, best = res.get("metric", ""), res.get("best", {})
            served_metrics = res.get("init_metrics")
            watch.report(force=True, stage="comparing with the served weights")
            if served is not None and init is None:  # from scratch: score the served weights on the same validation data
                served_metrics = self.fit(Path(tmp) / "served_score.pt", train, val, served, {**p, "max_epochs": 0}).get("init_metrics")
            new_score = best.get(metric)
            served_score = (served_metrics or {}).get(metric)
            # every metric here is minimised; the served weights stay unless the new ones are no worse
            publish = served_score is None or (new_score is not None and new_score <= served_score)
            if publish:
                # under WRITING the parent watch cannot end this process between the check and the copies
                with WRITING:
                    if parent_gone():
                        raise RuntimeError("the server that started this training has stopped; the new weights are not published")
                    weights.parent.mkdir(parents=True, exist_ok=True)
                    if weights.exists():
                        atomic_copy(weights, weights.with_name(weights.stem + "_previous.pt"))
                    atomic_copy(out, weights)  # an infer task reloading the file never sees a part of it
        decision = (
            f"published: {metric} {new_score:.4g} is no worse than the served weights' {served_score:.4g} on the same validation data"
            if publish and served_score is not None
            else "published: no served weights to compare with"
            if publish
            else f"not published: {metric} {new_score if new_score is None else round(new_score, 4)} is worse than the served weights' {served_score:.4g} on the same validation data; the served weights are unchanged"
        )
        logger.info("%s: %s", weights.name, decision)
        stats = {
            "model": weights.stem,
            "best_metric": new_score,
            "best_metric_name": self.metric_name,
            "best": best,
            "served_metric": served_score,
            "published": bool(publish),
            "decision": decision,
            "epochs": int(p["max_epochs"]),
            "train_studies": [getattr(v, "subject", str(i)) for i, v in enumerate(train)],
            "val_studies": [getattr(v, "subject", str(i)) for i, v in enumerate(val)],
            "total_time": round(time.time() - t0, 1),
            "weights": weights.name,
            "history": res.get("history", []),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        atomic_write_text(self.stats_path, json.dumps(stats, indent=2))
        return stats


def network_trainer(network: str, weights: str | Path | Dict[str, str | Path]) -> NetworkTrainer:
    """The trainer of shipped network ``network`` (a key of :data:`qmri.models.MODELS`) publishing to
    ``weights``, built from ``qmri.models.<network>.fine_tune``."""
    ft = MODELS[network].module("fine_tune")
    return NetworkTrainer(ft.DESCRIPTION, weights, replay.fine_tune(ft.RECIPE), ft.volumes, ft.fit, ft.METRIC)


#: Set by the server process (:mod:`lib.server.asgi`); inherited by the training processes it starts.
SERVER_PID_ENV = "QMRI_SERVER_PID"
_PARENT: Dict[str, Any] = {"pid": None, "tmp": []}


def stop_with_parent(poll_s: float = 1.0) -> None:
    """In the training process MONAI Label starts: exit when the server process that started it
    is gone (killed), so that an orphaned training never publishes weights later. The server's pid
    comes from the environment, since the server may die before this process gets here. Nothing
    is watched outside such a process (no guarded server, or the server process itself)."""
    server = os.environ.get(SERVER_PID_ENV, "")
    if _PARENT["pid"] is not None or not server.isdigit() or int(server) == os.getpid():
        return
    _PARENT["pid"] = int(server)

    def watch_parent():
        while not parent_gone():
            time.sleep(poll_s)
        logger.error("the server process %s is gone: stopping this training without publishing", _PARENT["pid"])
        with WRITING:  # a write in progress finishes first and no other starts, so no .part file is left
            watch.discard()
            for tmp in _PARENT["tmp"]:  # os._exit skips the TemporaryDirectory's cleanup
                shutil.rmtree(tmp, ignore_errors=True)
            os._exit(3)

    threading.Thread(target=watch_parent, name="qmri-parent-watch", daemon=True).start()


def parent_gone() -> bool:
    return _PARENT["pid"] is not None and os.getppid() != _PARENT["pid"]
