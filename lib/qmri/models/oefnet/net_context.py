"""The "best" OEF candidates: :class:`ContextNet`, a voxelwise MLP on fixed multi-scale brain-masked
averages of the input (and the pooled profile likelihood of OEF), and :class:`SetContextNet`, the same
with a whole-brain code (a ridge regression from fixed statistics over every brain voxel) that
carries the subject-level oxygenation one voxel cannot identify.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...physics.qq import PARAM_LOWER, PARAM_UPPER, QQNET_MEAN, QQNET_STD
from .convention import CHI_INPUT_SCALE, N_ECHOES, N_INPUTS, N_PARAMS
from .pyramid import CONTEXT_COARSE_FROM, axis_operator, gauss1d, mean_pool2, pyramid_plan, separable

# ------------------------------------------------------------------------------------------------
# Best candidate 2: multi-scale context network
# ------------------------------------------------------------------------------------------------
CONTEXT_SIGMAS = (1.0, 2.0, 4.0, 8.0, 16.0)  # Gaussian sigmas in voxels (2-32 mm at the training resolution of 2 mm)
CONTEXT_HIDDEN = (128, 128, 64)
HEAD_CHUNK = 4096  # voxels per head evaluation at inference (activations stay in cache: measured 0.21 s for 246k voxels on 2 threads, 0.40 s with 32768)
N_PROFILE = 12 * 3  # profile features: len(qq_profile.OEF_GRID) x len(qq_profile.POOL_SIGMAS)
PROFILE_TE_S = tuple(0.0045 + 0.005 * i for i in range(N_ECHOES))  # the networks' echo times (QQ-NET), s
LOG_SD_RANGE = (-6.0, 3.0)  # clamp of the uncertainty head's log sd of Y (normalised units: sd 0.00025..2 of Y)
FEATURE_MARGIN = 2  # voxels around the brain's bounding box that the features are computed on
FEATURES_VERSION = 4  # of the default context features (1: direct blurs; 2: sigma >= 8 voxels coarse; 3: sigma >= 4 coarse; 4: + pooled profile likelihood); names the cached feature banks
DEFAULT_FEATURES = {"profile": True}  # the feature options new networks (and the training banks) use


class ContextNet(nn.Module):
    """Voxelwise regression on the voxel's input plus brain-masked Gaussian averages of it at several scales.

    QQ data are too noisy to identify Y and v voxel by voxel (Cramer-Rao bound of OEF ~65-95
    %-points at SNR 100), while the physiology varies smoothly in space; QQ-CAT (Cho 2020) pools
    voxels of similar signal evolution for that reason. Here the pooling is built into the network:
    fixed (not learned) normalised convolutions ``G_s * (x m) / G_s * m`` inside the brain mask ``m``
    at sigmas :data:`CONTEXT_SIGMAS` give each voxel its neighbourhood's average echo decay and QSM
    (plus the local brain fraction ``G_s * m``), and an MLP (1x1x1 convolutions, LeakyReLU 0.01) maps
    the 9 x 6 + 5 features to the five parameters, squashed into the physical bounds as
    :class:`BoundedUNet`. Gaussian smoothing as fixed per-axis matrices (:func:`axis_operator`) is
    written here because MONAI's ``GaussianFilter`` has no masked (normalised) or pyramid variant. The large scales (sigma
    >= ``coarse_from`` voxels: 8, 16 and 32 mm at 2 mm) are blurred on the grid of 2x2x2 means
    (:func:`pyramid_plan`), an eighth of the voxels, with kernels half as long as the direct 25-,
    49- and 97-tap ones; measured against the direct blurs on a smooth phantom they differ by 1e-3
    on average (features of order 1), and the networks are trained on these features as computed.
    """

    def __init__(self, sigmas=CONTEXT_SIGMAS, hidden=CONTEXT_HIDDEN, extra_inputs: int = 0, coarse_from: float = CONTEXT_COARSE_FROM, uncertainty: bool = False, profile: bool = False):
        super().__init__()
        self.uncertainty = bool(uncertainty)
        self.profile = bool(profile)
        self.sigmas = tuple(float(x) for x in sigmas)
        self.plan = pyramid_plan(self.sigmas, coarse_from)
        for i, (_, sg) in enumerate(self.plan):
            self.register_buffer(f"g{i}", gauss1d(sg))
        self.n_base = N_INPUTS * (1 + len(self.sigmas)) + len(self.sigmas)
        self.n_features = self.n_base + (N_PROFILE if self.profile else 0)
        layers, d = [], (self.n_features + extra_inputs,) + tuple(hidden)
        for i in range(len(hidden)):
            layers += [nn.Linear(d[i], d[i + 1]), nn.LeakyReLU(0.01)]
        layers.append(nn.Linear(d[-1], N_PARAMS + int(self.uncertainty)))
        self.head = nn.Sequential(*layers)
        # uncertainty: the head's 6th output is log sd of Y (normalised units); its calibration factor
        # (fitted on validation phantoms after training, 1 until then) multiplies the sd
        if self.uncertainty:
            self.register_buffer("sd_scale", torch.ones(()))
        frac = (QQNET_MEAN - PARAM_LOWER) / (PARAM_UPPER - PARAM_LOWER)
        self.register_buffer("offset", torch.tensor([math.log(f / (1 - f)) for f in frac], dtype=torch.float32))
        self.register_buffer("lower", torch.tensor(PARAM_LOWER, dtype=torch.float32))
        self.register_buffer("span", torch.tensor(PARAM_UPPER - PARAM_LOWER, dtype=torch.float32))
        self.register_buffer("mean", torch.tensor(QQNET_MEAN, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(QQNET_STD, dtype=torch.float32))

    def operators(self, shape) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per scale of :attr:`plan`, its :func:`axis_operator` along each axis of a ``shape`` (D, H, W) array."""
        return [tuple(axis_operator(int(n), kind, getattr(self, f"g{i}")) for n in shape) for i, (kind, _) in enumerate(self.plan)]

    def blurred(self, v: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, D, H, W) -> its Gaussian blurs at every sigma of :attr:`sigmas` (zero outside the array).

        Fine scales blur the voxel grid directly; coarse ones blur the 2x2x2 means directly (zero
        padding, no cascade of cropped intermediate blurs, which would lose what spills out of the
        array and come back) and interpolate back, so with the array's zero margin around the brain
        nothing is lost."""
        per = [self._blurs(v[b]) for b in range(v.shape[0])]
        return [torch.stack([p[i] for p in per]) for i in range(len(self.plan))]

    def _blurs(self, v: torch.Tensor) -> list[torch.Tensor]:
        """(C, D, H, W) -> its blur at every scale (C, D, H, W), the coarse ones from one grid of means."""
        pooled = mean_pool2(v) if any(k == "coarse" for k, _ in self.plan) else None
        return [separable(v if kind == "fine" else pooled, op) for (kind, _), op in zip(self.plan, self.operators(v.shape[1:]))]

    @staticmethod
    def feature_box(m: torch.Tensor) -> tuple[slice, ...]:
        """The box the features of brain ``m`` (D, H, W) are computed on: its bounding box grown by
        :data:`FEATURE_MARGIN` voxels. Zero padding makes the direct blurs independent of the box,
        but the pyramid's subsampling phase is not, so every caller (training banks, inference,
        :meth:`features`) uses this same box of the brain itself, whatever array it comes in."""
        idx = torch.nonzero(m)
        if len(idx) == 0:
            return tuple(slice(0, n) for n in m.shape)
        lo = (idx.min(0).values - FEATURE_MARGIN).clamp(min=0).tolist()
        hi = (idx.max(0).values + 1 + FEATURE_MARGIN).tolist()
        return tuple(slice(int(a), min(int(b), n)) for a, b, n in zip(lo, hi, m.shape))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 9, D, H, W) normalised input -> (B, 9 x (1 + S) + S, D, H, W) features for S sigmas (0 outside the brain)."""
        out = x.new_zeros((x.shape[0], self.n_features) + tuple(x.shape[2:]))
        for i in range(x.shape[0]):
            brain = x[i, 0] > 0  # normalised echo 1 is 1 inside the brain, 0 outside
            out[i][:, brain] = self.brain_features(x[i : i + 1], brain).T
        return out

    def _masked_blurs(self, xb: torch.Tensor, m: torch.Tensor) -> list[torch.Tensor]:
        """Blurs of ``[x_1 m, .., x_8 m, m]`` (9, ...) at every sigma, for ``xb`` (9, ...) and ``m``
        (1, ...). Channel 0 is echo 1 divided by itself, 1 inside the brain, so ``x_0 m = m`` and its
        blur is the mask's (the last channel): 9 channels are blurred, not 10."""
        return self._blurs(torch.cat([xb[1:] * m, m], 0))

    def brain_features(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(1, 9, D, H, W) normalised input and a (D, H, W) boolean mask -> (N, n_features): the values
        of :meth:`features` at the N mask voxels, without assembling the feature volume (a third of
        the voxels of a brain box are brain)."""
        brain = x[0, 0] > 0
        box = self.feature_box(brain)
        xb = x[0][(slice(None),) + box]
        m = (xb[:1] > 0).to(x.dtype)
        idx = torch.nonzero(brain[box].reshape(-1)).squeeze(1)

        def take(v: torch.Tensor) -> torch.Tensor:  # (C, box) -> (C, N) at the brain voxels
            return v.reshape(v.shape[0], -1).index_select(1, idx)

        f = x.new_empty((len(idx), self.n_features))  # written column block by column block (memory traffic is the cost here)
        f[:, :N_INPUTS] = take(xb * m).T
        col = N_INPUTS
        for b in self._masked_blurs(xb, m):
            v = take(b).T  # (N, 9): the blurs of x_1 m .. x_8 m, then of m
            den = v[:, -1:]
            safe = den.clamp(min=1e-3)
            torch.div(den, safe, out=f[:, col : col + 1])  # echo 1: x_0 m = m
            torch.div(v[:, :-1], safe, out=f[:, col + 1 : col + N_INPUTS])
            f[:, col + N_INPUTS] = den[:, 0]
            col += N_INPUTS + 1
        if self.profile:  # pooled profile likelihood of OEF (fixed features; see qmri.classical.qq_profile)
            from ...classical.qq_profile import pooled_profile_features

            xn = xb.detach().cpu().numpy()
            bm = brain[box].cpu().numpy()
            pf = pooled_profile_features(np.moveaxis(xn[:N_ECHOES], 0, -1), xn[N_ECHOES] / CHI_INPUT_SCALE, bm, PROFILE_TE_S)
            f[:, col:] = torch.from_numpy(pf).to(f.dtype)
        if torch.equal(brain, mask):
            return f
        out = f.new_zeros((int(mask.sum()), self.n_features))  # mask voxels without signal have zero features
        out[brain[mask]] = f[mask[brain]]
        return out

    def head_bounded(self, f: torch.Tensor) -> torch.Tensor:
        """(N, n_features) -> (N, 5) normalised parameters inside the physical bounds."""
        return self._bounded(self._mlp(f))

    def _mlp(self, f: torch.Tensor, bias0: torch.Tensor | None = None, n_in: int | None = None) -> torch.Tensor:
        """:attr:`head` on ``f``; the first layer may take only the first ``n_in`` input columns and
        another bias. Without autograd the activations are in place (measured: 15 % faster)."""
        first = self.head[0]
        w0 = first.weight if n_in is None else first.weight[:, :n_in]
        h = F.linear(f, w0, first.bias if bias0 is None else bias0)
        inplace = not h.requires_grad
        for layer in self.head[1:]:
            if isinstance(layer, nn.LeakyReLU):
                h = F.leaky_relu_(h, layer.negative_slope) if inplace else layer(h)
            else:
                h = layer(h)
        return h

    def _bounded(self, h: torch.Tensor) -> torch.Tensor:
        """The head's last-layer output -> normalised parameters squashed into the physical bounds
        (N, 5), followed, for an uncertainty head, by the log sd of Y in normalised units (N, 6)."""
        p = self.lower + self.span * torch.sigmoid(h[..., :N_PARAMS] + self.offset)
        z = (p - self.mean) / self.std
        if not self.uncertainty:
            return z
        return torch.cat([z, h[..., N_PARAMS:].clamp(LOG_SD_RANGE[0], LOG_SD_RANGE[1])], -1)

    def predict_brain(self, f: torch.Tensor, chunk: int = HEAD_CHUNK) -> torch.Tensor:
        """(N, n_features) features of one volume's brain voxels -> (N, 5) normalised parameters."""
        return torch.cat([self.head_bounded(f[i : i + chunk]) for i in range(0, len(f), chunk)]) if len(f) else f.new_zeros((0, self.n_outputs))

    @property
    def n_outputs(self) -> int:
        """5 normalised parameters, + the log sd of Y for an uncertainty head."""
        return N_PARAMS + int(self.uncertainty)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        out = self.head_bounded(f.movedim(1, -1))
        return out.movedim(-1, 1)


# ------------------------------------------------------------------------------------------------
# Best candidate 3: context network + whole-brain code (set statistics + ridge)
# ------------------------------------------------------------------------------------------------
GLOBAL_CODE = N_PARAMS + 4  # brain means of the 5 parameters + the mean Y in each of the 4 QSM bands


SUMMARY_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
SUMMARY_VOXELS = 40000  # brain voxels the statistics are taken from (= the voxels banked per training volume)
QSM_BINS = (0.0, 0.5, 1.0)  # network QSM units (ppm x 10): < 0, 0-0.05, 0.05-0.1, > 0.1 ppm


def brain_summary(f: torch.Tensor, n_features: int) -> torch.Tensor:
    """Fixed whole-brain statistics of the voxel features ``f`` (..., N, n_features) -> (..., S).

    The QQ decay is exponential, so the statistics are of the log normalised echoes 2..8 (``lr``):
    their brain mean, their quantiles :data:`SUMMARY_QUANTILES`, the same quantiles of the QSM,
    the mean ``lr`` curve and the voxel fraction in each QSM band of :data:`QSM_BINS` (GM and WM
    differ in chi_nb, so the bands separate tissues without a segmentation), and the brain mean of
    every feature. Measured on the phantoms (leave-one-anatomy-out ridge regression, 192 subject
    draws): these predict a subject's brain-mean OEF to 1.9 %-points against a between-subject sd
    of 4.9, where the brain means of the features alone reach 3.4. They are taken from at most
    :data:`SUMMARY_VOXELS` voxels (every k-th of a larger brain): the training banks hold that many
    random voxels per volume, so inference sees statistics of the same precision (and the quantiles
    cost a sixth).
    """
    n = f.shape[-2]
    if n > SUMMARY_VOXELS:  # evenly strided through the brain, as many voxels as a training bank holds
        f = f[..., :: math.ceil(n / SUMMARY_VOXELS), :]
    lr = torch.log(f[..., 1:N_ECHOES].clamp(min=1e-3))
    q = f[..., N_ECHOES]
    # quantiles by numpy's selection (linear interpolation, as torch.quantile, which sorts and refuses
    # more than 2^24 elements): the statistics are fixed inputs, never differentiated
    qs = np.asarray(SUMMARY_QUANTILES)
    lq = torch.from_numpy(np.moveaxis(np.quantile(lr.detach().cpu().numpy(), qs, axis=-2), 0, -2).astype(np.float32)).to(f.device)
    qq = torch.from_numpy(np.moveaxis(np.quantile(q.detach().cpu().numpy(), qs, axis=-1), 0, -1).astype(np.float32)).to(f.device)
    parts = [lr.mean(-2), lq.flatten(-2).to(f.dtype), qq.to(f.dtype)]
    edges = (-math.inf,) + tuple(QSM_BINS) + (math.inf,)
    for lo, hi in zip(edges[:-1], edges[1:]):
        w = ((q >= lo) & (q < hi)).to(f.dtype)[..., None]
        n = w.sum(-2)
        parts += [(lr * w).sum(-2) / n.clamp(min=1.0), n / f.shape[-2]]
    parts.append(f[..., :n_features].mean(-2))
    return torch.cat(parts, -1)


def n_summary(n_features: int) -> int:
    k, e, nb = len(SUMMARY_QUANTILES), N_ECHOES - 1, len(QSM_BINS) + 1
    return e + k * e + k + nb * (e + 1) + n_features


def code_targets(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Subject-level targets of the whole-brain code from one volume's brain voxels.

    ``y`` (N, 5) normalised parameters, ``x`` (N, 9) normalised inputs -> (:data:`GLOBAL_CODE`,):
    the brain means of the five parameters, then the mean Y in each QSM band of :data:`QSM_BINS`
    (tissue-level oxygenation without a segmentation; the brain-mean Y where a band is empty).
    """
    q = x[:, N_ECHOES]
    edges = (-np.inf,) + tuple(QSM_BINS) + (np.inf,)
    bands = [y[(q >= lo) & (q < hi), 2] for lo, hi in zip(edges[:-1], edges[1:])]
    return np.concatenate([y.mean(0), [b.mean() if b.size else y[:, 2].mean() for b in bands]]).astype(np.float32)


class SetContextNet(ContextNet):
    """:class:`ContextNet` whose voxelwise head also sees a code of the whole brain.

    Venous oxygenation is largely a property of the subject (a global level plus tissue offsets,
    REFERENCE section 1: between-subject OEF sd 2-7 %-points, nearly uniform across GM and WM),
    and one voxel's 8 echoes identify it too weakly, but every brain voxel carries evidence about
    that level. A permutation-invariant summary pools it (the Deep Sets form, Zaheer et al. 2017:
    statistics over the set of brain voxels, then a map): :func:`brain_summary` gives fixed
    whole-brain statistics, and a ridge regression from them (fitted in closed form on the training
    subjects by :meth:`fit_code`, scikit-learn's ``RidgeCV``; stored as buffers; the head trains on
    out-of-fold codes) predicts the
    subject-level targets of :func:`code_targets` (brain-mean parameters and the mean Y of each
    QSM band). That :data:`GLOBAL_CODE`-dimensional code is appended to every voxel's features
    before the bounded head, which learns how far each voxel departs from its subject.

    Why closed form: trained by Adam inside the network (linear or a learned per-voxel encoder
    averaged over the brain), the map from brain statistics to the subject level did not converge
    from 192 training subjects (measured: 3.3-4.1 %-points of brain-mean OEF error on the training
    subjects themselves, against a between-subject sd of 4.8), while the ridge solution on the same
    statistics reaches 1.2 on them and 1.9 on held-out anatomies: the statistics are strongly
    correlated and the subject-level signal is a small part of their spread.
    """

    def __init__(self, sigmas=CONTEXT_SIGMAS, hidden=CONTEXT_HIDDEN, code=GLOBAL_CODE, coarse_from: float = CONTEXT_COARSE_FROM, uncertainty: bool = False, profile: bool = False):
        super().__init__(sigmas, hidden, extra_inputs=code, coarse_from=coarse_from, uncertainty=uncertainty, profile=profile)
        n = n_summary(self.n_features)
        self.register_buffer("summary_mean", torch.zeros(n))
        self.register_buffer("summary_std", torch.ones(n))
        self.register_buffer("code_weight", torch.zeros(code, n))
        self.register_buffer("code_bias", torch.zeros(code))
        self.register_buffer("code_alpha", torch.zeros(()))

    def fit_code(self, summaries: np.ndarray, targets: np.ndarray, groups=None) -> tuple[float, np.ndarray]:
        """Fit the code's ridge regression: ``summaries`` (n_subjects, S) of :func:`brain_summary`,
        ``targets`` (n_subjects, code) of :func:`code_targets`; the penalty is chosen by
        leave-one-out cross-validation. Returns it and the out-of-fold codes (n_subjects, code):
        each subject's code from a fit without its ``groups`` member (e.g. its anatomy; up to 8
        folds; in-sample with fewer than 2 groups). The head trains on those, so it learns how far a
        code for an unseen subject can be trusted (stacking), not the closer in-sample fit."""
        from sklearn.linear_model import Ridge, RidgeCV
        from sklearn.model_selection import GroupKFold, cross_val_predict

        s = np.asarray(summaries, np.float64)
        t = np.asarray(targets, np.float64)
        mean, std = s.mean(0), np.maximum(s.std(0), 1e-6)
        z = (s - mean) / std
        model = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(z, t)
        groups = np.arange(len(s)) if groups is None else np.asarray(groups)
        k = min(8, len(np.unique(groups)))
        oof = cross_val_predict(Ridge(alpha=model.alpha_), z, t, groups=groups, cv=GroupKFold(n_splits=k)) if k >= 2 else model.predict(z)
        with torch.no_grad():
            self.summary_mean.copy_(torch.from_numpy(mean))
            self.summary_std.copy_(torch.from_numpy(std))
            self.code_weight.copy_(torch.from_numpy(np.atleast_2d(model.coef_)))
            self.code_bias.copy_(torch.from_numpy(np.atleast_1d(model.intercept_)))
            self.code_alpha.fill_(float(model.alpha_))
        return float(model.alpha_), np.asarray(oof, np.float32).reshape(len(s), -1)

    def code_from_summary(self, s: torch.Tensor) -> torch.Tensor:
        """(..., S) raw :func:`brain_summary` -> (..., code) predicted subject-level targets."""
        return ((s - self.summary_mean) / self.summary_std) @ self.code_weight.T + self.code_bias

    def global_code(self, f: torch.Tensor) -> torch.Tensor:
        """(..., N, n_features) features of one brain's N voxels -> (..., code)."""
        return self.code_from_summary(brain_summary(f, self.n_features))

    def head_with_code(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """(..., N, n_features) voxel features and (..., code) -> (..., N, 5) normalised parameters."""
        if f.dim() == 2 and g.dim() == 1:  # one brain: the code's share of the first layer is one bias for all voxels
            first = self.head[0]
            return self._bounded(self._mlp(f, first.bias + first.weight[:, self.n_features :] @ g, self.n_features))
        return self.head_bounded(torch.cat([f, g.unsqueeze(-2).expand(*f.shape[:-1], g.shape[-1])], -1))

    def predict_brain(self, f: torch.Tensor, chunk: int = HEAD_CHUNK) -> torch.Tensor:
        g = self.global_code(f)
        return torch.cat([self.head_with_code(f[i : i + chunk], g) for i in range(0, len(f), chunk)]) if len(f) else f.new_zeros((0, self.n_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        m = x[:, 0] > 0
        out = torch.zeros((x.shape[0], self.n_outputs) + x.shape[2:], dtype=x.dtype, device=x.device)
        for b in range(x.shape[0]):
            fb = f[b].movedim(0, -1)
            out[b].movedim(0, -1)[m[b]] = self.predict_brain(fb[m[b]])
        return out
