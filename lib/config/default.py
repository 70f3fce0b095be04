"""Every configuration key of the framework and its default.

The keys and defaults of the original HRNet repository are kept unchanged, so its experiment
files and command lines work as they are. Keys added here carry a comment and a default that
keeps the original behaviour.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from yacs.config import CfgNode as CN

from lib.config.checks import check_config

_C = CN()

_C.OUTPUT_DIR = ""
_C.LOG_DIR = ""
_C.DATA_DIR = ""
_C.GPUS = (0,)
_C.WORKERS = 4
_C.PRINT_FREQ = 20
_C.AUTO_RESUME = False
_C.PIN_MEMORY = True
_C.RANK = 0
# New: seed of python / numpy / torch RNGs; negative leaves them unseeded (the original).
_C.SEED = -1
# New: how TRAIN.AMP / TEST.AMP run on a CPU: 'auto' (bf16 autocast only where a one-off probe
# finds it at least 10% faster than fp32 on this processor, else fp32; the choice is logged),
# 'on' (always bf16), 'off' (always fp32). CUDA runs fp16 whatever this says.
_C.CPU_BF16 = "auto"

_C.CUDNN = CN()
_C.CUDNN.BENCHMARK = True
_C.CUDNN.DETERMINISTIC = False
_C.CUDNN.ENABLED = True

_C.MODEL = CN()
_C.MODEL.NAME = "pose_hrnet"
_C.MODEL.INIT_WEIGHTS = True
_C.MODEL.PRETRAINED = ""
_C.MODEL.NUM_JOINTS = 17
_C.MODEL.TAG_PER_JOINT = True
# 'gaussian': the original's, peaked at the joint's rounded heatmap pixel; new,
# 'gaussian_subpixel': peaked at its exact position (DARK's unbiased encoding).
_C.MODEL.TARGET_TYPE = "gaussian"
_C.MODEL.IMAGE_SIZE = [256, 256]  # width, height
_C.MODEL.HEATMAP_SIZE = [64, 64]  # width, height
_C.MODEL.SIGMA = 2
# Architecture details (HRNet stages, PoseResNet depth and deconv head) differ per model.
_C.MODEL.EXTRA = CN(new_allowed=True)
# New (HRNet): the stem's width and the Bottleneck layer1 before stage 2. The defaults are the
# published network (and its checkpoint keys); narrower, shallower values make a CPU-sized HRNet
# whose cost is no longer ~90% stem + layer1 at small widths.
_C.MODEL.EXTRA.STEM_CHANNELS = 64
_C.MODEL.EXTRA.LAYER1_PLANES = 64
_C.MODEL.EXTRA.LAYER1_BLOCKS = 4
# New: torch.channels_last memory format for the model and its input batches.
_C.MODEL.CHANNELS_LAST = False
# New: convert BatchNorm to SyncBatchNorm when training with DistributedDataParallel.
_C.MODEL.SYNC_BN = False
# New: wrap the model in torch.compile.
_C.MODEL.COMPILE = False

_C.LOSS = CN()
_C.LOSS.USE_OHKM = False
_C.LOSS.TOPK = 8
_C.LOSS.USE_TARGET_WEIGHT = True
_C.LOSS.USE_DIFFERENT_JOINTS_WEIGHT = False

_C.DATASET = CN()
_C.DATASET.ROOT = ""
_C.DATASET.DATASET = "mpii"
_C.DATASET.TRAIN_SET = "train"
_C.DATASET.TEST_SET = "valid"
# New: TRAIN_SET may join image sets with '+' (e.g. 'lightbox/pseudo+train'); without shares
# they are concatenated, with one positive share per set (normalised to sum 1) an epoch is
# every image of the first set and the other sets' shares of the samples beside them
# (lib.dataset.mixing).
_C.DATASET.TRAIN_SET_SHARES = []
_C.DATASET.DATA_FORMAT = "jpg"
_C.DATASET.HYBRID_JOINTS_TYPE = ""
_C.DATASET.SELECT_DATA = False
_C.DATASET.FLIP = True
_C.DATASET.SCALE_FACTOR = 0.25
_C.DATASET.ROT_FACTOR = 30
_C.DATASET.PROB_HALF_BODY = 0.0
_C.DATASET.NUM_JOINTS_HALF_BODY = 8
_C.DATASET.COLOR_RGB = False
# New: the crop is the object box enlarged by this factor (1.25 in the original, for people).
_C.DATASET.BBOX_PADDING = 1.25
# New: 3D landmarks of the spacecraft model (.json / .npy N x 3 metres, or .mat), relative to ROOT.
_C.DATASET.KEYPOINTS_FILE = ""
# New: keep decoded images in memory up to this many MiB per data set (0 = off), so epochs after
# the first skip decoding; with WORKERS > 0 each loader process holds its own copy (the workers
# then persist across epochs).
_C.DATASET.CACHE_IMAGES_MB = 0

_C.TRAIN = CN()
_C.TRAIN.LR_FACTOR = 0.1
_C.TRAIN.LR_STEP = [90, 110]
_C.TRAIN.LR = 0.001
_C.TRAIN.OPTIMIZER = "adam"
_C.TRAIN.MOMENTUM = 0.9
_C.TRAIN.WD = 0.0001
_C.TRAIN.NESTEROV = False
_C.TRAIN.GAMMA1 = 0.99
_C.TRAIN.GAMMA2 = 0.0
_C.TRAIN.BEGIN_EPOCH = 0
_C.TRAIN.END_EPOCH = 140
_C.TRAIN.RESUME = False
_C.TRAIN.CHECKPOINT = ""
_C.TRAIN.BATCH_SIZE_PER_GPU = 32
_C.TRAIN.SHUFFLE = True
# New: mixed precision training (fp16 + GradScaler on CUDA, bf16 autocast on CPU).
_C.TRAIN.AMP = False
# New: decay of an exponential moving average of the weights (0 = off, e.g. 0.998); the average
# is what is validated and saved as model_best.pth / final_state.pth (checkpoint.pth keeps both).
_C.TRAIN.EMA_DECAY = 0.0
# New: the learning rate's course (lib/core/lr_schedule.py): 'multistep' (the original: times
# LR_FACTOR at each epoch of LR_STEP) or 'cosine' (half a cosine from LR to 0 over the run,
# stepped every iteration) ...
_C.TRAIN.LR_SCHEDULER = "multistep"
# ... after a linear warm-up from ~0 to LR over this many epochs (0 = none; fractions allowed).
_C.TRAIN.WARMUP_EPOCHS = 0.0
# New: validate (and so choose model_best.pth) after every this many epochs and after the last
# one; checkpoint.pth is written every epoch all the same. 1: every epoch, as the original.
_C.TRAIN.VALIDATE_EVERY = 1

_C.TEST = CN()
_C.TEST.BATCH_SIZE_PER_GPU = 32
_C.TEST.FLIP_TEST = False
# New: test-time rotation, for objects seen at any roll (a spacecraft; not people, who stand up):
# the heatmaps averaged over 1 (off), 2 (the crop and its half turn) or 4 views (every quarter
# turn; square inputs only), each turned back with the sub-pixel shift of the heatmap grid.
_C.TEST.ROTATION_VIEWS = 1
_C.TEST.POST_PROCESS = False
# New: the sub-pixel step of POST_PROCESS: 'quarter' (the original: a quarter pixel towards the
# higher neighbour) or 'dark' (Newton step on the log of the smoothed heatmap, after DARK,
# Zhang et al. CVPR 2020; the smoothing is MODEL.SIGMA).
_C.TEST.SUBPIXEL_METHOD = 'quarter'
_C.TEST.SHIFT_HEATMAP = False
_C.TEST.USE_GT_BBOX = False
_C.TEST.IMAGE_THRE = 0.1
_C.TEST.NMS_THRE = 0.6
_C.TEST.SOFT_NMS = False
_C.TEST.OKS_THRE = 0.5
_C.TEST.IN_VIS_THRE = 0.0
_C.TEST.COCO_BBOX_FILE = ""
_C.TEST.BBOX_THRE = 1.0
_C.TEST.MODEL_FILE = ""
# New: mixed precision inference (fp16 on CUDA, bf16 on CPU).
_C.TEST.AMP = False
# New: fold BatchNorm into the preceding convolution for tools/test.py and tools/infer.py.
_C.TEST.FUSE_CONV_BN = False
# New: what runs the forward pass of tools/test.py and tools/infer.py: 'torch', or
# 'onnxruntime' (the weights exported to ONNX at start-up, checked against PyTorch on a batch,
# then run by onnxruntime on the CPU; needs requirements-export.txt; TEST.AMP does not apply).
_C.TEST.RUNTIME = "torch"
# New: test-time adaptation (lib.core.adaptation) before tools/test.py predicts: ADAPT_STEPS
# AdamW updates (0 = off) of only the normalisation layers' affine parameters, at ADAPT_LR, on
# the unlabelled test images, minimising the predicted heatmaps' entropy; BatchNorm's running
# statistics follow the test images. The adapted weights are saved beside the results.
# A heatmap's pixel distribution is softmax(heatmap / ADAPT_TEMPERATURE) (targets peak at 1).
_C.TEST.ADAPT_STEPS = 0
_C.TEST.ADAPT_LR = 1e-4
_C.TEST.ADAPT_TEMPERATURE = 0.1

# New: pseudo-label self-training on an unlabelled SPEED+ test domain (tools/self_train.py,
# lib.core.self_training): the model predicts DATASET.TEST_SET as tools/test.py does, PnP
# solves each image, the images where at least MIN_AGREEING (a fraction) of the landmarks lie
# within AGREEMENT_TOL x the landmarks' box size of their pose's reprojection (and the pose
# within TEST.SPEED_MAX_DISTANCE) become '<domain>/pseudo', labelled with that pose; the model
# is then fine-tuned on them (and SOURCE_SHARE of DATASET.TRAIN_SET) for EPOCHS at LR
# (TRAIN's other keys); ROUNDS times.
_C.SELF_TRAINING = CN()
_C.SELF_TRAINING.ROUNDS = 1
_C.SELF_TRAINING.EPOCHS = 10
_C.SELF_TRAINING.LR = 1e-4
_C.SELF_TRAINING.AGREEMENT_TOL = 0.05
_C.SELF_TRAINING.MIN_AGREEING = 0.6
# The share of each fine-tuning epoch drawn from DATASET.TRAIN_SET (the labelled synthetic
# images) beside the pseudo-labelled ones, against forgetting them (0: pseudo-labels only).
_C.SELF_TRAINING.SOURCE_SHARE = 0.5

_C.DEBUG = CN()
_C.DEBUG.DEBUG = False
_C.DEBUG.SAVE_BATCH_IMAGES_GT = False
_C.DEBUG.SAVE_BATCH_IMAGES_PRED = False
_C.DEBUG.SAVE_HEATMAPS_GT = False
_C.DEBUG.SAVE_HEATMAPS_PRED = False

# --- spacecraft --- (DATASET.DATASET 'speed'; every default keeps the human-pose behaviour)
# Crop = the whole image (the coarse, low-resolution model of the two-stage pipeline).
_C.DATASET.SPEED_FULL_IMAGE = False
# Training augmentation of every data set (lib/dataset/augmentation.py), after the original's
# scale / rotation / flip / half-body draws; at the defaults it is off and draws nothing.
# Random crop translation, uniform up to this fraction of the crop size (0 = off).
_C.DATASET.SHIFT_FACTOR = 0.0
# Probability of a random brightness / contrast change of the crop (0 = off) ...
_C.DATASET.PROB_BRIGHTNESS_CONTRAST = 0.0
# ... an offset drawn uniformly up to +-this fraction of 255 ...
_C.DATASET.BRIGHTNESS_FACTOR = 0.2
# ... and a gain drawn uniformly in 1 +- this.
_C.DATASET.CONTRAST_FACTOR = 0.2
# Probability of additive gaussian noise (0 = off), std uniform up to NOISE_SIGMA.
_C.DATASET.PROB_NOISE = 0.0
_C.DATASET.NOISE_SIGMA = 8.0  # gray levels
# Probability of a gaussian blur (0 = off), sigma uniform up to BLUR_SIGMA pixels.
_C.DATASET.PROB_BLUR = 0.0
_C.DATASET.BLUR_SIGMA = 1.5
# Domain-gap steps (SPNv2-style, for models trained on synthetic images), drawn after the three
# above, on "the object's box": the box of the joints visible in the crop (else the whole crop).
# Probability of a random tone curve / gamma / histogram curve and shading of the whole crop,
# a cheap stand-in for neural style transfer (0 = off) ...
_C.DATASET.PROB_STYLE = 0.0
_C.DATASET.STYLE_SHADING = 0.3  # ... max relative amplitude of the multiplied shading field
# Probability of one hard light (the sunlamp's): beyond a sharp straight terminator through the
# object's box the crop keeps a fraction up to HARD_LIGHT_SHADOW of its brightness, the lit
# side gains up to HARD_LIGHT_GAIN (0 = off).
_C.DATASET.PROB_HARD_LIGHT = 0.0
_C.DATASET.HARD_LIGHT_SHADOW = 0.3
_C.DATASET.HARD_LIGHT_GAIN = 1.5
# Probability of coarse dropout: 1..HOLES rectangles of random grey inside the object's box ...
_C.DATASET.PROB_COARSE_DROPOUT = 0.0
_C.DATASET.COARSE_DROPOUT_HOLES = 5  # ... at most this many holes ...
_C.DATASET.COARSE_DROPOUT_SIZE = [0.2, 0.5]  # ... each side this fraction range of the box's
# Probability of a sun flare (glare disc, halo, rays, ghosts) near the object's box center ...
_C.DATASET.PROB_SUN_FLARE = 0.0
_C.DATASET.SUN_FLARE_RADIUS = [0.1, 0.3]  # ... halo radius range, fraction of the box's long side
_C.DATASET.SUN_FLARE_JITTER = 0.2  # ... center offset up to this fraction of the box's size
# Probability of a motion blur (random direction), length 3..MOTION_BLUR_LENGTH pixels.
_C.DATASET.PROB_MOTION_BLUR = 0.0
_C.DATASET.MOTION_BLUR_LENGTH = 7
# Probability of a median blur, aperture 3 up to MEDIAN_BLUR_SIZE (3 or 5).
_C.DATASET.PROB_MEDIAN_BLUR = 0.0
_C.DATASET.MEDIAN_BLUR_SIZE = 5
# Probability of ISO noise: shot noise (variance = gain x signal) plus 2x2-cell speckle ...
_C.DATASET.PROB_ISO_NOISE = 0.0
_C.DATASET.ISO_NOISE_GAIN = 1.0  # ... gain uniform up to this (grey levels per photo-electron)
_C.DATASET.ISO_NOISE_SPECKLE = 0.05  # ... speckle relative std uniform up to this
# Test crops: 'gt' (oracle: box of the projected true landmarks), 'file' (SPEED_BBOX_FILE) or
# 'model' (two-stage: boxes from the coarse model SPEED_COARSE_CFG + SPEED_COARSE_MODEL_FILE).
_C.TEST.SPEED_BBOX = "gt"
# Detections json for 'file': [{"filename", "bbox": [x, y, w, h] full-image pixels, "score"}].
_C.TEST.SPEED_BBOX_FILE = ""
# Two-stage: config file and weights of the coarse whole-image model.
_C.TEST.SPEED_COARSE_CFG = ""
_C.TEST.SPEED_COARSE_MODEL_FILE = ""
# Two-stage: the box of the confident coarse landmarks is enlarged by this factor ...
_C.TEST.SPEED_COARSE_BOX_ENLARGE = 1.1
# ... a coarse landmark counts as confident above this heatmap maximum.
_C.TEST.SPEED_COARSE_CONF_THRE = 0.1
# New (two-stage): passes of the fine model over its own crops, each re-framing the crop around
# all the landmarks it found (0: the coarse box is the crop).
_C.TEST.SPEED_CROP_REFINE = 0
# New (two-stage): more enlargements of the coarse box tried as crops, each re-framed as above;
# per image the crop whose fine landmarks agree best with their own PnP pose wins ...
_C.TEST.SPEED_CROP_CANDIDATES = []
# ... agreement = the landmarks' confidences weighted by exp(-u^2 / 2), u = the reprojection
# residual over this fraction of the landmarks' box size (sqrt(w h)).
_C.TEST.SPEED_CROP_AGREEMENT_TOL = 0.02
# New (two-stage): tone curves tried on the chosen crops, each a gamma (pixels v -> 255 (v/255)
# ** gamma; < 1 lifts shadows): per image the fine model's landmarks through each curve and
# through none compete as the crop candidates do, and the winning gamma is the crop's (written
# to the box file). Lab lighting (a dark, saturated sunlamp, a flat lightbox) differs from the
# renders the model learnt from; a curve that brings an image nearer them can untangle it.
_C.TEST.SPEED_GAMMA_CANDIDATES = []
# Pose solver: landmarks with confidence at or below this are not used by PnP.
_C.TEST.PNP_CONF_THRE = 0.1
# Pose solver: solvePnPRansac inlier threshold (pixels), iterations and confidence.
_C.TEST.PNP_RANSAC_REPROJ_ERR = 5.0
_C.TEST.PNP_RANSAC_ITERS = 100
_C.TEST.PNP_RANSAC_CONFIDENCE = 0.99
# Pose solver: where RANSAC finds no pose, this many more tries, each at twice the tolerance.
_C.TEST.PNP_RANSAC_RETRIES = 2
# Pose solver: confidence-weighted Levenberg-Marquardt refinement after RANSAC.
_C.TEST.PNP_REFINE = True
# New: a pose farther from the camera than this many metres is refused (0 = no limit): a solved
# one counts as failed, a fallback guess is passed over (lib/spacecraft/fallback.py); and no
# two-stage crop is smaller than the spacecraft at that distance can look (min_box_side).
_C.TEST.SPEED_MAX_DISTANCE = 0.0

# Taken before any tool merges an experiment into the shared `_C`.
_PRISTINE = _C.clone()


def default_config() -> CN:
    """A fresh copy of every default, whatever has been merged into the shared ``cfg``."""
    return _PRISTINE.clone()


class ConfigKeyError(KeyError):
    """A key that the configuration does not have, with the closest valid names."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly.
        return str(self.args[0])


def _all_keys(node: CN, prefix: str = "") -> list[str]:
    keys = []
    for name, value in node.items():
        full = f"{prefix}{name}"
        keys.append(full)
        if isinstance(value, CN):
            keys.extend(_all_keys(value, full + "."))
    return keys


def _unknown_key_error(cfg: CN, full_key: str, source: str) -> ConfigKeyError:
    """The error for an unknown key, naming the closest valid keys (by full name, then by leaf)."""
    candidates = _all_keys(cfg)
    close = difflib.get_close_matches(full_key, candidates, n=3, cutoff=0.6)
    if not close:
        leaf = full_key.rsplit(".", 1)[-1]
        scored = sorted(
            ((difflib.SequenceMatcher(None, c.rsplit(".", 1)[-1], leaf).ratio(), c)
             for c in candidates), reverse=True)
        close = [c for ratio, c in scored[:3] if ratio >= 0.75]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return ConfigKeyError(f"{source}: unknown config key '{full_key}'.{hint}")


def check_keys(cfg: CN, data: Mapping[str, Any], source: str, prefix: str = "") -> None:
    """Raise ConfigKeyError for the first key of `data` that `cfg` does not define."""
    for name, value in data.items():
        full = f"{prefix}{name}"
        if name not in cfg:
            if cfg.is_new_allowed():
                continue
            raise _unknown_key_error(_C, full, source)
        if isinstance(value, Mapping):
            if not isinstance(cfg[name], CN):
                first = next(iter(value), "")
                raise _unknown_key_error(_C, f"{full}.{first}", source)
            check_keys(cfg[name], value, source, full + ".")


def merge_from_file(cfg: CN, cfg_file: str | os.PathLike, check: bool = True) -> None:
    """merge_from_file with a clear error for a missing file or an unknown key; then the merged
    values are checked (check_config), unless ``check`` is False because more merges follow
    that may still fix a relation between keys."""
    path = os.fspath(cfg_file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: a config file must hold a mapping of keys, got {type(data)}")
    check_keys(cfg, data, path)
    cfg.merge_from_other_cfg(CN(data))
    if check:
        check_config(cfg)


def merge_from_list(cfg: CN, opts: Iterable[str], check: bool = True) -> None:
    """Merge KEY VALUE pairs from the command line, with a clear error for an unknown key.

    Values are decoded like YAML values (literal_eval), and new keys are accepted below nodes
    that allow them (MODEL.EXTRA), which yacs' own merge_from_list refuses. The merged values
    are then checked (check_config) unless ``check`` is False.
    """
    opts = list(opts or [])
    if len(opts) % 2:
        raise ValueError(f"command-line overrides must be KEY VALUE pairs, got {opts}")
    tree: dict[str, Any] = {}
    for full_key, value in zip(opts[0::2], opts[1::2], strict=True):
        *parents, leaf = full_key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise _unknown_key_error(_C, full_key, "command line")
        node[leaf] = value
    check_keys(cfg, tree, "command line")
    cfg.merge_from_other_cfg(CN(tree))
    if check:
        check_config(cfg)


def update_config(cfg: CN, args: Any) -> None:
    """Merge args.cfg, then args.opts, apply the directory arguments, check the values
    (check_config, once: an option may fix what the file alone gets wrong), then freeze.

    DATA_DIR is joined in front of DATASET.ROOT, MODEL.PRETRAINED and TEST.MODEL_FILE, as in
    the original, so that a whole data tree can be moved with one argument.
    """
    cfg.defrost()
    merge_from_file(cfg, args.cfg, check=False)
    merge_from_list(cfg, getattr(args, "opts", None) or [], check=False)

    if getattr(args, "modelDir", None):
        cfg.OUTPUT_DIR = args.modelDir
    if getattr(args, "logDir", None):
        cfg.LOG_DIR = args.logDir
    if getattr(args, "dataDir", None):
        cfg.DATA_DIR = args.dataDir

    cfg.DATASET.ROOT = os.path.join(cfg.DATA_DIR, cfg.DATASET.ROOT)
    cfg.MODEL.PRETRAINED = os.path.join(cfg.DATA_DIR, cfg.MODEL.PRETRAINED)
    if cfg.TEST.MODEL_FILE:
        cfg.TEST.MODEL_FILE = os.path.join(cfg.DATA_DIR, cfg.TEST.MODEL_FILE)
    check_config(cfg)
    cfg.freeze()
