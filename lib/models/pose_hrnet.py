"""HRNet for pose estimation: keep a high-resolution branch alive through the whole network.

Sun et al., "Deep High-Resolution Representation Learning for Human Pose Estimation" (CVPR 2019).
Layout, top to bottom:
  stem      two stride-2 3x3 convs (stride 4 overall), then layer1 = 4 Bottleneck blocks
  stage k   (k = 2, 3, 4, ... as configured in MODEL.EXTRA.STAGE<k>): a transition adds the
            new, half-resolution branch(es), then NUM_MODULES HighResolutionModules run one
            residual branch per resolution and fuse every branch into every other
  head      final_layer: conv on the highest-resolution branch -> one heatmap per joint
Module names and nesting reproduce the original repository, so its checkpoints load strictly.
"""

from __future__ import annotations

import logging

from torch import Tensor, nn

from lib.models.pose_resnet import (
    BN_MOMENTUM,
    BasicBlock,
    Bottleneck,
    conv3x3,
    final_conv_padding,
    init_normal_weights,
    make_residual_layer,
)
from lib.utils.checkpoint import load_pretrained_weights

logger = logging.getLogger(__name__)

BLOCKS = {'BASIC': BasicBlock, 'BOTTLENECK': Bottleneck}
FUSE_METHODS = ('SUM',)


def make_upsample(in_channels: int, out_channels: int, scale: int) -> nn.Sequential:
    """Lower- to higher-resolution path of a fuse layer: 1x1 conv + BN, nearest upsampling."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
        nn.Upsample(scale_factor=scale, mode='nearest'),
    )


def make_downsample(in_channels: int, out_channels: int, steps: int) -> nn.Sequential:
    """Higher- to lower-resolution path: ``steps`` stride-2 3x3 conv + BN units.

    Intermediate units keep ``in_channels`` and end with ReLU; the last one switches to
    ``out_channels`` and has no ReLU, because the fused sum is rectified afterwards.
    """
    units = []
    for step in range(steps):
        if step < steps - 1:
            units.append(nn.Sequential(
                conv3x3(in_channels, in_channels, stride=2),
                nn.BatchNorm2d(in_channels, momentum=BN_MOMENTUM),
                nn.ReLU(inplace=True),
            ))
        else:
            units.append(nn.Sequential(
                conv3x3(in_channels, out_channels, stride=2),
                nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
            ))
    return nn.Sequential(*units)


class HighResolutionModule(nn.Module):
    """Parallel residual branches (one per resolution) followed by all-to-all fusion.

    Branch i runs at 1 / 2**i of the resolution of branch 0. Output i is
    ReLU(sum_j resample_{j->i}(branch_j)); with ``multi_scale_output=False`` only output 0 is
    produced (the last module of the network needs nothing else).
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], num_blocks: list[int],
                 in_channels: list[int], num_channels: list[int],
                 multi_scale_output: bool = True) -> None:
        super().__init__()
        self.num_branches = len(num_channels)
        self.branches = nn.ModuleList(
            make_residual_layer(block, in_channels[i], num_channels[i], num_blocks[i])
            for i in range(self.num_branches)
        )
        self.out_channels = [channels * block.expansion for channels in num_channels]
        num_outputs = self.num_branches if multi_scale_output else 1
        self.fuse_layers = None
        if self.num_branches > 1:
            self.fuse_layers = nn.ModuleList(
                self._make_fuse_row(target, self.out_channels) for target in range(num_outputs)
            )
        self.relu = nn.ReLU(inplace=True)

    @staticmethod
    def _make_fuse_row(target: int, channels: list[int]) -> nn.ModuleList:
        """Resampling paths from every branch into branch ``target`` (None for itself)."""
        row: list[nn.Module | None] = []
        for source in range(len(channels)):
            if source > target:
                row.append(make_upsample(channels[source], channels[target],
                                         scale=2 ** (source - target)))
            elif source == target:
                row.append(None)
            else:
                row.append(make_downsample(channels[source], channels[target],
                                           steps=target - source))
        return nn.ModuleList(row)

    def forward(self, inputs: list[Tensor]) -> list[Tensor]:
        features = [branch(x) for branch, x in zip(self.branches, inputs, strict=True)]
        if self.fuse_layers is None:
            return features
        fused = []
        for target, row in enumerate(self.fuse_layers):
            total = None
            for source, (path, x) in enumerate(zip(row, features, strict=True)):
                contribution = x if source == target else path(x)
                total = contribution if total is None else total + contribution
            fused.append(self.relu(total))
        return fused


def make_transition(pre_channels: list[int], cur_channels: list[int]) -> nn.ModuleList:
    """Adapt the branches of one stage to the next one.

    Existing branches get a 3x3 conv only when their width changes (else None); each new
    branch is made from the lowest-resolution one by stride-2 3x3 convs, one per halving.
    """
    num_pre = len(pre_channels)
    transition: list[nn.Module | None] = []
    for i, out_channels in enumerate(cur_channels):
        if i < num_pre:
            if pre_channels[i] == out_channels:
                transition.append(None)
            else:
                transition.append(nn.Sequential(
                    conv3x3(pre_channels[i], out_channels),
                    nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
                    nn.ReLU(inplace=True),
                ))
            continue
        steps = i + 1 - num_pre
        in_channels = pre_channels[-1]
        units = []
        for step in range(steps):
            unit_out = out_channels if step == steps - 1 else in_channels
            units.append(nn.Sequential(
                conv3x3(in_channels, unit_out, stride=2),
                nn.BatchNorm2d(unit_out, momentum=BN_MOMENTUM),
                nn.ReLU(inplace=True),
            ))
        transition.append(nn.Sequential(*units))
    return nn.ModuleList(transition)


def read_stage_config(extra, name: str) -> dict:
    """Validated copy of MODEL.EXTRA.<name>; errors name the offending key."""
    stage = extra[name]
    key = f'MODEL.EXTRA.{name}'
    num_branches = stage.NUM_BRANCHES
    for field in ('NUM_BLOCKS', 'NUM_CHANNELS'):
        if len(stage[field]) != num_branches:
            raise ValueError(
                f'{key}.{field} has {len(stage[field])} entries but '
                f'{key}.NUM_BRANCHES is {num_branches}'
            )
    if stage.BLOCK not in BLOCKS:
        raise ValueError(f'{key}.BLOCK must be one of {sorted(BLOCKS)}, got {stage.BLOCK!r}')
    if stage.FUSE_METHOD not in FUSE_METHODS:
        raise ValueError(
            f'{key}.FUSE_METHOD must be one of {list(FUSE_METHODS)}, got {stage.FUSE_METHOD!r}'
        )
    if stage.NUM_MODULES < 1:
        raise ValueError(f'{key}.NUM_MODULES must be at least 1, got {stage.NUM_MODULES}')
    return {
        'num_modules': stage.NUM_MODULES,
        'block': BLOCKS[stage.BLOCK],
        'num_blocks': list(stage.NUM_BLOCKS),
        'num_channels': list(stage.NUM_CHANNELS),
    }


def configured_stages(extra) -> list[str]:
    """STAGE2, STAGE3, ... as far as MODEL.EXTRA defines them without a gap."""
    names = []
    while f'STAGE{len(names) + 2}' in extra:
        names.append(f'STAGE{len(names) + 2}')
    if not names:
        raise ValueError('MODEL.EXTRA.STAGE2 is missing: HRNet needs at least one stage')
    return names


class PoseHighResolutionNet(nn.Module):
    """HRNet backbone plus a conv head on its highest-resolution branch (stride 4)."""

    def __init__(self, cfg, **kwargs) -> None:
        super().__init__()
        extra = cfg.MODEL.EXTRA
        self.pretrained_layers = list(extra.get('PRETRAINED_LAYERS', ['*']))

        # absent keys (an EXTRA built by hand) mean the published stem and layer1
        stem = int(extra.get('STEM_CHANNELS', 64))
        layer1_planes = int(extra.get('LAYER1_PLANES', 64))
        layer1_blocks = int(extra.get('LAYER1_BLOCKS', 4))
        if min(stem, layer1_planes, layer1_blocks) < 1:
            raise ValueError('MODEL.EXTRA.STEM_CHANNELS, LAYER1_PLANES and LAYER1_BLOCKS must be '
                             f'positive, got {stem}, {layer1_planes}, {layer1_blocks}')
        self.conv1 = nn.Conv2d(3, stem, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(stem, stem, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_residual_layer(Bottleneck, stem, layer1_planes, layer1_blocks)

        # Stage k is registered as 'transition{k-1}' + 'stage{k}', the original names.
        channels = [layer1_planes * Bottleneck.expansion]
        stage_names = configured_stages(extra)
        self.num_stages = len(stage_names)
        max_branches = 1
        for index, name in enumerate(stage_names):
            stage = read_stage_config(extra, name)
            branch_channels = [c * stage['block'].expansion for c in stage['num_channels']]
            self.add_module(f'transition{index + 1}', make_transition(channels, branch_channels))
            is_last_stage = index == len(stage_names) - 1
            modules = []
            for module_index in range(stage['num_modules']):
                is_last_module = is_last_stage and module_index == stage['num_modules'] - 1
                module = HighResolutionModule(
                    stage['block'], stage['num_blocks'], branch_channels,
                    stage['num_channels'], multi_scale_output=not is_last_module,
                )
                modules.append(module)
                branch_channels = module.out_channels
            self.add_module(f'stage{index + 2}', nn.Sequential(*modules))
            channels = branch_channels
            max_branches = max(max_branches, len(channels))

        kernel = extra.FINAL_CONV_KERNEL
        self.final_layer = nn.Conv2d(channels[0], cfg.MODEL.NUM_JOINTS, kernel,
                                     padding=final_conv_padding(kernel))
        # The stem divides by 4, each extra branch by 2 more; fusion needs exact halvings.
        self.input_divisor = 4 * 2 ** (max_branches - 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2] % self.input_divisor or x.shape[-1] % self.input_divisor:
            raise ValueError(
                f'input height and width must be multiples of {self.input_divisor} for this '
                f'HRNet (MODEL.IMAGE_SIZE), got {list(x.shape[-2:])}'
            )
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        features = [self.layer1(x)]
        for index in range(self.num_stages):
            transition = getattr(self, f'transition{index + 1}')
            stage = getattr(self, f'stage{index + 2}')
            features = stage(self._apply_transition(transition, features))
        return self.final_layer(features[0])

    @staticmethod
    def _apply_transition(transition: nn.ModuleList, features: list[Tensor]) -> list[Tensor]:
        """Existing branch i goes through its own path; new branches start from the lowest one.

        (The original feeds the lowest-resolution branch into *every* non-None path, which only
        differs for configurations that change the width of an existing branch.)
        """
        outputs = []
        for i, path in enumerate(transition):
            source = features[i] if i < len(features) else features[-1]
            outputs.append(source if path is None else path(source))
        return outputs

    def init_weights(self, pretrained: str = '') -> None:
        """Normal init everywhere, then the PRETRAINED_LAYERS part of ``pretrained`` if given."""
        logger.info('=> init weights from normal distribution')
        init_normal_weights(self)
        if pretrained:
            load_pretrained_weights(self, pretrained, self.pretrained_layers)


def get_pose_net(cfg, is_train: bool, **kwargs) -> PoseHighResolutionNet:
    """Build from ``cfg``; training runs start from ``init_weights(MODEL.PRETRAINED)``."""
    model = PoseHighResolutionNet(cfg, **kwargs)
    if is_train and cfg.MODEL.INIT_WEIGHTS:
        model.init_weights(cfg.MODEL.PRETRAINED)
    return model
