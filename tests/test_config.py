"""The configuration: the contract's defaults, merging, and clear errors for bad keys."""

import argparse
import glob
import os

import pytest

from lib.config import (
    ConfigKeyError,
    ConfigValueError,
    cfg,
    check_config,
    default_config,
    merge_from_file,
    merge_from_list,
    update_config,
)

EXPERIMENTS = sorted(glob.glob("experiments/coco/*/*.yaml")
                     + glob.glob("experiments/mpii/*/*.yaml"))

CONTRACT_DEFAULTS = {
    "OUTPUT_DIR": "", "LOG_DIR": "", "DATA_DIR": "", "GPUS": (0,), "WORKERS": 4,
    "PRINT_FREQ": 20, "AUTO_RESUME": False, "PIN_MEMORY": True, "RANK": 0,
    "CUDNN.BENCHMARK": True, "CUDNN.DETERMINISTIC": False, "CUDNN.ENABLED": True,
    "MODEL.NAME": "pose_hrnet", "MODEL.INIT_WEIGHTS": True, "MODEL.PRETRAINED": "",
    "MODEL.NUM_JOINTS": 17, "MODEL.TAG_PER_JOINT": True, "MODEL.TARGET_TYPE": "gaussian",
    "MODEL.IMAGE_SIZE": [256, 256], "MODEL.HEATMAP_SIZE": [64, 64], "MODEL.SIGMA": 2,
    "LOSS.USE_OHKM": False, "LOSS.TOPK": 8, "LOSS.USE_TARGET_WEIGHT": True,
    "LOSS.USE_DIFFERENT_JOINTS_WEIGHT": False,
    "DATASET.ROOT": "", "DATASET.DATASET": "mpii", "DATASET.TRAIN_SET": "train",
    "DATASET.TEST_SET": "valid", "DATASET.DATA_FORMAT": "jpg", "DATASET.HYBRID_JOINTS_TYPE": "",
    "DATASET.SELECT_DATA": False, "DATASET.FLIP": True, "DATASET.SCALE_FACTOR": 0.25,
    "DATASET.ROT_FACTOR": 30, "DATASET.PROB_HALF_BODY": 0.0, "DATASET.NUM_JOINTS_HALF_BODY": 8,
    "DATASET.COLOR_RGB": False,
    "TRAIN.LR_FACTOR": 0.1, "TRAIN.LR_STEP": [90, 110], "TRAIN.LR": 0.001,
    "TRAIN.OPTIMIZER": "adam", "TRAIN.MOMENTUM": 0.9, "TRAIN.WD": 0.0001, "TRAIN.NESTEROV": False,
    "TRAIN.GAMMA1": 0.99, "TRAIN.GAMMA2": 0.0, "TRAIN.BEGIN_EPOCH": 0, "TRAIN.END_EPOCH": 140,
    "TRAIN.RESUME": False, "TRAIN.CHECKPOINT": "", "TRAIN.BATCH_SIZE_PER_GPU": 32,
    "TRAIN.SHUFFLE": True,
    "TEST.BATCH_SIZE_PER_GPU": 32, "TEST.FLIP_TEST": False, "TEST.POST_PROCESS": False,
    "TEST.SHIFT_HEATMAP": False, "TEST.USE_GT_BBOX": False, "TEST.IMAGE_THRE": 0.1,
    "TEST.NMS_THRE": 0.6, "TEST.SOFT_NMS": False, "TEST.OKS_THRE": 0.5, "TEST.IN_VIS_THRE": 0.0,
    "TEST.COCO_BBOX_FILE": "", "TEST.BBOX_THRE": 1.0, "TEST.MODEL_FILE": "",
    "DEBUG.DEBUG": False, "DEBUG.SAVE_BATCH_IMAGES_GT": False,
    "DEBUG.SAVE_BATCH_IMAGES_PRED": False,
    "DEBUG.SAVE_HEATMAPS_GT": False, "DEBUG.SAVE_HEATMAPS_PRED": False,
}


def _get(node, key):
    for part in key.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize("key", sorted(CONTRACT_DEFAULTS))
def test_contract_default(key):
    value = _get(cfg, key)
    assert value == CONTRACT_DEFAULTS[key]
    assert type(value) is type(CONTRACT_DEFAULTS[key])


def test_extra_accepts_architecture_keys():
    assert cfg.MODEL.EXTRA.is_new_allowed()


def test_spacecraft_experiment_files_parse():
    for path in sorted(glob.glob("experiments/speed/*/*.yaml")):
        c = cfg.clone()
        merge_from_file(c, path)
        assert c.DATASET.DATASET == "speed" and c.MODEL.NUM_JOINTS == 11


def test_fifteen_original_experiment_files_parse():
    assert len(EXPERIMENTS) == 15
    for path in EXPERIMENTS:
        c = cfg.clone()
        merge_from_file(c, path)
        assert c.GPUS == (0, 1, 2, 3)
        assert c.MODEL.NAME in ("pose_hrnet", "pose_resnet")


def test_coco_w32_facts():
    c = cfg.clone()
    merge_from_file(c, "experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml")
    assert c.TRAIN.END_EPOCH == 210 and c.TRAIN.LR_STEP == [170, 200]
    assert c.DATASET.ROT_FACTOR == 45 and c.DATASET.SCALE_FACTOR == 0.35
    assert c.DATASET.PROB_HALF_BODY == 0.3 and c.DATASET.COLOR_RGB
    assert c.MODEL.IMAGE_SIZE == [192, 256] and c.MODEL.HEATMAP_SIZE == [48, 64]
    assert c.MODEL.EXTRA.STAGE4.NUM_CHANNELS == [32, 64, 128, 256]
    assert c.MODEL.EXTRA.STAGE3.NUM_MODULES == 4
    assert (c.TEST.OKS_THRE, c.TEST.IN_VIS_THRE, c.TEST.NMS_THRE) == (0.9, 0.2, 1.0)


def _args(cfg_file, opts=(), **dirs):
    return argparse.Namespace(cfg=cfg_file, opts=list(opts), modelDir=dirs.get("modelDir", ""),
                              logDir=dirs.get("logDir", ""), dataDir=dirs.get("dataDir", ""),
                              prevModelDir="")


def test_update_config_merges_file_then_opts_and_joins_data_dir():
    c = cfg.clone()
    update_config(c, _args("experiments/mpii/hrnet/w32_256x256_adam_lr1e-3.yaml",
                           ["TRAIN.LR", "0.01", "TEST.MODEL_FILE", "m.pth", "GPUS", "(0,)"],
                           modelDir="out", logDir="lg", dataDir="/d"))
    assert c.is_frozen()
    assert c.TRAIN.LR == 0.01 and c.GPUS == (0,)
    assert c.OUTPUT_DIR == "out" and c.LOG_DIR == "lg" and c.DATA_DIR == "/d"
    assert c.DATASET.ROOT == os.path.join("/d", "data/mpii/")
    assert c.MODEL.PRETRAINED == "/d/models/pytorch/imagenet/hrnet_w32-36af842e.pth"
    assert c.TEST.MODEL_FILE == "/d/m.pth"
    assert c.MODEL.NUM_JOINTS == 16


def test_unknown_key_in_yaml_names_key_and_closest(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("MODEL:\n  NUM_JOINT: 17\n")
    with pytest.raises(ConfigKeyError) as err:
        merge_from_file(cfg.clone(), bad)
    message = str(err.value)
    assert str(bad) in message and "MODEL.NUM_JOINT'" in message
    assert "MODEL.NUM_JOINTS" in message


def test_unknown_key_on_command_line():
    with pytest.raises(ConfigKeyError, match=r"TRAIN\.LRR.*TRAIN\.LR"):
        merge_from_list(cfg.clone(), ["TRAIN.LRR", "0.1"])
    with pytest.raises(ConfigKeyError, match="TOTALLY_UNKNOWN"):
        merge_from_list(cfg.clone(), ["TOTALLY_UNKNOWN", "1"])
    with pytest.raises(ValueError, match="KEY VALUE pairs"):
        merge_from_list(cfg.clone(), ["TRAIN.LR"])


def test_new_keys_below_extra_from_command_line():
    c = cfg.clone()
    merge_from_list(c, ["MODEL.EXTRA.NUM_LAYERS", "18", "MODEL.IMAGE_SIZE", "[64, 48]"])
    assert c.MODEL.EXTRA.NUM_LAYERS == 18 and c.MODEL.IMAGE_SIZE == [64, 48]


def test_a_misspelt_key_under_extra_is_refused_with_the_closest_one():
    c = cfg.clone()
    with pytest.raises(ConfigValueError, match=r"MODEL\.EXTRA\.FINAL_CONV_KERNL is not a key any "
                                               r"model reads; did you mean FINAL_CONV_KERNEL"):
        merge_from_list(c, ["MODEL.EXTRA.FINAL_CONV_KERNL", "3"])
    merge_from_list(cfg.clone(), ["MODEL.EXTRA.STAGE5", "{}"])  # a deeper HRNet: a model key


def test_the_known_extra_keys_are_those_the_models_read():
    """Every MODEL.EXTRA key read in lib/models is known to check_config (and no more)."""
    import re
    from pathlib import Path

    from lib.config.checks import HRNET_STAGE_KEY, MODEL_EXTRA_KEYS

    source = "".join(path.read_text() for path in Path("lib/models").glob("*.py"))
    read = set(re.findall(r"extra(?:\.get\(|\[|\.)['\"]?([A-Z][A-Z0-9_]+)", source))
    # keys named in messages; the lookahead leaves out the placeholder "STAGE<k>"
    read |= set(re.findall(r"MODEL\.EXTRA\.([A-Z][A-Z0-9_]+)(?![A-Z0-9_<])", source))
    read = {key for key in read if not HRNET_STAGE_KEY.fullmatch(key)}
    assert read == set(MODEL_EXTRA_KEYS)


def test_missing_config_file():
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        merge_from_file(cfg.clone(), "nope.yaml")


def test_wrong_type_is_an_error():
    with pytest.raises(ValueError, match="TRAIN.LR"):
        merge_from_list(cfg.clone(), ["TRAIN.LR", "fast"])


# (command-line overrides, the key the error must name): impossible values a user could type.
BAD_VALUES = [
    (["TRAIN.BATCH_SIZE_PER_GPU", "0"], "TRAIN.BATCH_SIZE_PER_GPU"),
    (["TEST.BATCH_SIZE_PER_GPU", "-4"], "TEST.BATCH_SIZE_PER_GPU"),
    (["TRAIN.LR", "-0.001"], "TRAIN.LR"),
    (["TRAIN.LR_FACTOR", "-0.1"], "TRAIN.LR_FACTOR"),
    (["TRAIN.LR_STEP", "[90, -1]"], "TRAIN.LR_STEP"),
    (["TRAIN.WD", "-1e-4"], "TRAIN.WD"),
    (["TRAIN.OPTIMIZER", "rmsprop"], "TRAIN.OPTIMIZER"),
    (["TRAIN.BEGIN_EPOCH", "200"], "TRAIN.BEGIN_EPOCH"),  # END_EPOCH stays 140
    (["TRAIN.BEGIN_EPOCH", "140"], "TRAIN.BEGIN_EPOCH"),  # no epoch to train
    (["TRAIN.END_EPOCH", "0"], "TRAIN.END_EPOCH"),  # would save untrained weights
    (["TRAIN.BATCH_SIZE_PER_GPU", "-2"], "TRAIN.BATCH_SIZE_PER_GPU"),
    (["TRAIN.EMA_DECAY", "1.0"], "TRAIN.EMA_DECAY"),
    (["TRAIN.VALIDATE_EVERY", "0"], "TRAIN.VALIDATE_EVERY"),
    (["MODEL.IMAGE_SIZE", "[256]"], "MODEL.IMAGE_SIZE"),
    (["MODEL.IMAGE_SIZE", "[0, 256]"], "MODEL.IMAGE_SIZE"),
    (["MODEL.HEATMAP_SIZE", "[64.5, 64]"], "MODEL.HEATMAP_SIZE"),
    (["MODEL.NUM_JOINTS", "0"], "MODEL.NUM_JOINTS"),
    (["MODEL.SIGMA", "0"], "MODEL.SIGMA"),
    (["MODEL.TARGET_TYPE", "offset"], "MODEL.TARGET_TYPE"),
    (["MODEL.EXTRA.STEM_CHANNELS", "0"], "MODEL.EXTRA.STEM_CHANNELS"),
    (["LOSS.USE_OHKM", "True", "LOSS.TOPK", "20"], "LOSS.TOPK"),  # 17 joints
    (["PRINT_FREQ", "0"], "PRINT_FREQ"),
    (["WORKERS", "-1"], "WORKERS"),
    (["GPUS", "(-1,)"], "GPUS"),
    (["DATASET.PROB_HALF_BODY", "1.5"], "DATASET.PROB_HALF_BODY"),
    (["DATASET.PROB_NOISE", "1.5"], "DATASET.PROB_NOISE"),
    (["DATASET.PROB_BLUR", "-0.1"], "DATASET.PROB_BLUR"),
    (["DATASET.PROB_BRIGHTNESS_CONTRAST", "2.0"], "DATASET.PROB_BRIGHTNESS_CONTRAST"),
    (["DATASET.SCALE_FACTOR", "-0.25"], "DATASET.SCALE_FACTOR"),
    (["DATASET.ROT_FACTOR", "-30"], "DATASET.ROT_FACTOR"),
    (["DATASET.SHIFT_FACTOR", "-0.1"], "DATASET.SHIFT_FACTOR"),
    (["DATASET.NOISE_SIGMA", "-1.0"], "DATASET.NOISE_SIGMA"),
    (["DATASET.BBOX_PADDING", "0.0"], "DATASET.BBOX_PADDING"),
    (["DATASET.CACHE_IMAGES_MB", "-1"], "DATASET.CACHE_IMAGES_MB"),
    (["TEST.SUBPIXEL_METHOD", "bilinear"], "TEST.SUBPIXEL_METHOD"),
    (["TEST.ROTATION_VIEWS", "3"], "TEST.ROTATION_VIEWS"),
    (["MODEL.IMAGE_SIZE", "[192, 256]", "MODEL.HEATMAP_SIZE", "[48, 64]",
      "TEST.ROTATION_VIEWS", "4"], "TEST.ROTATION_VIEWS"),
    (["TEST.OKS_THRE", "1.5"], "TEST.OKS_THRE"),
    (["TEST.SPEED_BBOX", "detector"], "TEST.SPEED_BBOX"),
    (["TEST.SPEED_COARSE_BOX_ENLARGE", "-1.1"], "TEST.SPEED_COARSE_BOX_ENLARGE"),
    (["TEST.SPEED_CROP_CANDIDATES", "[1.5, 0.0]"], "TEST.SPEED_CROP_CANDIDATES"),
    (["TEST.SPEED_CROP_AGREEMENT_TOL", "0.0"], "TEST.SPEED_CROP_AGREEMENT_TOL"),
    (["TEST.SPEED_CROP_REFINE", "-1"], "TEST.SPEED_CROP_REFINE"),
    (["TEST.PNP_RANSAC_REPROJ_ERR", "0.0"], "TEST.PNP_RANSAC_REPROJ_ERR"),
    (["TEST.PNP_RANSAC_ITERS", "0"], "TEST.PNP_RANSAC_ITERS"),
    (["TEST.PNP_RANSAC_CONFIDENCE", "1.5"], "TEST.PNP_RANSAC_CONFIDENCE"),
    (["TEST.PNP_RANSAC_RETRIES", "-1"], "TEST.PNP_RANSAC_RETRIES"),
]


@pytest.mark.parametrize(("opts", "key"), BAD_VALUES, ids=[" ".join(o) for o, _ in BAD_VALUES])
def test_impossible_value_names_key_value_and_rule(opts, key):
    c = default_config()
    with pytest.raises(ConfigValueError) as err:
        merge_from_list(c, opts)
    message = str(err.value)
    assert message.startswith(("TRAIN.END_EPOCH", key))  # one problem, one line
    assert key in message and " must " in message and repr(_get(c, key)) in message


def test_every_experiment_file_and_the_defaults_pass_check_config():
    check_config(default_config())
    paths = sorted(glob.glob("experiments/**/*.yaml", recursive=True))
    assert len(paths) >= 19
    for path in paths:
        c = default_config()
        merge_from_file(c, path)  # checks
        check_config(c)


def test_config_value_error_is_a_value_error_listing_every_problem():
    c = default_config()
    with pytest.raises(ValueError, match=r"2 config values.*\n.*WORKERS .*\n.*TRAIN\.LR "):
        merge_from_list(c, ["TRAIN.LR", "-1.0", "WORKERS", "-2"])


def test_update_config_checks_once_after_file_and_options(tmp_path):
    late = tmp_path / "late_start.yaml"
    late.write_text("TRAIN:\n  BEGIN_EPOCH: 150\n")  # END_EPOCH 140 until the option below
    with pytest.raises(ConfigValueError, match="TRAIN.END_EPOCH must be greater than"):
        merge_from_file(default_config(), late)
    c = default_config()
    update_config(c, _args(str(late), ["TRAIN.END_EPOCH", "160"]))
    assert c.is_frozen() and c.TRAIN.BEGIN_EPOCH == 150
    with pytest.raises(ConfigValueError, match="TRAIN.LR must be at least 0, got -0.5"):
        update_config(default_config(), _args(str(late), ["TRAIN.END_EPOCH", "160",
                                                         "TRAIN.LR", "-0.5"]))
