"""Training recipes of the OEF networks for :func:`qmri.training.loop.train`.

* ``cnn3d`` (seed 000): masked MSE on normalised parameters, Adam 1e-3, the seed's
  CosineAnnealingWarmupRestarts schedule (:func:`warmup_cosine_restarts_factor`: 100 warm-up steps,
  1000-step cycles, cycle_mult 1.0, peak decay 0.9 per cycle), early stopping after two cycles
  without improvement (the loop's ``patience_epochs`` = 2000 steps / steps per epoch).
* ``lstm`` (seed 001): voxelwise, Huber loss (delta 1, Keras default) on normalised parameters,
  Adam 1e-4 constant, batch 512 voxels.
* ``unet``: bounded 3D U-Net, masked MSE + :data:`PHYSICS_WEIGHT` x a physics
  consistency term that re-simulates the normalised echoes and the QSM from the predicted
  parameters with the exact QQ forward model and compares them with the network's own input.
* ``context`` and ``setcontext`` (the "best" candidates): voxel batches drawn from banks of fixed
  context features (:class:`~qmri.models.oefnet.data.FeatureBank`), MSE with Y weighted twice + the
  same physics term; ``setcontext`` first fits its whole-brain code (closed-form ridge from each
  training volume's brain statistics to its subject-level parameters), then steps over
  :data:`SET_VOLUMES` volumes at a time, each with its code.

Losses are averaged over brain voxels only: the seed averaged over whole volumes, but the
phantoms' parameters are undefined (0) outside the brain, where there is no signal to fit.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .net import CHI_INPUT_SCALE, CONTEXT_COARSE_FROM, CONTEXT_HIDDEN, DEFAULT_FEATURES, N_ECHOES, build, denormalise, is_voxelwise
from .predict import oef_sd_percent, prepare_input, predict_normalised
from ...metrics.oef import within_volume_r
from ...physics.qq import PARAM_NAMES, QQNET_STD, oef_from_y, qbold_magnitude, qq_susceptibility
from .data import SNR_RANGE, TE_MS, OEFVolume, sample_patch, sample_voxels

# Seed 000 schedule (CosineAnnealingWarmupRestarts). The seed gives no floor; 1 % of the peak is used.
WARMUP_STEPS = 100
CYCLE_STEPS = 1000
CYCLE_MULT = 1.0
CYCLE_DECAY = 0.9
MIN_LR_RATIO = 0.01
PHYSICS_WEIGHT = 0.1
SIGNAL_SCALE = 0.02  # normalised-echo residual unit of the physics term (about 2x the noise at SNR 100)
CHI_SCALE_PPM = 0.01  # QSM residual unit of the physics term (ppm; 2x the simulated QSM noise)
VAL_LSTM_VOXELS = 20000
DEFAULTS = {
    "cnn3d": {"lr": 1e-3, "batch_size": 2, "patch": 32},
    "lstm": {"lr": 1e-4, "batch_size": 512, "patch": None},
    "unet": {"lr": 1e-3, "batch_size": 2, "patch": 48},
    "context": {"lr": 1e-3, "batch_size": 8192, "patch": None},
    "setcontext": {"lr": 1e-3, "batch_size": 8192, "patch": None},
}
VOXEL_BATCHED = ("lstm", "context", "setcontext")  # batch_size counts voxels
BANKED = ("context", "setcontext")  # train on banked fixed context features
BANK_REFRESH = 4  # context networks: training volumes re-noised (new SNR) and re-featurised per epoch
LOSS_WEIGHTS = {"context": (1.0, 1.0, 2.0, 1.0, 1.0), "setcontext": (1.0, 1.0, 2.0, 1.0, 1.0)}  # Y (-> OEF) counts twice for the best candidates
NLL_WEIGHT = 0.1  # uncertainty head: weight of the Gaussian negative log-likelihood of Y (its mean detached)
SD_COVERAGE = 0.95  # calibration: the share of validation brain voxels with |OEF error| <= 2 OEF_sd
SET_VOLUMES = 8  # setcontext: volumes (subjects) per step; batch_size voxels are split among them


def warmup_cosine_restarts_factor(step: int, warmup: int = WARMUP_STEPS, cycle: int = CYCLE_STEPS, cycle_mult: float = CYCLE_MULT, gamma: float = CYCLE_DECAY, min_ratio: float = MIN_LR_RATIO) -> float:
    """Learning-rate factor (of the base lr) at optimiser ``step`` (0-based) for the seed-000 schedule.

    As the CosineAnnealingWarmupRestarts scheduler the seed names: each cycle (``cycle`` steps,
    the next one ``cycle_mult`` times longer) starts with a linear warm-up from the floor
    ``min_ratio`` to the cycle's peak ``gamma**k`` over ``warmup`` steps, then a half cosine from the
    peak back to the floor. Written by hand because torch's CosineAnnealingWarmRestarts has neither
    warm-up nor peak decay.
    """
    k, start, length = 0, 0, cycle
    while step >= start + length:
        start += length
        length = int(round(length * cycle_mult))
        k += 1
    s = step - start
    peak = gamma**k
    if s < warmup:
        return min_ratio + (peak - min_ratio) * s / warmup
    return min_ratio + (peak - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * (s - warmup) / max(1, length - warmup)))


def physics_residual(pred_norm: torch.Tensor, x: torch.Tensor, m: torch.Tensor, te_ms=TE_MS) -> torch.Tensor:
    """Mean squared, scaled misfit between the input and the signal/QSM re-simulated from the prediction.

    ``pred_norm`` (B, 5, ...) normalised parameters (S0 relative to echo 1), ``x`` (B, 9, ...) the
    normalised input, ``m`` (B, 1, ...) brain mask. Echo residuals are in units of
    :data:`SIGNAL_SCALE`, QSM residuals in units of :data:`CHI_SCALE_PPM` ppm.
    """
    p = denormalise(pred_norm.movedim(1, -1))
    te = np.asarray(te_ms, dtype=np.float64) / 1000.0
    sig = qbold_magnitude(p[..., 0], p[..., 1], p[..., 2], p[..., 3], p[..., 4], te)
    chi = qq_susceptibility(p[..., 2], p[..., 3], p[..., 4])
    xs = x.movedim(1, -1)
    mm = m[:, 0]
    r_sig = ((sig - xs[..., :N_ECHOES]) / SIGNAL_SCALE) ** 2
    r_chi = ((chi - xs[..., N_ECHOES] / CHI_INPUT_SCALE) / CHI_SCALE_PPM) ** 2
    tot = (r_sig.mean(-1) + r_chi) * mm
    return tot.sum() / mm.sum().clamp(min=1.0)


class OEFRecipe:
    """Recipe (see :mod:`qmri.training.loop`) for one OEF architecture.

    ``train`` / ``val``: :class:`~qmri.models.oefnet.data.OEFVolume` lists; noiseless validation
    volumes get fixed noise at ``val_snr`` once. ``model`` is the name the weights are shipped under
    (cnn3d, lstm or best).
    """

    metric = "val_oef_rmse"

    def __init__(
        self,
        arch: str,
        train: list[OEFVolume],
        val: list[OEFVolume],
        model: str | None = None,
        patch: int | None = None,
        val_snr: float = 100.0,
        physics_weight: float | None = None,
        data_note: str = "",
        seed: int = 0,
        banks: list | None = None,
        arch_kwargs: dict | None = None,
    ):
        self.arch = arch
        # build() keywords, saved with the weights; context networks record their feature grid
        self.arch_kwargs = dict(arch_kwargs) if arch_kwargs is not None else ({"coarse_from": CONTEXT_COARSE_FROM, "hidden": list(CONTEXT_HIDDEN), "uncertainty": True, **DEFAULT_FEATURES} if arch in BANKED else {})
        self.name = f"oef-{model or arch}"
        self.model = model or arch
        self.train = train
        self.patch = patch or DEFAULTS[arch]["patch"]
        self.physics_weight = (PHYSICS_WEIGHT if arch in ("unet",) + BANKED else 0.0) if physics_weight is None else float(physics_weight)
        self._bank = list(banks) if banks else None  # prebuilt FeatureBanks (e.g. many phantom draws), never refreshed
        self._codes: dict = {}  # setcontext: out-of-fold whole-brain code of each prebuilt bank
        self.data_note = data_note
        from .data import with_noise

        rng = np.random.default_rng(seed + 424242)
        self.val = [with_noise(v, val_snr, rng) if v.noiseless else v for v in val]
        self.val_snr = val_snr
        self.val_sel = []  # fixed voxel subsets for the (slow) voxelwise validation
        for v in self.val:
            idx = np.argwhere(v.mask)
            idx = idx[rng.choice(len(idx), size=min(VAL_LSTM_VOXELS, len(idx)), replace=False)]
            sel = np.zeros_like(v.mask)
            sel[tuple(idx.T)] = True
            self.val_sel.append(sel)

    # -- loop interface --------------------------------------------------------------------------
    def build(self) -> torch.nn.Module:
        net = build(self.arch, **self.arch_kwargs)
        if self.arch == "setcontext":
            self.fit_code(net)  # the penalty is kept in the network's code_alpha buffer
        return net

    def config(self) -> dict:
        return {
            "model": self.model,
            "arch": self.arch,
            "arch_kwargs": dict(self.arch_kwargs),
            "echo_times_ms": list(TE_MS),
            "param_names": list(PARAM_NAMES),
            "input": "8 echo magnitudes / echo-1 magnitude (clipped to [0, 3]) + QSM (ppm) x 10, 0 outside the brain",
            "output": "(p - QQNET_MEAN) / QQNET_STD for S0 (relative to echo 1), R2 (1/s), Y, v, chi_nb (ppm)",
            "loss": {
                "cnn3d": "masked MSE",
                "lstm": "Huber (delta 1)",
                "unet": f"masked MSE + {self.physics_weight} x physics consistency",
                "context": f"MSE weighted {LOSS_WEIGHTS['context']} + {self.physics_weight} x physics consistency",
                "setcontext": f"MSE weighted {LOSS_WEIGHTS['setcontext']} + {self.physics_weight} x physics consistency",
            }[self.arch],
            "patch": self.patch,
            "snr_range": list(SNR_RANGE),
            "val_snr": self.val_snr,
            "data": self.data_note,
        }

    def _refresh_bank(self, rng: np.random.Generator) -> None:
        """Context networks: their input features are fixed (not learned), so they are computed once per
        noisy whole volume and the MLPs train on large voxel batches drawn from this bank; each epoch
        re-noises :data:`BANK_REFRESH` training volumes at a new SNR (all volumes the first time).
        Prebuilt banks (``banks=``) are used as they are."""
        from .data import feature_bank

        if self._bank is not None and not self.train:
            return
        if self._bank is None:
            self._bank = [None] * len(self.train)
            todo = range(len(self.train))
        else:
            todo = rng.choice(len(self.train), size=min(BANK_REFRESH, len(self.train)), replace=False)
        for j in todo:
            self._bank[j] = feature_bank(self.train[j], rng.uniform(*SNR_RANGE), rng, feature_kwargs={k: v for k, v in self.arch_kwargs.items() if k in ("sigmas", "coarse_from", "profile")})

    def batches(self, rng: np.random.Generator, steps: int, batch_size: int):
        if self.arch in BANKED:
            self._refresh_bank(rng)
        for _ in range(steps):
            if self.arch == "setcontext":
                yield self._set_batch(rng, batch_size)
                continue
            if self.arch == "context":
                per = np.bincount(rng.integers(len(self._bank), size=batch_size), minlength=len(self._bank))
                parts = [(b.f[idx], b.y[idx], b.x[idx]) for b, k in zip(self._bank, per) if k for idx in [rng.integers(len(b.f), size=k)]]
                yield {"f": np.concatenate([p[0] for p in parts]), "y": np.concatenate([p[1] for p in parts]), "x": np.concatenate([p[2] for p in parts])}
                continue
            if is_voxelwise(self.arch):
                yield sample_voxels(self.train, batch_size, rng)
                continue
            items = [sample_patch(self.train[rng.integers(len(self.train))], self.patch, rng, rng.uniform(*SNR_RANGE)) for _ in range(batch_size)]
            yield {k: np.stack([it[k] for it in items]) for k in items[0]}

    def _summary(self, b) -> np.ndarray:
        """:func:`~qmri.models.oefnet.net.brain_summary` of a banked volume (all its banked voxels), cached on it."""
        from .net import brain_summary

        if getattr(b, "summary", None) is None:
            b.summary = brain_summary(torch.from_numpy(b.f), b.f.shape[1]).numpy()
        return b.summary

    def _set_batch(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        """:data:`SET_VOLUMES` banked volumes: ``s`` (V, S) the whole-brain statistics of each, for
        prebuilt banks ``g`` (V, code) their out-of-fold codes (:meth:`fit_code`), and
        ``batch_size // V`` random brain voxels of each: ``f`` (V, n, F), ``y`` (V, n, 5), ``x`` (V, n, 9)."""
        n = max(1, batch_size // SET_VOLUMES)
        js = rng.integers(len(self._bank), size=SET_VOLUMES)
        idx = [rng.integers(len(self._bank[j].f), size=n) for j in js]
        out = {k: np.stack([getattr(self._bank[j], k)[i] for j, i in zip(js, idx)]) for k in ("f", "y", "x")}
        out["s"] = np.stack([self._summary(self._bank[j]) for j in js])
        if self._codes:  # prebuilt phantom banks: out-of-fold codes; else the network's own code of "s"
            out["g"] = np.stack([self._codes[id(self._bank[j])] for j in js])
        return out

    def fit_code(self, net) -> float:
        """Fit the set-context network's whole-brain code (closed-form ridge) on the training banks and
        keep each bank's out-of-fold code (folds by anatomy: banks of one phantom share a fold)."""
        from .net import code_targets

        if self._bank is None:
            self._refresh_bank(np.random.default_rng(0))
        groups = [b.name.split("-draw")[0] for b in self._bank]
        alpha, oof = net.fit_code(np.stack([self._summary(b) for b in self._bank]), np.stack([code_targets(b.y, b.x) for b in self._bank]), groups)
        # study banks are re-noised each epoch and fine-tuning replaces the code with the weights' own:
        # there the head sees the network's code; prebuilt phantom banks keep their out-of-fold codes
        self._codes = {} if self.train else {id(b): c for b, c in zip(self._bank, oof)}
        return alpha

    def loss(self, model, batch, device) -> torch.Tensor:
        if self.arch in BANKED:
            return self._context_loss(model, batch)
        pred = model(batch["x"])
        if is_voxelwise(self.arch):
            return F.huber_loss(pred, batch["y"], delta=1.0)
        m = batch["m"]
        mse = (((pred - batch["y"]) ** 2) * m).sum() / (m.sum().clamp(min=1.0) * pred.shape[1])
        if self.physics_weight > 0:
            return mse + self.physics_weight * physics_residual(pred, batch["x"], m)
        return mse

    def _context_loss(self, model, batch) -> torch.Tensor:
        net = getattr(model, "module", model)  # DDP wraps the network
        w = torch.tensor(LOSS_WEIGHTS[self.arch], dtype=batch["y"].dtype, device=batch["y"].device)
        wmse = lambda a, b: (((a - b) ** 2) * w).mean() * len(w) / w.sum()  # noqa: E731
        if self.arch == "setcontext":
            g = batch["g"] if "g" in batch else net.code_from_summary(batch["s"])
            pred = net.head_with_code(batch["f"], g).flatten(0, 1)
            yv, xv = batch["y"].flatten(0, 1), batch["x"].flatten(0, 1)
        else:
            pred = net.head_bounded(batch["f"])
            yv, xv = batch["y"], batch["x"]
        if pred.shape[-1] > 5:  # uncertainty head: Gaussian NLL of Y with the mean detached (it only trains the sd)
            log_sd = pred[:, 5]
            loss_sd = 0.5 * ((pred[:, 2].detach() - yv[:, 2]) ** 2 * torch.exp(-2.0 * log_sd) + 2.0 * log_sd).mean()
            pred = pred[:, :5]
        else:
            loss_sd = 0.0
        loss = wmse(pred, yv) + NLL_WEIGHT * loss_sd
        if self.physics_weight > 0:  # voxels as (1, C, N): the residual takes any spatial layout
            loss = loss + self.physics_weight * physics_residual(pred.T[None], xv.T[None], torch.ones(1, 1, len(xv), device=xv.device))
        return loss

    def optimizer(self, params, lr):
        return torch.optim.Adam(params, lr=lr)

    def scheduler(self, opt, total_steps: int):
        if self.arch == "cnn3d":
            return torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine_restarts_factor)
        if self.arch == "lstm":
            return None  # seed 001: constant Adam 1e-4
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps), eta_min=0.05 * opt.param_groups[0]["lr"])

    def validate(self, net, device) -> dict:
        return evaluate(net, self.arch, self.val, device, self.val_sel if is_voxelwise(self.arch) else None)


def evaluate(net, arch: str, vols: list[OEFVolume], device="cpu", subsets: list[np.ndarray] | None = None) -> dict:
    """RMSE of each parameter (S0 in the volume's units, R2 1/s, Y, v, chi_nb ppm) and of OEF (%-points)
    over the brain (or the given voxel ``subsets``), pooled over ``vols``. Networks that see the
    whole volume predict on the whole brain and are scored on the subset; the voxelwise LSTM
    predicts the subset only."""
    sq = {n: 0.0 for n in PARAM_NAMES + ("OEF",)}
    count = 0
    est, true, covered = [], [], []
    for i, v in enumerate(vols):
        mask = v.mask if subsets is None else subsets[i]
        x, s1 = prepare_input(v.signal, v.chi, v.mask)
        z = predict_normalised(net, arch, x, mask if is_voxelwise(arch) else v.mask, device)
        p = denormalise(z[..., :5])[mask]
        truth = v.params[mask]
        p[:, 0] *= s1[mask]
        for k, n in enumerate(PARAM_NAMES):
            sq[n] += float(np.sum((p[:, k] - truth[:, k]) ** 2))
        err = 100 * (oef_from_y(p[:, 2]) - oef_from_y(truth[:, 2]))
        sq["OEF"] += float(np.sum(err**2))
        count += int(mask.sum())
        est.append(oef_from_y(p[:, 2]))
        true.append(oef_from_y(truth[:, 2]))
        if z.shape[-1] > 5:
            covered.append(np.abs(err) <= 2.0 * oef_sd_percent(z[..., 5][mask], float(net.sd_scale)))
    out = {f"val_rmse_{n}": math.sqrt(sq[n] / max(count, 1)) for n in PARAM_NAMES}
    out["val_oef_rmse"] = math.sqrt(sq["OEF"] / max(count, 1))
    out["val_oef_r"] = within_volume_r(list(zip(est, true)))  # per volume, so a map constant within each volume scores 0
    if covered:
        out["val_oef_coverage_2sd"] = float(np.concatenate(covered).mean())
    return out


def calibrate_sd(net, arch: str, vols: list[OEFVolume], coverage: float = SD_COVERAGE, device="cpu") -> float:
    """Set an uncertainty head's ``sd_scale`` so that ``coverage`` of the brain voxels of ``vols``
    (noisy validation volumes, never the benchmark's) have |OEF error| <= 2 OEF_sd; returns it."""
    ratios = []
    for v in vols:
        x, _ = prepare_input(v.signal, v.chi, v.mask)
        z = predict_normalised(net, arch, x, v.mask, device)[v.mask]
        err = np.abs(denormalise(z[:, :5])[:, 2] - v.params[v.mask][:, 2]) / float(QQNET_STD[2])
        ratios.append(err / np.exp(z[:, 5]))
    scale = float(np.quantile(np.concatenate(ratios), coverage)) / 2.0
    with torch.no_grad():
        net.sd_scale.fill_(scale)
    return scale


# ------------------------------------------------------------------------------------------------
# MONAI Label trainer hooks (apps/qmri/lib/configs/oef.py registers them with NetworkTrainer)
# ------------------------------------------------------------------------------------------------
NETWORK_ARCH = {"best": "setcontext", "cnn3d": "cnn3d", "lstm": "lstm"}
