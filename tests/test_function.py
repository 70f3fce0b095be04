"""The training and validation loops on synthetic tensors (no data set needed)."""

import numpy as np
import pytest
import torch
from torch import nn

from lib.config import cfg as default_cfg
from lib.core.function import NonFiniteLossError, format_name_value_table, train, validate
from lib.core.loss import JointsMSELoss


class TinyNet(nn.Module):
    def __init__(self, joints=3):
        super().__init__()
        self.conv = nn.Conv2d(3, joints, 3, stride=4, padding=1)

    def forward(self, x):
        return self.conv(x)


def _cfg(**overrides):
    c = default_cfg.clone()
    c.defrost()
    c.MODEL.NUM_JOINTS = 3
    c.PRINT_FREQ = 1
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def _batches(n_batches=2, target_value=0.5):
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n_batches):
        meta = {"center": torch.tensor([[32.0, 32.0]] * 2),
                "scale": torch.tensor([[0.32, 0.32]] * 2),
                "score": torch.ones(2), "image": [f"img{i}_{k}.jpg" for k in range(2)],
                "joints": torch.zeros(2, 3, 3), "joints_vis": torch.ones(2, 3, 3)}
        target = torch.zeros(2, 3, 16, 16)
        target[:, :, 5, 7] = target_value
        out.append((torch.rand(2, 3, 64, 64, generator=g), target, torch.ones(2, 3, 1), meta))
    return out


def test_nan_guard_stops_before_the_step(tmp_path):
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = _batches(target_value=float("nan"))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteLossError) as err:
        train(_cfg(), batches, model, JointsMSELoss(True), optimizer, 3, str(tmp_path),
              str(tmp_path), None, last_checkpoint="out/checkpoint.pth")
    message = str(err.value)
    assert "epoch 3, iteration 0" in message and "out/checkpoint.pth" in message
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_train_reduces_loss(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    batches = _batches(4)
    first = train(_cfg(), batches, model, JointsMSELoss(True), optimizer, 0, str(tmp_path),
                  str(tmp_path), None)
    for epoch in range(1, 6):
        last = train(_cfg(), batches, model, JointsMSELoss(True), optimizer, epoch,
                     str(tmp_path), str(tmp_path), None)
    assert last < first


class _RecordingDataset:
    flip_pairs = [[0, 1]]

    def __init__(self):
        self.seen = None

    def __len__(self):
        return 4

    def evaluate(self, cfg, preds, output_dir, all_boxes, img_path, filenames, imgnums):
        self.seen = (preds.copy(), all_boxes.copy(), list(img_path))
        return {"metric": float(preds[:, :, 2].mean())}, 0.25


class _SymmetricNet(nn.Module):
    """Heatmaps that depend on the input, so the flip test changes the result."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))  # gives the model a device

    def forward(self, x):
        return x[:, :, ::4, ::4] + 0 * self.w


def test_validate_collects_boxes_and_flip_test_averages(tmp_path):
    batches = _batches(2)
    dataset = _RecordingDataset()
    perf = validate(_cfg(), batches, dataset, _SymmetricNet(), JointsMSELoss(True),
                    str(tmp_path), str(tmp_path))
    assert perf == 0.25
    preds, boxes, paths = dataset.seen
    assert preds.shape == (4, 3, 3)
    assert paths == [f"img{i}_{k}.jpg" for i in (0, 1) for k in (0, 1)]
    np.testing.assert_allclose(boxes[0], [32, 32, 0.32, 0.32, 64 * 64, 1], rtol=1e-6)

    flip_cfg = _cfg(**{"TEST.FLIP_TEST": True})
    validate(flip_cfg, batches, dataset, _SymmetricNet(), JointsMSELoss(True), str(tmp_path),
             str(tmp_path))
    flipped_scores = dataset.seen[0][:, :, 2]
    x = batches[0][0][0]
    # joint 0 averages its own heatmap with joint 1's heatmap of the mirrored image,
    # mirrored back (flip_pairs [[0, 1]])
    hm0 = (x[0, ::4, ::4] + x.flip(-1)[1, ::4, ::4].flip(-1)) / 2
    assert flipped_scores[0, 0] == pytest.approx(hm0.max().item(), rel=1e-6)


def test_markdown_table_matches_original_format():
    table = format_name_value_table({"AP": 0.7234, "Ap .5": 0.9}, "pose_hrnet")
    assert table.splitlines() == ["| Arch | AP | Ap .5 |", "|---|---|---|",
                                  "| pose_hrnet | 0.723 | 0.900 |"]
    assert format_name_value_table({"AP": 1.0}, "a_very_long_architecture").splitlines()[2] \
        == "| a_very_l... | 1.000 |"
