"""Pose networks. ``build_model`` picks one by cfg.MODEL.NAME, as the original's
``eval('models.' + cfg.MODEL.NAME + '.get_pose_net')`` did, without the eval."""

from __future__ import annotations

from torch import nn

from lib.models import pose_hrnet, pose_resnet

MODEL_BUILDERS = {
    'pose_hrnet': pose_hrnet.get_pose_net,
    'pose_resnet': pose_resnet.get_pose_net,
}


class UnknownModelError(KeyError, ValueError):
    """cfg.MODEL.NAME names no model of this package."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


def build_model(cfg, is_train: bool, **kwargs) -> nn.Module:
    """The network named by cfg.MODEL.NAME, built (and, when training, initialised) from cfg."""
    name = cfg.MODEL.NAME
    if name not in MODEL_BUILDERS:
        raise UnknownModelError(
            f'MODEL.NAME {name!r} is not a known model; valid names: {sorted(MODEL_BUILDERS)}'
        )
    return MODEL_BUILDERS[name](cfg, is_train, **kwargs)


__all__ = ['MODEL_BUILDERS', 'UnknownModelError', 'build_model', 'pose_hrnet', 'pose_resnet']
