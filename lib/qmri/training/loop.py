"""One training loop for every network of the project (QSMnet, PVC, OEF, synthesis).

A *recipe* says what is trained; this module says how. A recipe is a plain, picklable object with

- ``name`` (str) and ``metric`` (str: the key of :meth:`validate`'s result to minimise);
- ``build() -> torch.nn.Module`` and ``config() -> dict`` (JSON-able; everything needed to rebuild
  and use the network, stored in the checkpoint);
- ``batches(rng, steps, batch_size)``: one epoch's ``steps`` batches (dicts of numpy arrays or
  tensors), drawn afresh each epoch from the numpy ``Generator`` (each DDP rank has its own);
- either ``loss(model, batch, device) -> Tensor`` (the loop owns the optimiser, by default Adam, and
  a per-step scheduler, by default cosine decay to 5 % of the learning rate; a recipe may define
  ``optimizer(params, lr)`` and ``scheduler(opt, total_steps)``, the latter may return None), or
  ``step(model, batch, device) -> float`` for recipes that own their optimisers (GANs);
- ``validate(net, device) -> dict`` with ``metric`` in it (rank 0 only, after each epoch);
- optionally ``eval_model(net) -> torch.nn.Module``: the network that is validated and saved in
  place of the trained one (same ``state_dict`` keys), e.g. an exponential moving average of it.

The best epoch by ``metric`` is written atomically with :func:`save_checkpoint`, so an infer task
that reloads the file never sees half a model. ``world_size > 1`` trains data-parallel with
``torch.distributed`` (NCCL, one process per GPU; gloo CPU processes when there is no GPU): MONAI
Label's ``multi_gpu`` option maps onto it. PyTorch has no ready-made epoch loop with these parts
(MONAI's ignite engines need ignite, which is not a dependency), so the loop is written here once.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from ..networks.checkpoint import load_checkpoint, save_checkpoint  # noqa: F401  (re-exported: the loop writes them)
from . import progress as watch
from .command import training_command  # noqa: F401  (re-exported for the task CLIs)

log = logging.getLogger(__name__)


def _to(x: Any, device) -> Any:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x)).to(device)
    if isinstance(x, torch.Tensor):
        return x.to(device)
    return x


def to_device(batch: dict, device) -> dict:
    """A batch dict with every numpy array / tensor moved to ``device`` as a tensor."""
    return {k: _to(v, device) for k, v in batch.items()}


def train(
    recipe,
    out_path: str | Path,
    epochs: int,
    steps_per_epoch: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    init: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    world_size: int = 1,
    max_minutes: float | None = None,
    patience_epochs: int | None = None,
) -> dict:
    """Train ``recipe``'s network; the best epoch is saved to ``out_path``.

    ``init``: checkpoint to start from (fine-tuning). ``max_minutes``: stop after the epoch that
    passes this wall time (the schedule is still planned for ``epochs``). ``patience_epochs``: stop
    when the validation metric has not improved for that many epochs. Returns ``{"metric",
    "history", "best", "init_metrics", "config", "seconds", "device"}``; each history record has
    epoch, train_loss, lr, seconds and the validation metrics; ``init_metrics`` are the validation
    metrics of the ``init`` weights before training (None without ``init``).
    """
    opts = dict(
        epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size, lr=lr, seed=seed, init=None if init is None else str(init), device=device, progress=progress, max_minutes=max_minutes, patience_epochs=patience_epochs, t0=time.time()
    )
    if world_size > 1:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            torch.multiprocessing.spawn(_ddp_worker, args=(world_size, tmp, recipe, str(out_path), opts), nprocs=world_size, join=True)
            return json.loads((Path(tmp) / "result.json").read_text())
    return _fit(0, 1, recipe, out_path, on_epoch=on_epoch, **opts)


def _ddp_worker(rank: int, world_size: int, tmp: str, recipe, out_path: str, opts: dict) -> None:
    import torch.distributed as dist

    cuda = torch.cuda.is_available() and torch.cuda.device_count() >= world_size
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world_size)
    try:
        # every rank runs the same number of epochs (no wall-time stop, which could desynchronise them)
        res = _fit(rank, world_size, recipe, out_path, **{**opts, "max_minutes": None, "patience_epochs": None, "device": f"cuda:{rank}" if cuda else "cpu", "progress": opts["progress"] and rank == 0})
        if rank == 0:
            (Path(tmp) / "result.json").write_text(json.dumps(res))
    finally:
        dist.destroy_process_group()


def _default_scheduler(opt, total_steps: int, lr: float):
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps), eta_min=lr * 0.05)


def _fit(rank, world_size, recipe, out_path, epochs, steps_per_epoch, batch_size, lr, seed, init, device, progress, max_minutes, patience_epochs, t0, on_epoch=None) -> dict:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)  # same initial weights on every rank
    rng = np.random.default_rng(seed + 7919 * rank)  # each rank draws its own examples
    net = recipe.build().to(device)
    if init:
        state, _ = load_checkpoint(init, device)
        net.load_state_dict(state)
    model = net
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[torch.device(device).index] if str(device).startswith("cuda") else None)
    steps = max(1, steps_per_epoch // world_size)
    own_step = hasattr(recipe, "step")
    opt = sched = None
    if not own_step:
        opt = recipe.optimizer(model.parameters(), lr) if hasattr(recipe, "optimizer") else torch.optim.Adam(model.parameters(), lr=lr)
        sched = recipe.scheduler(opt, epochs * steps) if hasattr(recipe, "scheduler") else _default_scheduler(opt, epochs * steps, lr)
    config = {**recipe.config(), "seed": seed, "world_size": world_size, "batch_size": batch_size, "lr": lr}
    metric = recipe.metric
    init_metrics = None
    if init and rank == 0:  # the starting weights' score on the same validation data
        net.eval()
        with torch.no_grad():
            init_metrics = {k: float(v) for k, v in recipe.validate(net, device).items()}
        log.info("%s: starting weights score %s %.4g on validation", recipe.name, metric, init_metrics[metric])
    history, best, stale = [], {metric: math.inf}, 0
    for epoch in range(1, epochs + 1):
        model.train()
        losses = []
        bar = tqdm(recipe.batches(rng, steps, batch_size), total=steps, desc=f"{recipe.name} epoch {epoch}/{epochs}", disable=not progress, leave=False)
        if rank == 0:
            watch.report(force=True, stage="training", epoch=epoch, epochs=epochs, step=0, steps=steps, metric=metric)
        for batch in bar:
            if own_step:
                losses.append(float(recipe.step(model, batch, device)))
            else:
                loss = recipe.loss(model, to_device(batch, device), device)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.4g}")
            if rank == 0:
                watch.report(step=len(losses), loss=float(np.mean(losses)))
        if rank != 0:
            continue
        watch.report(force=True, stage="validating", step=len(losses), loss=float(np.mean(losses)))
        scored = recipe.eval_model(net) if hasattr(recipe, "eval_model") else net
        net.eval()
        scored.eval()
        with torch.no_grad():
            metrics = recipe.validate(scored, device)
        rec = {"epoch": epoch, "train_loss": float(np.mean(losses)), **{k: float(v) for k, v in metrics.items()}, "lr": float(opt.param_groups[0]["lr"]) if opt else float(getattr(recipe, "lr", lr)), "seconds": round(time.time() - t0, 1)}
        history.append(rec)
        others = ", ".join(f"{k} {float(v):.4g}" for k, v in metrics.items() if k != metric)
        msg = f"{recipe.name} epoch {epoch}/{epochs}: train loss {rec['train_loss']:.4g}, {metric} {rec[metric]:.4g}" + (f" [{others}]" if others else "") + f" ({rec['seconds']:.0f} s)"
        log.info(msg)
        if progress:
            tqdm.write(msg)
        if np.isfinite(rec[metric]) and rec[metric] < best[metric]:
            best, stale = dict(rec), 0
            save_checkpoint(out_path, scored, {**config, "epoch": epoch, **{k: float(v) for k, v in metrics.items()}})
        else:
            stale += 1
        watch.report(force=True, stage="epoch done", value=rec[metric], best=best[metric])
        if on_epoch:
            on_epoch(rec)
        if patience_epochs and stale >= patience_epochs:
            log.info("%s: no improvement of %s for %d epochs, stopping", recipe.name, metric, stale)
            break
        if max_minutes and time.time() - t0 > 60 * max_minutes:
            log.info("%s: wall time %.1f min passed, stopping after epoch %d", recipe.name, max_minutes, epoch)
            break
    return {"metric": metric, "history": history, "best": best if history else {}, "init_metrics": init_metrics, "config": config, "seconds": round(time.time() - t0, 1), "device": str(device)}


def save_training_curve(history: list[dict], path: str | Path, title: str, metric: str, metric_label: str, loss_label: str = "training loss") -> Path:
    """PNG of the training loss and the validation ``metric`` per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].plot(ep, [h["train_loss"] for h in history], "o-")
    ax[0].set(xlabel="epoch", ylabel=loss_label, title=title)
    ax[1].plot(ep, [h[metric] for h in history], "o-", color="C1")
    ax[1].set(xlabel="epoch", ylabel=metric_label, title=f"validation: {metric_label}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
