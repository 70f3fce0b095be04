"""SimpleBaseline pose network: a ResNet backbone followed by a deconvolution head.

Xiao et al., "Simple Baselines for Human Pose Estimation and Tracking" (ECCV 2018). The
residual blocks and the weight initialisation defined here are shared with ``pose_hrnet``.
Attribute names follow torchvision's ResNet so that ImageNet weights and the original
model-zoo checkpoints load by name.
"""

from __future__ import annotations

import logging

from torch import Tensor, nn

from lib.utils.checkpoint import load_pretrained_weights

logger = logging.getLogger(__name__)

BN_MOMENTUM = 0.1
INIT_STD = 0.001


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution that keeps the resolution (for stride 1); no bias, a BN follows."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or projected) shortcut."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, plus shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


def make_residual_layer(block: type[BasicBlock | Bottleneck], in_channels: int, planes: int,
                        num_blocks: int, stride: int = 1) -> nn.Sequential:
    """``num_blocks`` blocks; the first one projects the shortcut when its shape changes."""
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
            nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
        )
    blocks = [block(in_channels, planes, stride, downsample)]
    blocks += [block(out_channels, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*blocks)


def init_normal_weights(model: nn.Module) -> None:
    """The original training initialisation: (de)convs N(0, 0.001) with zero bias, BN 1 / 0."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(module.weight, std=INIT_STD)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def final_conv_padding(kernel_size: int) -> int:
    """'Same' padding of the heatmap conv (the original supports kernels 1 and 3)."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(
            f'MODEL.EXTRA.FINAL_CONV_KERNEL must be a positive odd number, got {kernel_size}'
        )
    return (kernel_size - 1) // 2


# depth -> (block, number of blocks in layer1..layer4)
RESNET_SPECS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}

# deconv kernel size -> (padding, output_padding) giving an exact 2x upsampling at stride 2
DECONV_PADDINGS = {4: (1, 0), 3: (1, 1), 2: (0, 0)}


def make_deconv_head(in_channels: int, filters: list[int], kernels: list[int],
                     with_bias: bool) -> nn.Sequential:
    """Stride-2 transposed convs, each followed by BN and ReLU (flat, as in the original)."""
    layers: list[nn.Module] = []
    for out_channels, kernel in zip(filters, kernels, strict=True):
        if kernel not in DECONV_PADDINGS:
            raise ValueError(
                f'MODEL.EXTRA.NUM_DECONV_KERNELS entries must be one of '
                f'{sorted(DECONV_PADDINGS)}, got {kernel}'
            )
        padding, output_padding = DECONV_PADDINGS[kernel]
        layers += [
            nn.ConvTranspose2d(in_channels, out_channels, kernel, stride=2, padding=padding,
                               output_padding=output_padding, bias=with_bias),
            nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
        ]
        in_channels = out_channels
    return nn.Sequential(*layers)


class PoseResNet(nn.Module):
    """ResNet (stride 32) + deconv head (back to stride 4) + 1x1 conv to one heatmap per joint."""

    def __init__(self, cfg, **kwargs) -> None:
        super().__init__()
        extra = cfg.MODEL.EXTRA
        num_layers = extra.NUM_LAYERS
        if num_layers not in RESNET_SPECS:
            raise ValueError(
                f'MODEL.EXTRA.NUM_LAYERS must be one of {sorted(RESNET_SPECS)}, got {num_layers}'
            )
        num_deconvs = extra.NUM_DECONV_LAYERS
        for key in ('NUM_DECONV_FILTERS', 'NUM_DECONV_KERNELS'):
            if len(extra[key]) != num_deconvs:
                raise ValueError(
                    f'MODEL.EXTRA.{key} has {len(extra[key])} entries but '
                    f'MODEL.EXTRA.NUM_DECONV_LAYERS is {num_deconvs}'
                )
        block, blocks_per_layer = RESNET_SPECS[num_layers]
        self.pretrained_layers = list(extra.get('PRETRAINED_LAYERS', ['*']))

        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        width = block.expansion
        self.layer1 = make_residual_layer(block, 64, 64, blocks_per_layer[0])
        self.layer2 = make_residual_layer(block, 64 * width, 128, blocks_per_layer[1], stride=2)
        self.layer3 = make_residual_layer(block, 128 * width, 256, blocks_per_layer[2], stride=2)
        self.layer4 = make_residual_layer(block, 256 * width, 512, blocks_per_layer[3], stride=2)
        channels = 512 * width

        self.deconv_layers = make_deconv_head(
            channels, list(extra.NUM_DECONV_FILTERS), list(extra.NUM_DECONV_KERNELS),
            extra.DECONV_WITH_BIAS,
        )
        head_channels = extra.NUM_DECONV_FILTERS[-1] if num_deconvs else channels
        kernel = extra.FINAL_CONV_KERNEL
        self.final_layer = nn.Conv2d(head_channels, cfg.MODEL.NUM_JOINTS, kernel,
                                     padding=final_conv_padding(kernel))

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.final_layer(self.deconv_layers(x))

    def init_weights(self, pretrained: str = '') -> None:
        """Normal init everywhere, then ImageNet backbone weights from ``pretrained`` if given.

        The file is a torchvision-style ResNet state_dict; its classifier ('fc') has no
        counterpart here and is skipped (logged).
        """
        logger.info('=> init weights from normal distribution')
        init_normal_weights(self)
        if pretrained:
            load_pretrained_weights(self, pretrained, self.pretrained_layers)


def get_pose_net(cfg, is_train: bool, **kwargs) -> PoseResNet:
    """Build from ``cfg``; training runs start from ``init_weights(MODEL.PRETRAINED)``."""
    model = PoseResNet(cfg, **kwargs)
    if is_train and cfg.MODEL.INIT_WEIGHTS:
        model.init_weights(cfg.MODEL.PRETRAINED)
    return model
