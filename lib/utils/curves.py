"""Training curves from a run's tensorboard event files, as one matplotlib figure.

Training writes (lib/core/function.py, lib/core/engine.py): 'learning_rate' at the start of
each epoch (step = epoch), 'train_loss' / 'train_acc' every PRINT_FREQ iterations (step = a
running count of those), 'valid_loss' / 'valid_acc' and 'valid/<metric>' after each epoch's
validation (step = epoch). All of it is drawn against epochs: a training point sits at the
fraction of its epoch it was logged in (found from the wall-clock times of the learning-rate
events), a validation point at the end of its epoch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.utils.io import atomic_write

__all__ = [
    "EVENT_FILE_MARKER",
    "ScalarSeries",
    "find_run_dir",
    "read_scalars",
    "epoch_positions",
    "plot_curves",
]

EVENT_FILE_MARKER = "tfevents"
LEARNING_RATE = "learning_rate"
TRAIN_PREFIX = "train_"
VALID_PREFIXES = ("valid_", "valid/")


@dataclass(frozen=True)
class ScalarSeries:
    """One tag's logged values, in step order: steps, values and wall-clock times (seconds)."""

    steps: np.ndarray
    values: np.ndarray
    wall_times: np.ndarray


def _event_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and EVENT_FILE_MARKER in p.name]


def find_run_dir(log_dir: str | os.PathLike) -> Path:
    """``log_dir`` itself when it holds event files, else the folder below it whose newest event
    file was written last (LOG_DIR/<dataset>/<model>/<cfg>_<time>/ holds one run)."""
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        raise FileNotFoundError(f"log directory {str(log_dir)!r} does not exist")
    if _event_files(log_dir):
        return log_dir
    runs = {}
    for event_file in log_dir.rglob(f"*{EVENT_FILE_MARKER}*"):
        if event_file.is_file():
            runs[event_file.parent] = max(runs.get(event_file.parent, 0.0),
                                          event_file.stat().st_mtime)
    if not runs:
        raise FileNotFoundError(
            f"no tensorboard event files (events.out.tfevents.*) in {str(log_dir)!r} or below it")
    return max(runs, key=runs.get)


def read_scalars(run_dir: str | os.PathLike) -> dict[str, ScalarSeries]:
    """Every scalar tag of the run's event files (all of them, none sampled away)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not _event_files(run_dir):
        raise FileNotFoundError(f"no tensorboard event files in {str(run_dir)!r}")
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 1})
    accumulator.Reload()
    series = {}
    for tag in accumulator.Tags().get("scalars", []):
        events = sorted(accumulator.Scalars(tag), key=lambda event: event.step)
        series[tag] = ScalarSeries(
            steps=np.array([event.step for event in events], dtype=np.int64),
            values=np.array([event.value for event in events], dtype=np.float64),
            wall_times=np.array([event.wall_time for event in events], dtype=np.float64),
        )
    return series


def _train_epochs(train: ScalarSeries, learning_rate: ScalarSeries) -> np.ndarray:
    """Fractional epochs of training points: epoch of the last learning-rate event before the
    point, plus its rank within that epoch over the number of points of a full epoch."""
    slot = np.searchsorted(learning_rate.wall_times, train.wall_times, side="right") - 1
    slot = np.clip(slot, 0, len(learning_rate.steps) - 1)
    epochs = learning_rate.steps[slot]
    first_of_epoch = np.searchsorted(epochs, epochs, side="left")  # epochs rise with the steps
    rank = np.arange(len(epochs)) - first_of_epoch
    per_epoch = np.bincount(slot).max()
    return epochs + rank / per_epoch


def epoch_positions(scalars: dict[str, ScalarSeries]) -> tuple[dict[str, np.ndarray], str]:
    """The x position of every point of every tag, and the x axis label.

    Without a 'learning_rate' tag (a run not written by our trainer) the raw steps are used.
    """
    learning_rate = scalars.get(LEARNING_RATE)
    if learning_rate is None or len(learning_rate.steps) == 0:
        return {tag: s.steps.astype(np.float64) for tag, s in scalars.items()}, "step"
    positions = {}
    for tag, series in scalars.items():
        if tag == LEARNING_RATE:
            positions[tag] = series.steps.astype(np.float64)
        elif tag.startswith(TRAIN_PREFIX):
            positions[tag] = _train_epochs(series, learning_rate)
        elif tag.startswith(VALID_PREFIXES):
            positions[tag] = series.steps + 1.0  # validated after that epoch's training
        else:
            positions[tag] = series.steps.astype(np.float64)
    return positions, "epoch"


def _draw_panel(axes, title: str, tags: list[str], scalars: dict[str, ScalarSeries],
                positions: dict[str, np.ndarray], x_label: str, step_plot: bool = False) -> None:
    axes.set_title(title)
    axes.set_xlabel(x_label)
    axes.grid(True, alpha=0.3)
    present = [tag for tag in tags if tag in scalars and len(scalars[tag].values)]
    if not present:
        axes.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axes.transAxes,
                  color="gray")
        return
    from matplotlib import rcParams

    colours = len(rcParams["axes.prop_cycle"].by_key().get("color", [None]))
    for index, tag in enumerate(present):
        x, y = positions[tag], scalars[tag].values
        # past the colour cycle a series would repeat a colour: dash the second round
        style = "--" if index >= colours else "-"
        if step_plot:  # a value holds until the next one; the last one for one more unit
            axes.step(np.append(x, x[-1] + 1), np.append(y, y[-1]), where="post", label=tag,
                      linestyle=style)
        else:
            marker = "o" if tag.startswith(VALID_PREFIXES) else None
            axes.plot(x, y, marker=marker, markersize=3, linestyle=style,
                      label=tag.removeprefix("valid/"))
    # many series: the legend goes under the panel rather than over the lines (beside it, the
    # constrained layout widened the gap between both columns of the figure by its width)
    below = ({"loc": "upper center", "bbox_to_anchor": (0.5, -0.14), "ncols": 2}
             if len(present) > 4 else {})
    axes.legend(fontsize="small", **below)


def _log_scale_for_mixed_units(axes, series: list[np.ndarray]) -> None:
    """Metrics in different units (a score near 0.1 beside errors in degrees and pixels) share
    one panel: past two decades a linear axis flattens the small ones, so go (sym)log."""
    values = np.concatenate([np.asarray(v, np.float64) for v in series]) if series else []
    values = values[np.isfinite(values)] if len(values) else values
    positive = values[values > 0] if len(values) else values
    if not len(positive) or np.any(values < 0) or positive.max() / positive.min() <= 100:
        return
    axes.set_yscale("symlog", linthresh=10.0 ** np.floor(np.log10(positive.min())))


def plot_curves(scalars: dict[str, ScalarSeries], out_path: str | os.PathLike,
                title: str = "") -> Path:
    """Write the 2 x 2 figure (losses, accuracy, validation metrics, learning rate) as an image.

    Uses matplotlib's object API with the Agg canvas: no pyplot state, no display needed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not scalars:
        raise ValueError("no scalars to plot: the event files hold no scalar summaries")
    positions, x_label = epoch_positions(scalars)
    # a series that stayed 0 all run (no PnP failure, no fallback) says nothing on a picture
    metrics = sorted(tag for tag in scalars
                     if tag.startswith("valid/") and np.any(scalars[tag].values != 0))
    figure = Figure(figsize=(12, 8), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    (loss, accuracy), (validation, learning_rate) = figure.subplots(2, 2)
    _draw_panel(loss, "loss", ["train_loss", "valid_loss"], scalars, positions, x_label)
    _draw_panel(accuracy, "accuracy", ["train_acc", "valid_acc"], scalars, positions, x_label)
    _draw_panel(validation, "validation metrics", metrics, scalars, positions, x_label)
    _log_scale_for_mixed_units(validation, [scalars[tag].values for tag in metrics])
    _draw_panel(learning_rate, "learning rate", [LEARNING_RATE], scalars, positions, x_label,
                step_plot=True)
    rates = scalars.get(LEARNING_RATE)
    if rates is not None and len(rates.values) and np.all(rates.values > 0):
        learning_rate.set_yscale("log")
    if title:
        figure.suptitle(title)
    out_path = Path(out_path)
    image_format = out_path.suffix.lstrip(".") or "png"
    return atomic_write(out_path, lambda handle: figure.savefig(handle, format=image_format))
