"""Which values each configuration key allows, in one place.

``check_config`` runs whenever a configuration is loaded (``merge_from_file``,
``merge_from_list``, ``update_config``), so an impossible value stops a run at start-up with a
message naming the key, rather than as a stack trace an epoch later. Checks that need more than
the configuration (a file on disk, the joints of a data set, an HRNet stage layout) stay where
that knowledge lives.
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
from collections.abc import Callable
from typing import Any

from yacs.config import CfgNode

from lib.utils.heatmap_codec import SUBPIXEL_METHODS
from lib.utils.io import split_image_sets

# TEST.SPEED_BBOX: where the crops of a spacecraft test set come from (lib.dataset.speed).
SPEED_BOX_SOURCES = ("gt", "file", "model")
CPU_BF16_POLICIES = ("auto", "on", "off")  # CPU_BF16 (lib.utils.runtime.resolve_amp)
LR_SCHEDULERS = ("multistep", "cosine")  # TRAIN.LR_SCHEDULER (lib.core.lr_schedule)
RUNTIMES = ("torch", "onnxruntime")  # TEST.RUNTIME (lib.core.predictor)
OPTIMIZERS = ("adam", "sgd")  # TRAIN.OPTIMIZER, any letter case (lib.utils.utils.get_optimizer)
ROTATION_VIEWS = (1, 2, 4)  # TEST.ROTATION_VIEWS (lib.core.predictor.predict_heatmaps)
# MODEL.TARGET_TYPE: the heatmap targets the data sets encode (lib.utils.heatmap_codec)
TARGET_TYPES = ("gaussian", "gaussian_subpixel")
# MODEL.EXTRA takes new keys (each model has its own), so a misspelt one would pass silently:
# these are the keys some model of lib/models reads (HRNet: STAGE<k> too); a test keeps the
# list in step with the models' code.
MODEL_EXTRA_KEYS = ("PRETRAINED_LAYERS", "FINAL_CONV_KERNEL", "STEM_CHANNELS", "LAYER1_PLANES",
                    "LAYER1_BLOCKS", "NUM_LAYERS", "DECONV_WITH_BIAS", "NUM_DECONV_LAYERS",
                    "NUM_DECONV_FILTERS", "NUM_DECONV_KERNELS")
HRNET_STAGE_KEY = re.compile(r"STAGE[2-9][0-9]*")


class ConfigValueError(ValueError):
    """A configuration value its key does not allow; the message names key, value and rule."""


def _is_real(value: Any) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _int_at_least(low: int) -> Callable[[Any], bool]:
    return lambda value: _is_int(value) and value >= low


def _real_at_least(low: float) -> Callable[[Any], bool]:
    return lambda value: _is_real(value) and value >= low


def _positive(value: Any) -> bool:
    return _is_real(value) and value > 0


def _probability(value: Any) -> bool:
    return _is_real(value) and 0 <= value <= 1


def _one_of(names: tuple[str, ...], any_case: bool = False) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return isinstance(value, str) and (value.lower() if any_case else value) in names
    return check


def _size(value: Any) -> bool:
    """Two positive ints (width, height)."""
    return (isinstance(value, (list, tuple)) and len(value) == 2
            and all(_is_int(v) and v > 0 for v in value))


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, (list, tuple)) and all(check(v) for v in value)


def _range_within(low: float, high: float) -> Callable[[Any], bool]:
    """Two reals [a, b] with low < a <= b <= high (a range to draw from)."""
    return lambda value: (isinstance(value, (list, tuple)) and len(value) == 2
                          and all(_is_real(v) for v in value)
                          and low < value[0] <= value[1] <= high)


_NON_NEGATIVE = "be at least 0"
_PROBABILITY = "be a probability in [0, 1]"

# (key, test, what the key allows: the message reads "<key> must <allowed>, got <value>").
RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("GPUS", _list_of(_int_at_least(0)), "be a list of device ids (ints >= 0)"),
    ("CPU_BF16", _one_of(CPU_BF16_POLICIES), f"be one of {CPU_BF16_POLICIES}"),
    ("WORKERS", _int_at_least(0), "be an int >= 0 (0: load in the main process)"),
    ("PRINT_FREQ", _int_at_least(1), "be an int >= 1"),
    ("MODEL.NUM_JOINTS", _int_at_least(1), "be an int >= 1"),
    ("MODEL.TARGET_TYPE", _one_of(TARGET_TYPES), f"be one of {TARGET_TYPES}"),
    ("MODEL.IMAGE_SIZE", _size, "be two positive ints [width, height]"),
    ("MODEL.HEATMAP_SIZE", _size, "be two positive ints [width, height]"),
    ("MODEL.SIGMA", _positive, "be positive"),
    ("MODEL.EXTRA.STEM_CHANNELS", _int_at_least(1), "be an int >= 1"),
    ("MODEL.EXTRA.LAYER1_PLANES", _int_at_least(1), "be an int >= 1"),
    ("MODEL.EXTRA.LAYER1_BLOCKS", _int_at_least(1), "be an int >= 1"),
    ("LOSS.TOPK", _int_at_least(1), "be an int >= 1"),
    ("DATASET.SCALE_FACTOR", _real_at_least(0), _NON_NEGATIVE),
    ("DATASET.ROT_FACTOR", _real_at_least(0), _NON_NEGATIVE),
    # The five original MPII files have -1.0: any value <= 0 is off.
    ("DATASET.PROB_HALF_BODY", lambda v: _is_real(v) and v <= 1, "be at most 1 (<= 0: off)"),
    ("DATASET.NUM_JOINTS_HALF_BODY", _int_at_least(0), "be an int >= 0"),
    ("DATASET.BBOX_PADDING", _positive, "be a positive factor"),
    ("DATASET.CACHE_IMAGES_MB", _real_at_least(0), "be 0 (off) or a budget in MiB"),
    ("DATASET.SHIFT_FACTOR", _real_at_least(0), _NON_NEGATIVE),
    ("DATASET.PROB_BRIGHTNESS_CONTRAST", _probability, _PROBABILITY),
    ("DATASET.BRIGHTNESS_FACTOR", _real_at_least(0), _NON_NEGATIVE),
    ("DATASET.CONTRAST_FACTOR", _real_at_least(0), _NON_NEGATIVE),
    ("DATASET.PROB_NOISE", _probability, _PROBABILITY),
    ("DATASET.NOISE_SIGMA", _real_at_least(0), _NON_NEGATIVE),
    ("DATASET.PROB_BLUR", _probability, _PROBABILITY),
    ("DATASET.BLUR_SIGMA", _real_at_least(0), _NON_NEGATIVE),
    ("DATASET.PROB_STYLE", _probability, _PROBABILITY),
    ("DATASET.STYLE_SHADING", _probability, "be an amplitude in [0, 1]"),
    ("DATASET.PROB_HARD_LIGHT", _probability, _PROBABILITY),
    ("DATASET.HARD_LIGHT_SHADOW", _probability, "be a brightness fraction in [0, 1]"),
    ("DATASET.HARD_LIGHT_GAIN", _real_at_least(1), "be a gain >= 1"),
    ("DATASET.PROB_COARSE_DROPOUT", _probability, _PROBABILITY),
    ("DATASET.COARSE_DROPOUT_HOLES", _int_at_least(1), "be an int >= 1"),
    ("DATASET.COARSE_DROPOUT_SIZE", _range_within(0, 1), "be [low, high], 0 < low <= high <= 1"),
    ("DATASET.PROB_SUN_FLARE", _probability, _PROBABILITY),
    ("DATASET.SUN_FLARE_RADIUS", _range_within(0, 4), "be [low, high], 0 < low <= high <= 4"),
    ("DATASET.SUN_FLARE_JITTER", _real_at_least(0), _NON_NEGATIVE),
    ("DATASET.PROB_MOTION_BLUR", _probability, _PROBABILITY),
    ("DATASET.MOTION_BLUR_LENGTH", _int_at_least(3), "be an int >= 3 (pixels)"),
    ("DATASET.PROB_MEDIAN_BLUR", _probability, _PROBABILITY),
    ("DATASET.MEDIAN_BLUR_SIZE", lambda v: _is_int(v) and v in (3, 5), "be 3 or 5"),
    ("DATASET.PROB_ISO_NOISE", _probability, _PROBABILITY),
    ("DATASET.ISO_NOISE_GAIN", _real_at_least(0), _NON_NEGATIVE),
    ("DATASET.ISO_NOISE_SPECKLE", _real_at_least(0), _NON_NEGATIVE),
    ("TRAIN.LR", _real_at_least(0), _NON_NEGATIVE),
    ("TRAIN.LR_FACTOR", _real_at_least(0), _NON_NEGATIVE),
    ("TRAIN.LR_STEP", _list_of(_int_at_least(0)), "be a list of epochs (ints >= 0)"),
    ("TRAIN.LR_SCHEDULER", _one_of(LR_SCHEDULERS), f"be one of {LR_SCHEDULERS}"),
    ("TRAIN.WARMUP_EPOCHS", _real_at_least(0), "be at least 0 (0: no warm-up)"),
    ("TRAIN.OPTIMIZER", _one_of(OPTIMIZERS, any_case=True), "be 'adam' or 'sgd'"),
    ("TRAIN.MOMENTUM", _real_at_least(0), _NON_NEGATIVE),
    ("TRAIN.WD", _real_at_least(0), _NON_NEGATIVE),
    ("TRAIN.BEGIN_EPOCH", _int_at_least(0), "be an int >= 0"),
    # 0 epochs would write untrained weights as final_state.pth over a trained one
    ("TRAIN.END_EPOCH", _int_at_least(1), "be an int >= 1 (the epoch training stops at)"),
    ("TRAIN.BATCH_SIZE_PER_GPU", _int_at_least(1), "be an int >= 1"),
    ("TRAIN.VALIDATE_EVERY", _int_at_least(1), "be an int >= 1 (1: every epoch)"),
    ("TRAIN.EMA_DECAY", lambda v: _is_real(v) and 0 <= v < 1, "lie between 0 and 1 (0 = off)"),
    ("TEST.BATCH_SIZE_PER_GPU", _int_at_least(1), "be an int >= 1"),
    ("TEST.RUNTIME", _one_of(RUNTIMES), f"be one of {RUNTIMES}"),
    ("TEST.ADAPT_STEPS", _int_at_least(0), "be an int >= 0 (0: no test-time adaptation)"),
    ("TEST.ADAPT_LR", _positive, "be a positive learning rate"),
    ("TEST.ADAPT_TEMPERATURE", _positive, "be a positive softmax temperature"),
    ("SELF_TRAINING.ROUNDS", _int_at_least(1), "be an int >= 1"),
    ("SELF_TRAINING.EPOCHS", _int_at_least(1), "be an int >= 1"),
    ("SELF_TRAINING.LR", _positive, "be a positive learning rate"),
    ("SELF_TRAINING.AGREEMENT_TOL", _positive, "be positive"),
    ("SELF_TRAINING.MIN_AGREEING", _probability, "be a fraction of the landmarks in [0, 1]"),
    ("SELF_TRAINING.SOURCE_SHARE", lambda v: _is_real(v) and 0 <= v < 1,
     "be a share of the samples in [0, 1) (0: pseudo-labels only)"),
    ("DATASET.TRAIN_SET_SHARES", _list_of(_positive),
     "be a list of positive shares, one per '+'-joined TRAIN_SET image set (empty: none)"),
    ("TEST.ROTATION_VIEWS", lambda value: _is_int(value) and value in ROTATION_VIEWS,
     f"be one of {ROTATION_VIEWS} (views averaged)"),
    ("TEST.SUBPIXEL_METHOD", _one_of(SUBPIXEL_METHODS), f"be one of {SUBPIXEL_METHODS}"),
    ("TEST.OKS_THRE", _probability, "be an OKS overlap in [0, 1]"),
    ("TEST.SPEED_BBOX", _one_of(SPEED_BOX_SOURCES), f"be one of {SPEED_BOX_SOURCES}"),
    ("TEST.SPEED_COARSE_BOX_ENLARGE", _positive, "be a positive factor"),
    ("TEST.SPEED_CROP_REFINE", _int_at_least(0), "be an int >= 0 (0: no re-framing pass)"),
    ("TEST.SPEED_CROP_CANDIDATES", _list_of(_positive), "be positive factors"),
    ("TEST.SPEED_GAMMA_CANDIDATES", _list_of(_positive), "be positive gammas"),
    ("TEST.SPEED_CROP_AGREEMENT_TOL", _positive, "be positive"),
    ("TEST.SPEED_MAX_DISTANCE", _real_at_least(0), "be 0 (no limit) or a distance in metres"),
    ("TEST.PNP_RANSAC_REPROJ_ERR", _positive, "be positive (pixels)"),
    ("TEST.PNP_RANSAC_ITERS", _int_at_least(1), "be an int >= 1"),
    ("TEST.PNP_RANSAC_CONFIDENCE", _probability, _PROBABILITY),
    ("TEST.PNP_RANSAC_RETRIES", _int_at_least(0), "be an int >= 0"),
)


def _get(cfg: CfgNode, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _relations(cfg: CfgNode) -> list[str]:
    """Problems between keys (judged where the values involved are ints at all)."""
    problems = []
    begin, end = cfg.TRAIN.BEGIN_EPOCH, cfg.TRAIN.END_EPOCH
    if _is_int(begin) and _is_int(end) and 1 <= end <= begin:
        problems.append(f"TRAIN.END_EPOCH must be greater than TRAIN.BEGIN_EPOCH ({begin}), "
                        f"got {end}: no epoch would be trained")
    topk, joints = cfg.LOSS.TOPK, cfg.MODEL.NUM_JOINTS
    if cfg.LOSS.USE_OHKM and _is_int(topk) and _is_int(joints) and topk > joints:
        problems.append(f"LOSS.TOPK must be at most MODEL.NUM_JOINTS ({joints}) with "
                        f"LOSS.USE_OHKM, got {topk}")
    sizes = (cfg.MODEL.IMAGE_SIZE, cfg.MODEL.HEATMAP_SIZE)
    if cfg.TEST.ROTATION_VIEWS == 4 and all(_size(size) for size in sizes) and any(
            size[0] != size[1] for size in sizes):
        problems.append(f"TEST.ROTATION_VIEWS must be 1 or 2 where MODEL.IMAGE_SIZE "
                        f"{list(sizes[0])} or HEATMAP_SIZE {list(sizes[1])} is not square "
                        f"(a quarter turn swaps width and height), got 4")
    shares, sets = cfg.DATASET.TRAIN_SET_SHARES, split_image_sets(str(cfg.DATASET.TRAIN_SET))
    if isinstance(shares, (list, tuple)) and shares and len(shares) != len(sets):
        problems.append(f"DATASET.TRAIN_SET_SHARES must have one share per image set of "
                        f"DATASET.TRAIN_SET ({len(sets)}: {', '.join(sets)}), got "
                        f"{len(shares)}")
    return problems


def _unknown_extra_keys(cfg: CfgNode) -> list[str]:
    """MODEL.EXTRA keys that no model reads, with the closest known ones."""
    problems = []
    for key in cfg.MODEL.EXTRA:
        if key in MODEL_EXTRA_KEYS or HRNET_STAGE_KEY.fullmatch(key):
            continue
        close = difflib.get_close_matches(key, [*MODEL_EXTRA_KEYS, "STAGE2", "STAGE3", "STAGE4"],
                                          n=2, cutoff=0.6)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        problems.append(f"MODEL.EXTRA.{key} is not a key any model reads{hint}")
    return problems


def check_config(cfg: CfgNode) -> None:
    """Raise ConfigValueError listing every key whose value is impossible, else return."""
    problems = [f"{key} must {allowed}, got {_get(cfg, key)!r}"
                for key, ok, allowed in RULES if not ok(_get(cfg, key))]
    problems += _relations(cfg) + _unknown_extra_keys(cfg)
    if len(problems) == 1:
        raise ConfigValueError(problems[0])
    if problems:
        raise ConfigValueError(f"{len(problems)} config values are invalid:\n  "
                               + "\n  ".join(problems))
