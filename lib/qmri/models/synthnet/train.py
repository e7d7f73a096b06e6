"""scCycleGAN training recipe for :func:`qmri.training.loop.train` (a recipe with its own ``step``).

Losses (x: T2w MR slice, y: CT slice, unpaired; G: MR -> CT, F: CT -> MR; network units [-1, 1]):

* adversarial, least squares (LSGAN, REFERENCE.md section 4): G minimises
  ``(D_CT(G(x)) - 1)^2 + (D_MR(F(y)) - 1)^2``; each D minimises
  ``0.5 [(D(real) - 1)^2 + D(fake)^2]`` with fakes drawn from a 50-slice history pool; weight
  ``adv`` (1, seed 004 Table 1);
* cycle: ``|F(G(x)) - x| + |G(F(y)) - y|`` (L1), weight ``cyc`` (10, CycleGAN default);
* pixel (seed 004): the discriminator's per-pixel map, upsampled to the image and clipped to
  [0, 1], weights an L1 so regions the discriminator already takes for real get the full loss
  and regions it takes for synthetic get less. The seed is paired (L1 of the translation to the
  true image); training here is unpaired, so the pair is the cycle reconstruction and its source:
  ``mean(P_MR * |F(G(x)) - x|) + mean(P_CT * |G(F(y)) - y|)`` with ``P = clip(up(D(rec)), 0, 1)``
  (detached); weight ``pix`` (100, seed);
* identity: ``|G(y) - y| + |F(x) - x|``, weight ``idt`` (default 0.5, i.e. 0.05 of the cycle
  weight: CycleGAN's 0.5 x cycle asks an MR -> CT generator to leave CTs unchanged, which fights the
  cross-modality mapping; kept small as a regulariser of the intensity range);
* structural consistency: :func:`qmri.models.synthnet.loss.spatially_correlative_loss` between each
  source and its translation, ``SC(x, G(x)) + SC(y, F(y))``, weight ``str`` (10, seed).

Pretraining and warm start (optional): unpaired CycleGANs start from an arbitrary mapping and may
stay near the identity (sCT looking like the MR) for a long time (experiments/synthnet/recipe_notes.md).
Each training image can therefore come
with a classical method's translation of itself: for an MR the sCT of ``pseudo_sct``
(:data:`PSEUDO_SCT`: ``tissue_mixture``, :func:`qmri.classical.tissue_mixture_ct.
synthetic_ct_tissue_mixture`, the default, or ``bulk_density``, :func:`qmri.classical.bulk_density.
synthetic_ct_bulk_density`), for a CT the bulk sMR (:func:`~qmri.classical.bulk_density.
synthetic_mr_bulk`):

* ``warm_only_steps`` (pretraining): the first steps train only the generators with
  ``|G(x) - classical(x)| + |F(y) - classical(y)|`` (Adam at ``warm_lr``, no discriminators), ~3x cheaper
  per step than a GAN step; the scCycleGAN losses take over afterwards;
* ``warm_steps``: the same L1 added to the GAN losses with weight ``warm_weight`` ramped to 0.

* ``backtranslation`` (weight ``bt``, pretraining steps only): each generator also learns to
  invert the other one's translation of a real image, ``|G(F(y)~) - y| + |F(G(x)~) - x|`` with the
  intermediate detached (no gradient flows into the generator that made it, so the two cannot
  agree on a hidden code) and given the acquisition noise of the modality it imitates (``~``):
  Rician noise of the MR noise sd estimated from the training MRs' background (mean magnitude /
  sqrt(pi/2)), Gaussian noise of the CT noise sd estimated from the training CTs' air. Back-
  translation (Sennrich et al., ACL 2016; Lample et al., ICLR 2018, for unpaired translation) gives
  each generator *real* images of its output modality as targets (x and y themselves) instead of
  a classical method's approximation of them; the pseudo-target L1 (weight ``pseudo``) keeps both
  generators near a sensible mapping while they learn from each other.
* ``bt_ssim`` (pretraining steps with ``bt > 0``): adds ``bt_ssim x (1 - SSIM(F(G(x)~), x))``
  (MONAI :class:`~monai.losses.SSIMLoss`, 7x7 Gaussian window, data range 2 network units) to the
  CT -> MR back-translation. L1 alone lets the CT -> MR generator answer uncertain fine structure
  (sulcal CSF, 10-25 HU from brain against 5 HU of CT noise) with its blurred conditional median;
  the benchmark's SSIM punishes that blur (the MR truth blurred by 1 voxel scores 0.80), and the
  SSIM term rewards local contrast and structure directly.
* ``bt_hybrid`` (pretraining steps with ``bt > 0``, ``pseudo_sct`` tissue_mixture): the CT -> MR
  generator also inverts a hybrid sCT of each training MR, ``w x (|F(h(x)~) - x| + bt_ssim x
  (1 - SSIM(F(h(x)~), x)))``, where ``h`` (:func:`hybrid_sct`) takes brain, CSF and muscle from
  the classical tissue-mixture sCT and bone, air and fat from G(x): the generator's own sCT is
  flatter than a real CT inside the brain, so an F trained only on it learns to read flat brains,
  while the tissue-mixture sCT has the physics' partial-volume brain (``HU = sum p_c HU_c`` along
  the T2w axis) but a poor skull; the hybrid keeps each where it is good (measurements:
  experiments/synthnet/recipe_notes.md).
* ``hybrid_brain`` (with ``bt_hybrid``): ``'tissue_mixture'`` keeps the tissue-mixture sCT's brain;
  ``'drawn_mixture'`` replaces the hybrid's soft tissue inside the skull (the tissue-mixture
  method's own inside-the-skull mask, carried as a third MR pool channel) by
  :func:`drawn_brain_hu`: a venous blood <-> WM segment below the WM signal and compartment CT
  numbers drawn per image (the reasons are in its docstring); T2w-dark voxels inside the skull that
  the generator calls denser than soft tissue but not bone take it too (:func:`hybrid_sct`).

No ground truth enters any of these: training stays unpaired.

``ema_decay`` (0: off): validation and the saved checkpoint use an exponential moving average of
the network's weights, ``w_ema <- d w_ema + (1 - d) w`` after every step (PyTorch's
:class:`~torch.optim.swa_utils.AveragedModel` with ``get_ema_multi_avg_fn``; Polyak averaging, as
for the generators of progressive GANs and StyleGAN): at a constant learning rate the average over
the last ~1 / (1 - d) steps estimates the weights the epochs circle.

Optimisers: Adam (beta1 0.5, beta2 0.999, CycleGAN) for the generators together and the
discriminators together, created on the first ``step`` from ``self.lr``.

Validation: the held-out co-registered subjects are translated slice by slice as the server does,
with left-right flip averaging but without the server's in-plane offset averaging (``shift_average``
1, :func:`qmri.models.synthnet.predict.translate_slices`), which would make each validation 4x
slower; metrics are the
sCT MAE (HU) inside the head, the sCT bone Dice (>= 300 HU) and the sMR SSIM (SynthRAD convention,
:mod:`qmri.metrics.synthrad`). The selection metric ``val_score`` = MAE / 60 HU +
(1 - SSIM_sMR) / 0.10, each term 1 at the project's goal (60 HU, SSIM 0.90), lower is better.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import SSIMLoss
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .loss import spatially_correlative_loss
from .net import SynthCycleGAN, realness_map
from .predict import HU_RANGE, MR_RANGE, synthetic_ct, synthetic_mr
from ...metrics import synthrad as sm
from .data import SynthVolume, head_slices, random_crops
from .targets import (  # noqa: F401  (HYBRID_*, the noise helpers: re-exported for the CLI and tests)
    HYBRID_BRAIN,
    HYBRID_DARK_G_MAX_HU,
    HYBRID_G_HU,
    HYBRID_TM_HU,
    _bulk_smr,
    _central_block,
    _classical_sct,
    _ct_noise_sd_hu,
    _inside_skull_slices,
    _mr_noise_sd,
    add_ct_noise,
    add_mr_noise,
    drawn_brain_hu,
    hybrid_sct,
)

#: Classical MR -> CT methods that can make the pretraining pseudo-targets of the training MRs.
PSEUDO_SCT = ("tissue_mixture", "bulk_density")
DEFAULT_WEIGHTS = {"adv": 1.0, "cyc": 10.0, "pix": 100.0, "idt": 0.5, "str": 10.0}
#: ct_windows_hu: the CT -> MR generator also sees its input through a soft-tissue window (HU), see
#: :class:`qmri.models.synthnet.net.ResnetGenerator`.
DEFAULT_NET = {"width": 16, "n_blocks": 6, "n_down": 2, "d_width": 16, "d_layers": 3, "ct_windows_hu": [[-150.0, 150.0]]}


class ImagePool:
    """CycleGAN's history of generated images: the discriminator sees half current, half past fakes."""

    def __init__(self, size: int = 50, seed: int = 0):
        self.size = size
        self.items: list[torch.Tensor] = []
        self.rng = np.random.default_rng(seed)

    def query(self, fakes: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return fakes
        out = []
        for f in fakes.detach():
            f = f[None]
            if len(self.items) < self.size:
                self.items.append(f)
                out.append(f)
            elif self.rng.random() < 0.5:
                i = int(self.rng.integers(self.size))
                out.append(self.items[i])
                self.items[i] = f
            else:
                out.append(f)
        return torch.cat(out, 0)


def _lsgan(pred: torch.Tensor, target: float) -> torch.Tensor:
    return F.mse_loss(pred, torch.full_like(pred, target))


def _pix_weight(disc, rec: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        p = realness_map(disc, rec)
        return F.interpolate(p, size=rec.shape[-2:], mode="bilinear", align_corners=False).clamp(0.0, 1.0)


def _allreduce_grads(params) -> None:
    """Average gradients over DDP ranks (the recipe calls sub-networks directly, bypassing DDP hooks)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    ws = dist.get_world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= ws


class SynthRecipe:
    """Unpaired MR/CT slice pools + paired validation volumes -> a trained :class:`SynthCycleGAN`."""

    name = "synthnet"
    metric = "val_score"

    def __init__(
        self,
        mr_vols: list[SynthVolume],
        ct_vols: list[SynthVolume],
        val_vols: list[SynthVolume],
        crop: int = 96,
        lr: float = 2e-4,
        weights: dict | None = None,
        net: dict | None = None,
        pool_size: int = 50,
        n_queries: int = 256,
        val_slices: int | None = None,
        warm_steps: int = 0,
        warm_weight: float = 10.0,
        warm_only_steps: int = 0,
        warm_lr: float = 1e-3,
        pseudo_sct: str = "tissue_mixture",
        bt: float = 0.0,
        pseudo: float = 1.0,
        bt_ssim: float = 0.0,
        bt_hybrid: float = 0.0,
        hybrid_brain: str = "tissue_mixture",
        ema_decay: float = 0.0,
    ):
        if not 0.0 <= float(ema_decay) < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.ema_decay = float(ema_decay)
        if pseudo_sct not in PSEUDO_SCT:
            raise ValueError(f"pseudo_sct must be one of {PSEUDO_SCT}, got {pseudo_sct!r}")
        self.pseudo_sct = pseudo_sct
        mr_vols = [v for v in mr_vols if v.mr is not None]
        ct_vols = [v for v in ct_vols if v.ct is not None]
        self.warm_steps, self.warm_weight = int(warm_steps), float(warm_weight)
        self.warm_only_steps, self.warm_lr = int(warm_only_steps), float(warm_lr)
        self.bt, self.pseudo, self.bt_ssim, self.bt_hybrid = float(bt), float(pseudo), float(bt_ssim), float(bt_hybrid)
        if min(self.bt_ssim, self.bt, self.pseudo, self.bt_hybrid) < 0:
            raise ValueError(f"loss weights must be >= 0, got bt={bt}, pseudo={pseudo}, bt_ssim={bt_ssim}, bt_hybrid={bt_hybrid}")
        for name, w in (("bt_ssim", self.bt_ssim), ("bt_hybrid", self.bt_hybrid)):
            if w > 0 and self.bt == 0:
                raise ValueError(f"{name} is a term of the back-translation: it needs bt > 0")
        if self.bt_hybrid > 0 and pseudo_sct != "tissue_mixture":
            raise ValueError("bt_hybrid takes its soft tissue from the tissue_mixture sCT: it needs pseudo_sct='tissue_mixture'")
        if hybrid_brain not in HYBRID_BRAIN:
            raise ValueError(f"hybrid_brain must be one of {HYBRID_BRAIN}, got {hybrid_brain!r}")
        self.hybrid_brain = hybrid_brain
        drawn = self.bt_hybrid > 0 and hybrid_brain == "drawn_mixture"
        self._ssim_loss = SSIMLoss(spatial_dims=2, data_range=2.0, win_size=7) if self.bt_ssim > 0 else None
        self.mr_noise_sd, self.ct_noise_sd_hu = _mr_noise_sd(mr_vols), _ct_noise_sd_hu(ct_vols)
        if self.warm_steps > 0 or self.warm_only_steps > 0:
            # channel 0: the image; channel 1: the classical method's translation of it (pseudo-target);
            # MR channel 2 (drawn-mixture hybrid): the tissue-mixture method's inside-the-skull mask, 1/0
            self.mr_pool = np.concatenate([np.stack([head_slices(v.mr, v.head, "mr"), head_slices(_classical_sct(v, pseudo_sct), v.head, "ct")] + ([_inside_skull_slices(v)] if drawn else []), 1) for v in mr_vols])
            self.ct_pool = np.concatenate([np.stack([head_slices(v.ct, v.head, "ct"), head_slices(_bulk_smr(v), v.head, "mr")], 1) for v in ct_vols])
        else:
            self.mr_pool = np.concatenate([head_slices(v.mr, v.head, "mr") for v in mr_vols])
            self.ct_pool = np.concatenate([head_slices(v.ct, v.head, "ct") for v in ct_vols])
        self.val = [_central_block(v, val_slices) for v in val_vols if v.mr is not None and v.ct is not None]
        if not self.val:
            raise ValueError("validation needs at least one study with its co-registered truth (T2w MR + CT on one grid)")
        self.crop = int(crop)
        self.lr = float(lr)
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        self.net = {**DEFAULT_NET, **(net or {})}
        self.pool_size = pool_size
        self.n_queries = n_queries
        self._state = None  # optimisers and pools, created on the first step

    def build(self) -> SynthCycleGAN:
        net = SynthCycleGAN(**self.net)
        net.tile = self.crop  # validation translates with the training crop as sliding window
        return net

    def config(self) -> dict:
        return {
            "task": "synth",
            "net": self.net,
            "loss_weights": self.weights,
            "hu_range": list(HU_RANGE),
            "mr_range": list(MR_RANGE),
            "crop": self.crop,
            "tile": self.crop,
            "n_mr_slices": int(len(self.mr_pool)),
            "n_ct_slices": int(len(self.ct_pool)),
            "lr_adam": self.lr,
            "betas": [0.5, 0.999],
            "image_pool": self.pool_size,
            "warm_steps": self.warm_steps,
            "warm_weight": self.warm_weight,
            "pretrain_steps": self.warm_only_steps,
            "pretrain_lr": self.warm_lr,
            "pseudo_sct": self.pseudo_sct,
            "backtranslation_weight": self.bt,
            "pseudo_weight": self.pseudo,
            "backtranslation_ssim_weight": self.bt_ssim,
            "backtranslation_hybrid_weight": self.bt_hybrid,
            "hybrid_brain": self.hybrid_brain,
            "hybrid_soft_tissue_hu": {"tissue_mixture": list(HYBRID_TM_HU), "generator": list(HYBRID_G_HU)},
            "bt_mr_noise_sd": self.mr_noise_sd,
            "bt_ct_noise_sd_hu": self.ct_noise_sd_hu,
            "ema_decay": self.ema_decay,
        }

    def batches(self, rng: np.random.Generator, steps: int, batch_size: int):
        for _ in range(steps):
            mr, ct = random_crops(self.mr_pool, batch_size, self.crop, rng), random_crops(self.ct_pool, batch_size, self.crop, rng)
            b = {"mr": mr[:, :1], "ct": ct[:, :1]}
            if self.warm_steps > 0 or self.warm_only_steps > 0:
                b["mr_pseudo_ct"], b["ct_pseudo_mr"] = mr[:, 1:2], ct[:, 1:2]
                if mr.shape[1] > 2:
                    b["mr_inside_skull"] = mr[:, 2:3] > 0.5
            yield b

    def _setup(self, net: SynthCycleGAN):
        if self._state is None or self._state["net"] is not net:
            self._state = {
                "net": net,
                "opt_g": torch.optim.Adam(net.generators(), lr=self.lr, betas=(0.5, 0.999)),
                "opt_d": torch.optim.Adam(net.discriminators(), lr=self.lr, betas=(0.5, 0.999)),
                "pool_ct": ImagePool(self.pool_size, 1),
                "pool_mr": ImagePool(self.pool_size, 2),
                "steps": 0,
                "ema": AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(self.ema_decay), use_buffers=True) if self.ema_decay > 0 else None,
            }
        return self._state

    def eval_model(self, net: SynthCycleGAN) -> SynthCycleGAN:
        """The network to validate and save: the weights' moving average when ``ema_decay > 0``."""
        st = self._state
        if st is None or st["net"] is not net or st["ema"] is None:
            return net
        return st["ema"].module

    def _after_step(self, st) -> None:
        st["steps"] += 1
        if st["ema"] is not None:
            st["ema"].update_parameters(st["net"])

    def generator_losses(self, net: SynthCycleGAN, x: torch.Tensor, y: torch.Tensor) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """Weighted generator loss terms, the synthetic CT and the synthetic MR (network units)."""
        w = self.weights
        fake_ct, fake_mr = net.g_mr2ct(x), net.g_ct2mr(y)
        rec_mr, rec_ct = net.g_ct2mr(fake_ct), net.g_mr2ct(fake_mr)
        terms = {
            "adv": _lsgan(realness_map(net.d_ct, fake_ct), 1.0) + _lsgan(realness_map(net.d_mr, fake_mr), 1.0),
            "cyc": F.l1_loss(rec_mr, x) + F.l1_loss(rec_ct, y),
            "pix": (_pix_weight(net.d_mr, rec_mr) * (rec_mr - x).abs()).mean() + (_pix_weight(net.d_ct, rec_ct) * (rec_ct - y).abs()).mean(),
            "str": spatially_correlative_loss(x, fake_ct, self.n_queries) + spatially_correlative_loss(y, fake_mr, self.n_queries),
        }
        if w["idt"] > 0:
            terms["idt"] = F.l1_loss(net.g_mr2ct(y), y) + F.l1_loss(net.g_ct2mr(x), x)
        return {k: w[k] * v for k, v in terms.items()}, fake_ct, fake_mr

    def step(self, model, batch: dict, device) -> float:
        net = getattr(model, "module", model)  # DDP: gradients are averaged by hand below
        st = self._setup(net)
        x = torch.as_tensor(batch["mr"]).to(device)
        y = torch.as_tensor(batch["ct"]).to(device)
        if self.warm_only_steps and st["steps"] < self.warm_only_steps:
            return self._pretrain_step(net, st, x, y, batch, device)
        for p in net.discriminators():
            p.requires_grad_(False)
        terms, fake_ct, fake_mr = self.generator_losses(net, x, y)
        ramp = self.warm_weight * max(0.0, 1.0 - (st["steps"] - self.warm_only_steps) / self.warm_steps) if self.warm_steps > 0 else 0.0
        if ramp > 0:
            # warm start: L1 to the classical translation of the same image (no truth involved)
            terms["warm"] = ramp * (F.l1_loss(fake_ct, torch.as_tensor(batch["mr_pseudo_ct"]).to(device)) + F.l1_loss(fake_mr, torch.as_tensor(batch["ct_pseudo_mr"]).to(device)))
        loss_g = sum(terms.values())
        st["opt_g"].zero_grad()
        loss_g.backward()
        _allreduce_grads(net.generators())
        st["opt_g"].step()
        for p in net.discriminators():
            p.requires_grad_(True)
        fc, fm = st["pool_ct"].query(fake_ct), st["pool_mr"].query(fake_mr)
        loss_d = 0.5 * (_lsgan(realness_map(net.d_ct, y), 1.0) + _lsgan(realness_map(net.d_ct, fc), 0.0))
        loss_d = loss_d + 0.5 * (_lsgan(realness_map(net.d_mr, x), 1.0) + _lsgan(realness_map(net.d_mr, fm), 0.0))
        st["opt_d"].zero_grad()
        loss_d.backward()
        _allreduce_grads(net.discriminators())
        st["opt_d"].step()
        self._after_step(st)
        return float(loss_g.detach())

    def _pretrain_step(self, net, st, x, y, batch, device) -> float:
        """Pretraining step: ``pseudo (|G(x) - classical(x)| + |F(y) - classical(y)|)`` plus, when
        ``bt > 0``, the back-translation L1 (module docstring); no discriminators, Adam at ``warm_lr``."""
        if "opt_warm" not in st:
            st["opt_warm"] = torch.optim.Adam(net.generators(), lr=self.warm_lr)
        mr_pseudo_ct = torch.as_tensor(batch["mr_pseudo_ct"]).to(device)
        loss = self.pseudo * (F.l1_loss(net.g_mr2ct(x), mr_pseudo_ct) + F.l1_loss(net.g_ct2mr(y), torch.as_tensor(batch["ct_pseudo_mr"]).to(device)))
        if self.bt > 0:
            with torch.no_grad():
                mr_of_y = add_mr_noise(net.g_ct2mr(y), self.mr_noise_sd)
                g_of_x = net.g_mr2ct(x)
                ct_of_x = add_ct_noise(g_of_x, self.ct_noise_sd_hu)
            mr_of_ct = net.g_ct2mr(ct_of_x)
            loss = loss + self.bt * (F.l1_loss(net.g_mr2ct(mr_of_y), y) + F.l1_loss(mr_of_ct, x))
            if self._ssim_loss is not None:
                loss = loss + self.bt_ssim * self._ssim_loss(mr_of_ct, x)
            if self.bt_hybrid > 0:
                with torch.no_grad():
                    brain = None
                    if "mr_inside_skull" in batch:
                        brain = (torch.as_tensor(batch["mr_inside_skull"]).to(device), drawn_brain_hu(x), x)
                    hybrid = add_ct_noise(hybrid_sct(mr_pseudo_ct, g_of_x, brain), self.ct_noise_sd_hu)
                mr_of_h = net.g_ct2mr(hybrid)
                loss = loss + self.bt_hybrid * F.l1_loss(mr_of_h, x)
                if self._ssim_loss is not None:
                    loss = loss + self.bt_hybrid * self.bt_ssim * self._ssim_loss(mr_of_h, x)
        st["opt_warm"].zero_grad()
        loss.backward()
        _allreduce_grads(net.generators())
        st["opt_warm"].step()
        self._after_step(st)
        return float(loss.detach())

    def validate(self, net: SynthCycleGAN, device) -> dict:
        mae, dice, ssim_ct, ssim_mr, psnr_mr = [], [], [], [], []
        for v in self.val:
            sct = synthetic_ct(net, v.mr, device=device, shift_average=1)
            r = sm.evaluate_sct(sct, v.ct, v.head)
            mae.append(r["mae"]), dice.append(r["bone_dice"]), ssim_ct.append(r["ssim"])
            smr = synthetic_mr(net, v.ct, device=device, shift_average=1)
            r = sm.evaluate_smr(smr, v.mr, v.head)
            ssim_mr.append(r["ssim"]), psnr_mr.append(r["psnr"])
        out = {
            "val_sct_mae_hu": float(np.mean(mae)),
            "val_sct_bone_dice": float(np.mean(dice)),
            "val_sct_ssim": float(np.mean(ssim_ct)),
            "val_smr_ssim": float(np.mean(ssim_mr)),
            "val_smr_psnr_db": float(np.mean(psnr_mr)),
        }
        out["val_score"] = out["val_sct_mae_hu"] / 60.0 + (1.0 - out["val_smr_ssim"]) / 0.10
        return out


def train_synth(
    out_path,
    recipe: SynthRecipe,
    *,
    epochs: int,
    steps_per_epoch: int,
    batch_size: int,
    seed: int = 0,
    init=None,
    device=None,
    max_minutes=None,
    world_size: int = 1,
    progress: bool = True,
    on_epoch=None,
) -> dict:
    """Run :func:`qmri.training.loop.train` on ``recipe`` (its own learning rate); returns its result dict."""
    from ...training.loop import train

    return train(recipe, out_path, epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size, lr=recipe.lr, seed=seed, init=init, device=device, progress=progress, on_epoch=on_epoch, world_size=world_size, max_minutes=max_minutes)
