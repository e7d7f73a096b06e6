"""QSMnet (Yoon et al., NeuroImage 2018; seed 003): a 3D U-Net mapping local field to susceptibility.

QSMnet is a U-Net with two convolutions (+BN, leaky ReLU 0.1) per level, four max-pool downsamplings
and four deconvolution upsamplings: 19 convolution layers. MONAI's ``BasicUNet`` has exactly this
structure (TwoConv blocks, max-pool downs, deconv ups with skip concatenation, a final 1x1x1 conv),
so the network is MONAI's with the widths scaled down (QSMnet: 32..512 channels, 5x5x5 kernels;
here 3x3x3 and ``features`` below) so that it trains on a 2-core CPU within a session.

Units: input local field in ppm times :data:`FIELD_SCALE`; output susceptibility in ppm times
:data:`CHI_SCALE` (fixed constants stored with the weights, so the network sees O(1) values).
"""

from __future__ import annotations

from monai.networks.nets import BasicUNet
from torch import nn

DEFAULT_FEATURES = (16, 16, 32, 64, 128, 16)
FIELD_SCALE = 20.0  # network input = local field (ppm) * FIELD_SCALE
CHI_SCALE = 5.0  # network output = chi (ppm) * CHI_SCALE
DIVISOR = 16  # input sizes must be multiples of 2**4 (four poolings)


def qsmnet(features=DEFAULT_FEATURES) -> nn.Module:
    """The QSMnet U-Net (1 channel in: scaled local field; 1 channel out: scaled chi)."""
    return BasicUNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=1,
        features=tuple(features),
        act=("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
        norm=("batch", {"affine": True}),
        upsample="deconv",
    )
