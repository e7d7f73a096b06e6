"""scCycleGAN networks: ResNet generators (MR -> CT, CT -> MR) and PatchGAN discriminators (2D).

Generator (seed 004, Fig. 4; CycleGAN's ResNet generator, REFERENCE.md section 4): reflect-pad 3 +
7x7 conv + instance norm + ReLU, ``n_down`` stride-2 3x3 convs doubling the width, ``n_blocks``
residual blocks (two 3x3 convs with reflect padding and instance norm, identity skip),
``n_down`` transposed 3x3 convs back to full size, reflect-pad 3 + 7x7 conv + tanh. The seed uses
width 64 and 9 blocks on 512x512 images; here width 16 and 6 blocks (2 mm phantom slices of
~100x120 voxels, trained on one CPU core), which still covers ~100 voxels of context, enough to
tell skull (dark on T2w, inside the head) from air (dark, outside).

The generator is written out here because MONAI has no CycleGAN ResNet generator (its
``ResidualUnit`` has no reflect padding and a different block layout). Discriminators are MONAI's
:class:`monai.networks.nets.PatchDiscriminator` (4x4 convs, LeakyReLU 0.2, ``num_layers_d``
stride-2 layers, instance norm) whose last output is a per-patch realness map.

Inputs and outputs are in network units [-1, 1] (see :mod:`qmri.models.synthnet.predict`).
"""

from __future__ import annotations

import torch
from monai.networks.nets import PatchDiscriminator
from torch import nn

#: CT window (HU) mapped to the network's [-1, 1].
HU_RANGE = (-1024.0, 3000.0)
#: T2w MR window (a.u. of qmri.physics.ct_mr.t2w_mr) mapped to the network's [-1, 1].
MR_RANGE = (0.0, 800.0)


class ResidualBlock(nn.Module):
    """x + conv3x3-IN-ReLU-conv3x3-IN(x), reflect padding (CycleGAN's ResnetBlock)."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(ch, ch, 3),
            nn.InstanceNorm2d(ch),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(ch, ch, 3),
            nn.InstanceNorm2d(ch),
        )

    def forward(self, x):
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """7x7 conv, ``n_down`` downsamplings, ``n_blocks`` residual blocks, upsamplings, 7x7 conv + tanh.

    Input and output (B, 1, H, W) in [-1, 1]; H and W must be multiples of ``2**n_down``.
    ``windows``: fixed intensity windows ``(lo, hi)`` in network units; each adds an input channel
    ``clip(2 (x - lo) / (hi - lo) - 1, -1, 1)`` computed inside the network (differentiable, no
    parameters). Used for CT input: brain tissues differ by 5-25 HU, ~0.5 % of the [-1024, 3000] HU
    range, so a soft-tissue window gives the first convolution that contrast at full scale.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 16, n_blocks: int = 6, n_down: int = 2, windows: tuple[tuple[float, float], ...] = ()):
        super().__init__()
        self.windows = tuple((float(a), float(b)) for a, b in windows)
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels * (1 + len(self.windows)), width, 7), nn.InstanceNorm2d(width), nn.ReLU(inplace=True)]
        ch = width
        for _ in range(n_down):
            layers += [nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * ch), nn.ReLU(inplace=True)]
            ch *= 2
        layers += [ResidualBlock(ch) for _ in range(n_blocks)]
        for _ in range(n_down):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1), nn.InstanceNorm2d(ch // 2), nn.ReLU(inplace=True)]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.multiple = 2**n_down

    def forward(self, x):
        h, w = x.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"slice size {h}x{w} must be a multiple of {self.multiple} (pad with -1 first)")
        if self.windows:
            x = torch.cat([x] + [(2.0 * (x - lo) / (hi - lo) - 1.0).clamp(-1.0, 1.0) for lo, hi in self.windows], 1)
        return self.model(x)


def hu_window_to_unit(window_hu: tuple[float, float]) -> tuple[float, float]:
    """A (lo, hi) HU window in the network units of the CT (:data:`HU_RANGE` -> [-1, 1])."""
    lo, hi = HU_RANGE
    return tuple(2.0 * (float(h) - lo) / (hi - lo) - 1.0 for h in window_hu)


def patch_discriminator(width: int = 32, num_layers: int = 3) -> PatchDiscriminator:
    """MONAI PatchGAN (2D, one channel in, one realness logit per patch out, instance norm)."""
    return PatchDiscriminator(spatial_dims=2, channels=width, in_channels=1, out_channels=1, num_layers_d=num_layers, norm="INSTANCE", last_conv_kernel_size=4)


def realness_map(disc: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The discriminator's last output (B, 1, h, w): ~1 where it judges the patch real, ~0 fake (LSGAN)."""
    return disc(x)[-1]


class SynthCycleGAN(nn.Module):
    """Both generators and both discriminators of the scCycleGAN in one module (one checkpoint).

    ``g_mr2ct``: T2w MR -> CT; ``g_ct2mr``: CT -> T2w MR; ``d_ct`` / ``d_mr`` judge CT / MR slices.
    Inference needs only the generators; the discriminators are kept so training can resume.
    """

    def __init__(self, width: int = 16, n_blocks: int = 6, n_down: int = 2, d_width: int = 32, d_layers: int = 3, ct_windows_hu: tuple[tuple[float, float], ...] = ()):
        super().__init__()
        self.g_mr2ct = ResnetGenerator(1, 1, width, n_blocks, n_down)
        self.g_ct2mr = ResnetGenerator(1, 1, width, n_blocks, n_down, windows=tuple(hu_window_to_unit(w) for w in ct_windows_hu))
        self.tile: int | None = None  # sliding-window size for inference (the training crop), set by the loader
        self.d_ct = patch_discriminator(d_width, d_layers)
        self.d_mr = patch_discriminator(d_width, d_layers)

    def forward(self, mr: torch.Tensor) -> torch.Tensor:
        """MR -> synthetic CT (network units)."""
        return self.g_mr2ct(mr)

    def generators(self) -> list[nn.Parameter]:
        return list(self.g_mr2ct.parameters()) + list(self.g_ct2mr.parameters())

    def discriminators(self) -> list[nn.Parameter]:
        return list(self.d_ct.parameters()) + list(self.d_mr.parameters())
