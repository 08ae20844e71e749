"""The support input convolution `conv_in_ref` and the routing that lets the stock UNet use it.

DiffewS feeds the support pass ``cat([image latent, mask latent])`` (8 channels) through
`conv_in_ref` and the query pass the image latent (4 channels) through the pretrained `conv_in`.
Rather than copying diffusers' UNet forward, `unet.conv_in` is replaced by a `RoutedInputConv`:
the same weights, under the same state-dict keys, that hands 8-channel inputs to `unet.conv_in_ref`.
The UNet's state dict then holds exactly the standard keys plus ``conv_in_ref.weight`` and
``conv_in_ref.bias`` (the layout of the authors' checkpoints).
"""

from __future__ import annotations

import torch
from torch import nn

SUPPORT_CONV = "conv_in_ref"
CONFIG_KEY = "in_channels_ref"


class RoutedInputConv(nn.Conv2d):
    """`conv_in` that routes support inputs to the UNet's `conv_in_ref`.

    Inputs with `in_channels` channels go through this convolution (query pass); inputs with
    ``support_conv.in_channels`` channels go through `support_conv` (support pass).
    """

    def __init__(self, conv_in: nn.Conv2d, support_conv: nn.Conv2d) -> None:
        super().__init__(conv_in.in_channels, **_geometry(conv_in))
        if support_conv.in_channels == conv_in.in_channels:
            raise ValueError("the support and query input convolutions need different channel counts")
        self.load_state_dict(conv_in.state_dict())
        # Held in a tuple so it is not registered twice: the UNet owns it as `conv_in_ref`.
        self._support_conv = (support_conv,)

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        channels = sample.shape[1]
        if channels == self.in_channels:
            return super().forward(sample)
        support_conv = self._support_conv[0]
        if channels == support_conv.in_channels:
            return support_conv(sample)
        raise ValueError(
            f"UNet input has {channels} channels; expected {self.in_channels} (query latent) "
            f"or {support_conv.in_channels} (support image + mask latents)"
        )


def init_support_conv(conv_in: nn.Conv2d) -> nn.Conv2d:
    """`conv_in_ref` initialised from the pretrained `conv_in` (METHOD.md).

    weight = `conv_in.weight` repeated twice along the input channels, halved; bias copied. So
    ``conv_in_ref(cat([x, x])) == conv_in(x)``: with a mask latent equal to the image latent the
    pretrained response is reproduced.
    """
    support_conv = nn.Conv2d(2 * conv_in.in_channels, **_geometry(conv_in))
    with torch.no_grad():
        support_conv.weight.copy_(torch.cat([conv_in.weight, conv_in.weight], dim=1) / 2)
        support_conv.bias.copy_(conv_in.bias)
    return support_conv


def _geometry(conv: nn.Conv2d) -> dict:
    """Everything but the input channel count needed to build a convolution like `conv`."""
    return dict(
        out_channels=conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )


def attach_support_conv(unet: nn.Module, support_conv: nn.Conv2d) -> None:
    """Register `support_conv` as ``unet.conv_in_ref`` and route 8-channel inputs to it."""
    if isinstance(unet.conv_in, RoutedInputConv):
        raise ValueError("this UNet already has a support input convolution")
    unet.conv_in_ref = support_conv
    unet.conv_in = RoutedInputConv(unet.conv_in, support_conv)
    unet.register_to_config(**{CONFIG_KEY: support_conv.in_channels})
