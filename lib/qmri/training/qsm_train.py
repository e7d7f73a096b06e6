"""Train QSMnet on phantoms (``qmri train qsm``); the MONAI Label trainer calls the same loop.

Data: brain susceptibility of phantom subjects (seeds listed; validation subjects never trained on),
local fields by dipole convolution with zero padding plus 0.001 ppm noise, each epoch a fresh
rotation of every training brain by up to +-30 degrees relative to B0 (seed 003's augmentation),
random 32^3 patches at 2 mm (QSMnet's 64^3 at 1 mm field of view) with at least 30 % brain.
Optimiser: Adam (lr 1e-3, QSMnet's) with cosine decay; loss :class:`~qmri.networks.qsm_loss.QSMnetLoss`.
The best epoch by validation NRMSE (whole-volume inference) is saved.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..classical.qsm import nrmse  # noqa: F401  (demeaned NRMSE; also imported from here by tests)
from ..networks.qsm_loss import QSMnetLoss
from ..networks.qsm_predict import predict_chi
from ..networks.qsmnet import CHI_SCALE, DEFAULT_FEATURES, FIELD_SCALE, qsmnet
from .qsm_data import QSMVolume, local_field, make_volume, rotated_example, sample_patches

log = logging.getLogger(__name__)


def save_checkpoint(path: str | Path, net: torch.nn.Module, config: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": net.state_dict(), "config": json.dumps(config)}, tmp)
    tmp.replace(path)  # atomic: an infer task never reads a half-written file
    return path


def train_qsm(
    out_path: str | Path,
    train: Sequence[int] | Sequence[QSMVolume],
    val: Sequence[int] | Sequence[QSMVolume],
    resolution_mm: float = 2.0,
    epochs: int = 20,
    steps_per_epoch: int = 40,
    batch_size: int = 4,
    patch: int = 32,
    lr: float = 1e-3,
    features=DEFAULT_FEATURES,
    seed: int = 0,
    init: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    world_size: int = 1,
) -> dict:
    """Train and save the best weights to ``out_path``; returns the history and best metrics.

    ``train``/``val`` are phantom seeds or ready :class:`QSMVolume` s (e.g. from datastore studies).
    ``init``: weights to start from (fine-tuning); ``on_epoch`` is called with each epoch's record.
    ``world_size > 1`` trains data-parallel with ``torch.distributed`` (one process per GPU with
    NCCL, or per CPU process with gloo when there is no GPU): each rank draws its own patches and
    runs ``steps_per_epoch / world_size`` steps, gradients are averaged by DistributedDataParallel,
    rank 0 validates and saves.
    """
    t0 = time.time()
    vols = [v if isinstance(v, QSMVolume) else make_volume(int(v), resolution_mm) for v in tqdm(list(train), desc="training brains", disable=not progress)]
    vvols = [v if isinstance(v, QSMVolume) else make_volume(int(v), resolution_mm) for v in tqdm(list(val), desc="validation brains", disable=not progress)]
    opts = dict(epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size, patch=patch, lr=lr, features=tuple(features), seed=seed, init=None if init is None else str(init), device=device, progress=progress, t0=t0)
    if world_size > 1:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            torch.multiprocessing.spawn(_ddp_worker, args=(world_size, tmp, vols, vvols, str(out_path), opts), nprocs=world_size, join=True)
            return json.loads((Path(tmp) / "result.json").read_text())
    return _fit(0, 1, vols, vvols, out_path, on_epoch=on_epoch, **opts)


def _ddp_worker(rank: int, world_size: int, tmp: str, vols, vvols, out_path: str, opts: dict) -> None:
    import torch.distributed as dist

    cuda = torch.cuda.is_available() and torch.cuda.device_count() >= world_size
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world_size)
    try:
        res = _fit(rank, world_size, vols, vvols, out_path, **{**opts, "device": f"cuda:{rank}" if cuda else "cpu", "progress": opts["progress"] and rank == 0})
        if rank == 0:
            (Path(tmp) / "result.json").write_text(json.dumps(res))
    finally:
        dist.destroy_process_group()


def _fit(rank, world_size, vols, vvols, out_path, epochs, steps_per_epoch, batch_size, patch, lr, features, seed, init, device, progress, t0, on_epoch=None) -> dict:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)  # same initial weights on every rank
    rng = np.random.default_rng(seed + 7919 * rank)  # each rank draws its own rotations and patches
    val_fields = [local_field(v.chi, v.mask, v.voxel_size_mm, rng=np.random.default_rng(10_000 + i)) for i, v in enumerate(vvols)]
    net = qsmnet(features).to(device)
    if init:
        ckpt = torch.load(init, map_location=device, weights_only=True)
        net.load_state_dict(ckpt["state_dict"])
    model = net
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[torch.device(device).index] if str(device).startswith("cuda") else None)
    steps = max(1, steps_per_epoch // world_size)
    loss_fn = QSMnetLoss(voxel_size_mm=vols[0].voxel_size_mm)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps), eta_min=lr * 0.05)
    config = {
        "features": list(features),
        "field_scale": FIELD_SCALE,
        "chi_scale": CHI_SCALE,
        "voxel_size_mm": vols[0].voxel_size_mm,
        "patch": patch,
        "b0_dir_trained": [0.0, 0.0, 1.0],
        "train_subjects": [v.subject for v in vols],
        "val_subjects": [v.subject for v in vvols],
        "seed": seed,
        "world_size": world_size,
    }
    history, best = [], {"val_nrmse": float("inf")}
    for epoch in range(1, epochs + 1):
        model.train()
        pool = []
        for v in vols:
            f, c, m = rotated_example(v, rng)
            pool += sample_patches(f, c, m, max(1, steps * batch_size // len(vols)), patch, rng)
        order = rng.permutation(len(pool))
        losses = []
        bar = tqdm(range(steps), desc=f"epoch {epoch}/{epochs}", disable=not progress, leave=False)
        for step in bar:
            idx = order[(step * batch_size) % len(pool) : (step * batch_size) % len(pool) + batch_size]
            if len(idx) < batch_size:
                idx = rng.choice(len(pool), batch_size)
            f = torch.from_numpy(np.stack([pool[i][0] for i in idx])[:, None]).to(device)
            c = torch.from_numpy(np.stack([pool[i][1] for i in idx])[:, None]).to(device)
            m = torch.from_numpy(np.stack([pool[i][2] for i in idx])[:, None].astype(np.float32)).to(device)
            pred = model(f * FIELD_SCALE) / CHI_SCALE * m
            loss, _ = loss_fn(pred, c, m)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.4f}")
        if rank != 0:
            continue
        net.eval()
        vn = [nrmse(predict_chi(net, fld, v.mask, (v.voxel_size_mm,) * 3, device=device), v.chi, v.mask) for v, fld in zip(vvols, val_fields)]
        rec = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_nrmse": float(np.mean(vn)), "seconds": round(time.time() - t0, 1)}
        history.append(rec)
        log.info("epoch %d/%d: train loss %.4f, validation NRMSE %.3f (%.0f s)", epoch, epochs, rec["train_loss"], rec["val_nrmse"], rec["seconds"])
        if progress:
            tqdm.write(f"epoch {epoch}/{epochs}: train loss {rec['train_loss']:.4f}, validation NRMSE {rec['val_nrmse']:.3f} ({rec['seconds']:.0f} s)")
        if rec["val_nrmse"] < best["val_nrmse"]:
            best = dict(rec)
            save_checkpoint(out_path, net, {**config, "epoch": epoch, "val_nrmse": rec["val_nrmse"]})
        if on_epoch:
            on_epoch(rec)
    return {"history": history, "best": best, "config": config, "seconds": round(time.time() - t0, 1), "device": str(device)}


def save_training_curve(history: list[dict], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].plot(ep, [h["train_loss"] for h in history], "o-")
    ax[0].set(xlabel="epoch", ylabel="training loss (ppm)", title="QSMnet loss (L1 + 0.5 model + 0.1 gradient)")
    ax[1].plot(ep, [h["val_nrmse"] for h in history], "o-", color="C1")
    ax[1].set(xlabel="epoch", ylabel="NRMSE", title="validation NRMSE (whole brain)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
