"""Every original experiment file builds its model and takes one training step (tiny input)."""

import glob

import pytest
import torch

from lib.config import cfg, merge_from_file, merge_from_list
from lib.core.loss import build_criterion
from lib.models import build_model
from lib.utils.utils import get_optimizer

pytestmark = pytest.mark.slow  # one training step of every original experiment file

EXPERIMENTS = sorted(glob.glob("experiments/coco/*/*.yaml")
                     + glob.glob("experiments/mpii/*/*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS)
def test_one_training_iteration(path):
    c = cfg.clone()
    merge_from_file(c, path)
    merge_from_list(c, ["MODEL.IMAGE_SIZE", "[32, 32]", "MODEL.HEATMAP_SIZE", "[8, 8]",
                        "MODEL.PRETRAINED", "''"])
    torch.manual_seed(0)
    model = build_model(c, is_train=True).train()
    optimizer = get_optimizer(c, model)
    criterion = build_criterion(c)
    x = torch.randn(2, 3, 32, 32)
    target = torch.rand(2, c.MODEL.NUM_JOINTS, 8, 8)
    weight = torch.ones(2, c.MODEL.NUM_JOINTS, 1)
    before = model.final_layer.weight.detach().clone()

    output = model(x)
    assert output.shape == target.shape
    loss = criterion(output, target, weight)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

    assert torch.isfinite(loss)
    assert not torch.equal(model.final_layer.weight, before)
