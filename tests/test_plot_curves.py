"""Training curves: event files as the trainer writes them -> scalars -> epoch axis -> picture."""

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from tensorboardX import SummaryWriter

from lib.utils.curves import epoch_positions, find_run_dir, plot_curves, read_scalars

EPOCHS, LOGS_PER_EPOCH = 4, 3
MATPLOTLIB_BLUE = (31, 119, 180)  # RGB of the first line colour (C0)


def write_run(run_dir: Path) -> None:
    """Scalars with the tags, steps and order of lib/core/engine.py and lib/core/function.py."""
    writer = SummaryWriter(log_dir=str(run_dir))
    train_step = 0
    for epoch in range(EPOCHS):
        writer.add_scalar("learning_rate", 1e-3 if epoch < 3 else 1e-4, epoch)
        for _ in range(LOGS_PER_EPOCH):
            writer.add_scalar("train_loss", 1.0 / (train_step + 1), train_step)
            writer.add_scalar("train_acc", train_step / 20.0, train_step)
            train_step += 1
            time.sleep(0.002)  # distinct wall times, as real iterations have
        writer.add_scalar("valid_loss", 0.5 / (epoch + 1), epoch)
        writer.add_scalar("valid_acc", 0.2 * epoch, epoch)
        writer.add_scalar("valid/AP", 0.1 + 0.2 * epoch, epoch)
        writer.add_scalar("valid/AR", 0.15 + 0.2 * epoch, epoch)
        time.sleep(0.002)
    writer.add_image("valid_heatmaps(pred|gt)", np.zeros((1, 8, 16), np.float32), 0)
    writer.close()


@pytest.fixture(scope="module")
def log_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("log")
    write_run(root / "coco" / "pose_hrnet" / "old_run")
    newest = root / "coco" / "pose_hrnet" / "new_run"
    write_run(newest)
    # Make the second run unambiguously the newer one, whatever the file system's clock.
    for event_file in newest.iterdir():
        os.utime(event_file, (time.time() + 60, time.time() + 60))
    return root


def test_reads_every_scalar_of_the_run(log_root):
    run = log_root / "coco" / "pose_hrnet" / "new_run"
    scalars = read_scalars(run)
    assert set(scalars) == {"learning_rate", "train_loss", "train_acc", "valid_loss",
                            "valid_acc", "valid/AP", "valid/AR"}
    np.testing.assert_array_equal(scalars["train_loss"].steps, np.arange(EPOCHS * LOGS_PER_EPOCH))
    np.testing.assert_allclose(scalars["train_loss"].values,
                               1.0 / np.arange(1, EPOCHS * LOGS_PER_EPOCH + 1), rtol=1e-6)
    np.testing.assert_allclose(scalars["valid/AP"].values, [0.1, 0.3, 0.5, 0.7], rtol=1e-6)
    np.testing.assert_allclose(scalars["learning_rate"].values, [1e-3, 1e-3, 1e-3, 1e-4],
                               rtol=1e-6)


def test_points_are_placed_on_the_epoch_axis(log_root):
    positions, label = epoch_positions(read_scalars(log_root / "coco" / "pose_hrnet" / "new_run"))
    assert label == "epoch"
    # Training points at epoch + k / 3, validation at the end of its epoch, lr at its start.
    expected_train = np.repeat(np.arange(EPOCHS), LOGS_PER_EPOCH) + np.tile(
        np.arange(LOGS_PER_EPOCH) / LOGS_PER_EPOCH, EPOCHS)
    np.testing.assert_allclose(positions["train_acc"], expected_train)
    np.testing.assert_allclose(positions["valid_loss"], np.arange(1, EPOCHS + 1))
    np.testing.assert_allclose(positions["learning_rate"], np.arange(EPOCHS))


def test_newest_run_below_a_folder_is_chosen(log_root):
    assert find_run_dir(log_root) == log_root / "coco" / "pose_hrnet" / "new_run"
    assert find_run_dir(log_root / "coco" / "pose_hrnet" / "old_run").name == "old_run"


def test_missing_or_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_run_dir(tmp_path / "absent")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no tensorboard event files.*empty"):
        find_run_dir(tmp_path / "empty")
    with pytest.raises(ValueError, match="no scalars"):
        plot_curves({}, tmp_path / "x.png")


@pytest.mark.slow
def test_tool_writes_a_picture_with_the_curves(run_tool, log_root, tmp_path):
    out = tmp_path / "plots" / "curves.png"
    result = run_tool("tools/plot_curves.py", "--log-dir", log_root, "--out", out)
    assert "new_run" in result.stdout
    image = cv2.imread(str(out))
    assert image is not None and image.shape[:2] == (800, 1200)
    rgb = image[..., ::-1].astype(int)
    # Not blank: lines of the first plot colour cover a good number of pixels, and the picture
    # has both light background and dark text / axes.
    blue = np.all(np.abs(rgb - MATPLOTLIB_BLUE) <= 30, axis=-1)
    assert blue.sum() > 500
    assert (rgb.sum(axis=-1) > 700).mean() > 0.5 and (rgb.sum(axis=-1) < 150).sum() > 1000
    # Each of the four panels has drawn curves (blue pixels in every quadrant).
    for rows in (slice(0, 400), slice(400, 800)):
        for cols in (slice(0, 600), slice(600, 1200)):
            assert blue[rows, cols].sum() > 50


def test_tool_names_the_folder_without_event_files(run_tool, tmp_path):
    result = run_tool("tools/plot_curves.py", "--log-dir", tmp_path, "--out", tmp_path / "c.png",
                      check=False)
    assert result.returncode == 2
    assert str(tmp_path) in result.stderr and "no tensorboard event files" in result.stderr


def test_validation_panel_goes_log_only_for_mixed_units():
    from lib.utils.curves import _log_scale_for_mixed_units

    class Axes:
        scale = None

        def set_yscale(self, scale, **kwargs):
            self.scale = (scale, kwargs)

    mixed, alike, signed = Axes(), Axes(), Axes()
    _log_scale_for_mixed_units(mixed, [np.array([0.09, 0.2]), np.array([4.5, 120.0, 0.0])])
    _log_scale_for_mixed_units(alike, [np.array([0.5, 0.7]), np.array([0.6, 3.0])])
    _log_scale_for_mixed_units(signed, [np.array([-1.0, 0.01]), np.array([500.0])])
    assert mixed.scale == ("symlog", {"linthresh": 0.01})
    assert alike.scale is None and signed.scale is None
