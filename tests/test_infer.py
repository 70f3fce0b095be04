"""tools/infer.py on fixture images: the keypoints of tools/test.py for the same boxes."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import load_script
from datagen import make_coco_fixture
from torch import nn

from lib.config import cfg as default_cfg
from lib.config import merge_from_file, merge_from_list
from lib.models import build_model

pytestmark = pytest.mark.slow  # tools/infer.py end to end with trained tiny models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = "experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml"
TINY = ["MODEL.IMAGE_SIZE", "[64, 96]", "MODEL.HEATMAP_SIZE", "[16, 24]",
        "MODEL.EXTRA.STAGE2.NUM_CHANNELS", "[8, 16]", "MODEL.EXTRA.STAGE3.NUM_MODULES", "1",
        "MODEL.EXTRA.STAGE3.NUM_CHANNELS", "[8, 16, 32]", "MODEL.EXTRA.STAGE4.NUM_MODULES", "1",
        "MODEL.EXTRA.STAGE4.NUM_CHANNELS", "[8, 16, 32, 64]"]


def _run(script, args):
    env = dict(os.environ, OMP_NUM_THREADS="1", CI="1")
    proc = subprocess.run([sys.executable, script, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    c = default_cfg.clone()
    merge_from_file(c, CFG)
    merge_from_list(c, TINY)
    torch.manual_seed(0)
    model = build_model(c, is_train=False)
    for m in model.modules():  # peaked, input-dependent heatmaps instead of near-zero noise
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    torch.save(model.state_dict(), path)
    return path


def test_infer_equals_test_py_for_the_same_boxes(tmp_path, weights):
    fixture = make_coco_fixture(tmp_path / "coco", "val2017", num_images=3, seed=4)
    common = TINY + ["DATASET.ROOT", str(tmp_path / "coco"), "TEST.MODEL_FILE", str(weights),
                     "WORKERS", "0", "GPUS", "(0,)", "TEST.IMAGE_THRE", "0.0"]
    _run("tools/test.py", ["--cfg", CFG, *common, "OUTPUT_DIR", str(tmp_path / "out"),
                           "LOG_DIR", str(tmp_path / "log"), "TEST.USE_GT_BBOX", "False",
                           "TEST.COCO_BBOX_FILE", fixture["det_file"], "TEST.OKS_THRE", "1.0",
                           "DEBUG.DEBUG", "False"])
    results_file = (tmp_path / "out" / "coco" / "pose_hrnet" / "w32_256x192_adam_lr1e-3"
                    / "results" / "keypoints_val2017_results_0.json")
    with open(results_file) as f:
        evaluated = json.load(f)

    infer_out = tmp_path / "infer"
    _run("tools/infer.py", ["--cfg", CFG, "--image", fixture["image_dir"], "--bbox-file",
                            fixture["det_file"], "--out", str(infer_out), *common])
    with open(infer_out / "predictions.json") as f:
        inferred = json.load(f)

    assert len(inferred) == len(evaluated) > 0  # OKS_THRE 1.0: NMS keeps every box
    by_image = {}
    for rec in inferred:
        image_id = int(os.path.basename(rec["image"]).split(".")[0])
        by_image.setdefault(image_id, []).append(np.asarray(rec["keypoints"]))
    for res in evaluated:
        kpts = np.asarray(res["keypoints"]).reshape(-1, 3)
        distances = [np.abs(k[:, :2] - kpts[:, :2]).max() for k in by_image[res["image_id"]]]
        assert min(distances) < 1e-2
    assert len(list(infer_out.glob("*.png"))) == 3

    # TEST.RUNTIME onnxruntime: both tools, the same keypoints as the PyTorch runs
    pytest.importorskip("onnxruntime")
    onnx = ["TEST.RUNTIME", "onnxruntime"]
    _run("tools/infer.py", ["--cfg", CFG, "--image", fixture["image_dir"], "--bbox-file",
                            fixture["det_file"], "--out", str(tmp_path / "infer_onnx"),
                            *common, *onnx])
    with open(tmp_path / "infer_onnx" / "predictions.json") as f:
        inferred_onnx = json.load(f)
    for torch_rec, onnx_rec in zip(inferred, inferred_onnx, strict=True):
        assert onnx_rec["bbox"] == torch_rec["bbox"]
        np.testing.assert_allclose(onnx_rec["keypoints"], torch_rec["keypoints"], atol=2e-3,
                                   rtol=1e-5)  # confidences here reach ~1e3
    proc = _run("tools/test.py", ["--cfg", CFG, *common, *onnx, "OUTPUT_DIR",
                                  str(tmp_path / "out_onnx"), "LOG_DIR", str(tmp_path / "log"),
                                  "TEST.USE_GT_BBOX", "False", "TEST.COCO_BBOX_FILE",
                                  fixture["det_file"], "TEST.OKS_THRE", "1.0"])
    assert "runs in onnxruntime" in proc.stdout + proc.stderr
    onnx_results = str(results_file).replace(str(tmp_path / "out"), str(tmp_path / "out_onnx"))
    with open(onnx_results) as f:
        evaluated_onnx = json.load(f)
    for torch_res, onnx_res in zip(evaluated, evaluated_onnx, strict=True):
        assert onnx_res["image_id"] == torch_res["image_id"]
        np.testing.assert_allclose(onnx_res["keypoints"], torch_res["keypoints"], atol=2e-3,
                                   rtol=1e-5)


def test_infer_skips_unreadable_images(tmp_path, weights):
    fixture = make_coco_fixture(tmp_path / "coco", "val2017", num_images=1, seed=5)
    images = tmp_path / "images"
    images.mkdir()
    src = os.path.join(fixture["image_dir"], os.listdir(fixture["image_dir"])[0])
    shutil.copy(src, images / "good.jpg")
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    proc = _run("tools/infer.py", ["--cfg", CFG, "--image", str(images), "--out",
                                   str(tmp_path / "o"), *TINY, "TEST.MODEL_FILE", str(weights),
                                   "WORKERS", "0"])
    assert "skipped" in proc.stderr and "broken.jpg" in proc.stderr
    with open(tmp_path / "o" / "predictions.json") as f:
        records = json.load(f)
    assert len(records) == 1 and len(records[0]["keypoints"]) == 17


def test_infer_spacecraft_two_stage(tmp_path):
    from lib.spacecraft.renderer import write_speed_synthetic

    root = tmp_path / "speed"
    write_speed_synthetic(str(root), 1, 1, 3, seed=3, width=320, height=200,
                          show_progress=False)
    weights = {}
    for stage in ("coarse", "fine"):
        c = default_cfg.clone()
        merge_from_file(c, f"experiments/speed/hrnet/demo_{stage}.yaml")
        torch.manual_seed(0)
        weights[stage] = tmp_path / f"{stage}.pth"
        torch.save(build_model(c, is_train=False).state_dict(), weights[stage])
    out = tmp_path / "out"
    proc = _run("tools/infer.py", [
        "--cfg", "experiments/speed/hrnet/demo_fine.yaml", "--image", str(root / "test" / "images"),
        "--out", str(out), "DATASET.ROOT", str(root), "TEST.MODEL_FILE", str(weights["fine"]),
        "TEST.SPEED_COARSE_MODEL_FILE", str(weights["coarse"]), "WORKERS", "0"])
    assert "3 predictions for 3 images" in proc.stdout
    with open(out / "predictions.json") as f:
        records = json.load(f)
    for record in records:
        x, y, w, h = record["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 320 and y + h <= 200
        assert len(record["keypoints"]) == 11 and len(record["q"]) == 4 and len(record["r"]) == 3
        assert isinstance(record["success"], bool)
    assert len(list(out.glob("*.png"))) == 3


def _infer_module():
    """tools/infer.py as a module (it imports its siblings as scripts)."""
    return load_script("tools/infer.py", module_name="hrnet_infer")


def test_list_images_names_a_path_with_nothing_to_read(tmp_path, capsys):
    import cv2

    from lib.utils.io import UserFileError

    infer = _infer_module()
    folder = tmp_path / "frames"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match=f"no images to read in the folder {folder} "):
        infer.list_images(str(folder))
    cv2.imwrite(str(folder / "b.png"), np.zeros((4, 6, 3), np.uint8))
    cv2.imwrite(str(folder / "a.JPG"), np.zeros((4, 6, 3), np.uint8))
    (folder / "c.jpg").write_bytes(b"half a copy")
    (folder / "notes.txt").write_text("not an image")
    # readable images only, sorted; the unreadable one named on stderr
    assert infer.list_images(str(folder)) == [str(folder / "a.JPG"), str(folder / "b.png")]
    assert f"skipped {folder / 'c.jpg'}: not a readable image" in capsys.readouterr().err
    assert infer.list_images(str(folder / "b.png")) == [str(folder / "b.png")]
    with pytest.raises(UserFileError, match="notes.txt is not an image OpenCV can read"):
        infer.list_images(str(folder / "notes.txt"))
    with pytest.raises(UserFileError, match="no readable image to infer on: .*c.jpg"):
        infer.readable_images([str(folder / "c.jpg")])
    assert infer.readable_images([str(folder / "b.png")]) == [(str(folder / "b.png"), 6, 4)]
