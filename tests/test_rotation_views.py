"""TEST.ROTATION_VIEWS: heatmaps of turned crops, turned back onto the heatmap grid of the
unturned crop (lib.core.predictor)."""

import numpy as np
import pytest
import torch
from torch import nn

from lib.config import cfg as default_cfg
from lib.core.predictor import predict_heatmaps, turn_heatmaps_back
from lib.core.speed_two_stage import single_view_config


class StridedSampler(nn.Module):
    """A perfectly equivariant 'network': heatmap pixel i is input pixel 4 i (the convention
    of the targets), one channel per input channel."""

    def forward(self, x):
        return x[:, :, ::4, ::4]


def _blob(size: int, centre: tuple[float, float], sigma: float = 8.0) -> torch.Tensor:
    """1 x 1 x size x size, a Gaussian at (x, y) input pixels."""
    grid = torch.arange(size, dtype=torch.float64)
    gx = torch.exp(-((grid - centre[0]) ** 2) / (2 * sigma**2))
    gy = torch.exp(-((grid - centre[1]) ** 2) / (2 * sigma**2))
    return (gy[:, None] * gx[None, :])[None, None]


def _centroid(heatmap: torch.Tensor) -> np.ndarray:
    h = heatmap[0, 0].double()
    rows, cols = torch.meshgrid(torch.arange(h.shape[0]), torch.arange(h.shape[1]),
                                indexing="ij")
    return np.array([(h * cols).sum() / h.sum(), (h * rows).sum() / h.sum()])


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_turned_back_heatmaps_land_where_the_unturned_ones_are(turns):
    image = _blob(128, (50.3, 70.6))
    plain = StridedSampler()(image)
    np.testing.assert_allclose(_centroid(plain), [50.3 / 4, 70.6 / 4], atol=1e-3)
    view = StridedSampler()(torch.rot90(image, turns, (2, 3)))
    back = turn_heatmaps_back(view, turns, (128, 128))
    assert back.shape == plain.shape
    np.testing.assert_allclose(_centroid(back), _centroid(plain), atol=0.01)
    # a plain turn of the heatmap is off by (128 - 1) / 4 - (32 - 1) = 0.75 pixel along each
    # axis the turn reversed: columns for 1 and 2 turns, rows for 2 and 3
    naive_error = _centroid(torch.rot90(view, -turns, (2, 3))) - _centroid(plain)
    expected = [-0.75 if turns in (1, 2) else 0.0, -0.75 if turns in (2, 3) else 0.0]
    np.testing.assert_allclose(naive_error, expected, atol=0.01)


def test_half_turn_of_a_non_square_input():
    image = _blob(128, (90.2, 38.7))[:, :, :80, :]  # 128 wide, 80 high -> 32 x 20 heatmaps
    plain = StridedSampler()(image)
    back = turn_heatmaps_back(StridedSampler()(torch.rot90(image, 2, (2, 3))), 2, (128, 80))
    np.testing.assert_allclose(_centroid(back), _centroid(plain), atol=0.01)


def _cfg(views: int):
    c = default_cfg.clone()
    c.defrost()
    c.TEST.ROTATION_VIEWS = views
    c.MODEL.CHANNELS_LAST = False
    return c


@pytest.mark.parametrize("views", [2, 4])
def test_predict_heatmaps_averages_the_views_turned_back(views):
    torch.manual_seed(0)
    net = nn.Conv2d(3, 5, 5, stride=4, padding=2).eval()  # not equivariant: views differ
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        averaged = predict_heatmaps(_cfg(views), net, image, None)
        plain = predict_heatmaps(_cfg(1), net, image, None)
        turns = (2,) if views == 2 else (1, 2, 3)
        expected = (net(image) + sum(turn_heatmaps_back(net(torch.rot90(image, k, (2, 3))), k,
                                                        (64, 64)) for k in turns)) / views
    torch.testing.assert_close(averaged, expected)
    torch.testing.assert_close(plain, net(image).detach())
    assert (averaged - plain).abs().max() > 0.01


def test_an_equivariant_network_gives_the_same_peak_with_every_view_count():
    image = _blob(128, (61.7, 44.1)).float().repeat(1, 3, 1, 1)
    centroids = [_centroid(predict_heatmaps(_cfg(views), StridedSampler(), image, None)[:, :1])
                 for views in (1, 2, 4)]
    for centroid in centroids[1:]:
        np.testing.assert_allclose(centroid, centroids[0], atol=0.01)


def test_the_crop_search_runs_one_view_and_leaves_the_config_alone():
    c = _cfg(4)
    c.freeze()
    single = single_view_config(c)
    assert single.TEST.ROTATION_VIEWS == 1 and c.TEST.ROTATION_VIEWS == 4
    assert single.is_frozen() and single.TEST.FLIP_TEST == c.TEST.FLIP_TEST
    assert single_view_config(single) is single
