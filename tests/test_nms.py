"""lib.nms: box NMS engines agree, OKS values and keep lists match the original algorithm."""

import logging
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from lib.nms import COCO_SIGMAS, box_nms, nms, oks_iou, oks_nms, soft_oks_nms
from lib.nms.oks_nms import _oks_iou_loop, _oks_nms_loop

needs_extension = pytest.mark.skipif(
    box_nms._cpu_nms is None,
    reason="lib.nms.cpu_nms extension not built: run `make setup` (or make -C lib PYTHON=...)",
)

# Four boxes in inclusive pixel coordinates. With the +1 convention every box below covers
# 10 pixels per side except D (10 x 5):
#   A-B: intersection 5 x 10 = 50, union 150 -> IoU 1/3   (without +1: 36 / 126 = 0.286)
#   A-D: intersection 10 x 5 = 50, union 100 -> IoU 0.5 exactly
#   B-D: intersection 5 x 5 = 25,  union 125 -> IoU 0.2
#   C is disjoint from all and has the best score.
HAND_DETS = np.array(
    [
        [0, 0, 9, 9, 0.9],  # A
        [5, 0, 14, 9, 0.8],  # B
        [20, 20, 29, 29, 0.95],  # C
        [0, 0, 9, 4, 0.7],  # D
    ]
)
HAND_EXPECTED = {
    0.3: [2, 0],  # B (1/3) and D (0.5) both suppressed by A; would keep B without the +1
    0.49: [2, 0, 1],  # B survives, D (0.5) does not
    0.5: [2, 0, 1, 3],  # IoU equal to the threshold is kept
}


def _random_dets(seed: int, count: int = 300) -> np.ndarray:
    rng = np.random.default_rng(seed)
    corners = rng.uniform(0, 200, size=(count, 2))
    sizes = rng.uniform(5, 60, size=(count, 2))
    scores = rng.permutation(count) / count + 0.001  # distinct: no tie-order ambiguity
    return np.column_stack([corners, corners + sizes, scores])


def _engines() -> dict:
    engines = {
        "numpy": box_nms._nms_numpy,
        "torchvision": lambda dets, t: box_nms._nms_torchvision(torch.from_numpy(dets), t),
    }
    if box_nms._cpu_nms is not None:
        engines["cython"] = box_nms._nms_cython
    return engines


# ----------------------------------------------------------------------------- box NMS


@pytest.mark.parametrize("thresh", sorted(HAND_EXPECTED))
def test_box_nms_hand_case_every_engine(thresh):
    for name, engine in _engines().items():
        assert engine(HAND_DETS, thresh) == HAND_EXPECTED[thresh], name
    assert nms(HAND_DETS, thresh) == HAND_EXPECTED[thresh]
    assert nms(torch.from_numpy(HAND_DETS).float(), thresh) == HAND_EXPECTED[thresh]


@needs_extension
def test_cython_engine_is_built_and_used_for_numpy(monkeypatch):
    calls = []
    real = box_nms._cpu_nms

    def spy(dets, thresh):
        calls.append(dets.shape)
        return real(dets, thresh)

    monkeypatch.setattr(box_nms, "_cpu_nms", spy)
    read_only = HAND_DETS.copy()
    read_only.setflags(write=False)  # the extension takes a const memoryview
    assert nms(read_only, 0.3) == [2, 0]
    assert calls == [(4, 5)]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("thresh", [0.0, 0.3, 0.7])
def test_box_nms_engines_agree_on_random_boxes(seed, thresh):
    dets = _random_dets(seed)
    results = {name: engine(dets, thresh) for name, engine in _engines().items()}
    reference = results["numpy"]
    assert 1 < len(reference) < len(dets)  # the case really suppresses something
    assert sorted(reference, key=lambda i: -dets[i, 4]) == reference
    for name, keep in results.items():
        assert keep == reference, name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_box_nms_cuda_tensor_matches_numpy():
    dets = _random_dets(7)
    for thresh in (0.3, 0.7):
        assert nms(torch.from_numpy(dets).cuda(), thresh) == box_nms._nms_numpy(dets, thresh)


def test_box_nms_empty_input():
    assert nms(np.zeros((0, 5)), 0.5) == []
    assert nms([], 0.5) == []
    assert nms(torch.zeros((0, 5)), 0.5) == []


@pytest.mark.parametrize("bad", [np.zeros((3, 4)), np.zeros(5), np.zeros((2, 5, 1))])
def test_box_nms_rejects_wrong_shape(bad):
    with pytest.raises(ValueError, match="N x 5"):
        nms(bad, 0.5)
    with pytest.raises(ValueError, match="N x 5"):
        nms(torch.from_numpy(bad), 0.5)


def test_numpy_fallback_logs_once(monkeypatch, caplog):
    monkeypatch.setattr(box_nms, "_cpu_nms", None)
    box_nms._log_missing_extension.cache_clear()
    with caplog.at_level(logging.WARNING, logger="lib.nms.box_nms"):
        assert nms(HAND_DETS, 0.3) == [2, 0]
        assert nms(HAND_DETS, 0.5) == [2, 0, 1, 3]
    messages = [r.getMessage() for r in caplog.records if r.name == "lib.nms.box_nms"]
    assert len(messages) == 1
    assert "make -C lib" in messages[0] and "make setup" in messages[0]
    box_nms._log_missing_extension.cache_clear()


def test_numpy_callers_do_not_import_torch():
    code = (
        "import sys, numpy as np; from lib.nms import nms, oks_nms; "
        "nms(np.array([[0, 0, 9, 9, 1.0]]), 0.5); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ----------------------------------------------------------------------------- OKS


def test_oks_iou_hand_computed():
    # sigmas 0.1, 0.2 -> variances (2 sigma)^2 = 0.04, 0.16; both areas 100 -> scale 100.
    # candidate 0: joint 0 off by 1 px -> e = 1 / 0.04 / 100 / 2 = 0.125,
    #              joint 1 off by 3 px -> e = 9 / 0.16 / 100 / 2 = 0.28125.
    g = np.array([0, 0, 1, 10, 10, 1], dtype=float)
    d = np.array([[1, 0, 1, 10, 13, 1], [1, 0, 1, 10, 13, 0.1]], dtype=float)
    sigmas = [0.1, 0.2]
    expected = (math.exp(-0.125) + math.exp(-0.28125)) / 2
    np.testing.assert_allclose(oks_iou(g, d, 100, [100, 100], sigmas), [expected, expected])
    # in_vis_thre keeps only joints whose candidate score exceeds it: candidate 1 drops joint 1.
    np.testing.assert_allclose(
        oks_iou(g, d, 100, np.array([100, 100]), sigmas, in_vis_thre=0.5),
        [expected, math.exp(-0.125)],
    )
    # J x 3 / M x J x 3 layouts give the same numbers as the original's flat layout.
    np.testing.assert_allclose(
        oks_iou(g.reshape(2, 3), d.reshape(2, 2, 3), 100, 100, sigmas), [expected, expected]
    )


def test_oks_iou_visibility_uses_candidate_only_like_original():
    # The original's `list(vg > t) and list(vd > t)` evaluates to the candidate's mask alone.
    g = np.array([0, 0, 0.0, 10, 10, 0.0])  # reference joints all "invisible"
    d = np.array([[1, 0, 1, 10, 13, 0]], dtype=float)
    got = oks_iou(g, d, 100, [100], [0.1, 0.2], in_vis_thre=0.5)
    np.testing.assert_allclose(got, [math.exp(-0.125)])
    no_visible = oks_iou(g, d[:, [0, 1, 5, 3, 4, 5]], 100, [100], [0.1, 0.2], in_vis_thre=0.5)
    assert no_visible.tolist() == [0.0]


def test_oks_iou_default_sigmas_are_coco():
    assert COCO_SIGMAS[0] == pytest.approx(0.026)
    assert COCO_SIGMAS.shape == (17,)
    g = np.zeros((17, 3))
    d = g.copy()[None]
    d[0, 0, 0] = 1.0  # nose moved 1 px: e = 1 / 0.052^2 / 100 / 2
    expected = (16 + math.exp(-1 / 0.052**2 / 100 / 2)) / 17
    np.testing.assert_allclose(oks_iou(g, d, 100, 100), [expected])


def test_oks_iou_vectorised_equals_loop():
    rng = np.random.default_rng(3)
    kpts = rng.uniform(0, 60, size=(30, 17, 3)).astype(np.float32)
    areas = rng.uniform(500, 3000, size=30).astype(np.float32)
    for vis in (None, 0.3):
        fast = oks_iou(kpts[0], kpts[1:], areas[0], areas[1:], in_vis_thre=vis)
        loop = _oks_iou_loop(
            kpts[0].ravel(), kpts[1:].reshape(29, -1), areas[0], areas[1:], in_vis_thre=vis
        )
        assert 0.05 < fast.mean() < 0.95
        np.testing.assert_allclose(fast, loop, rtol=0, atol=1e-15)
        if vis is None:  # same reduction order: bit-identical
            assert np.array_equal(fast, loop)


def _pose(rng, origin) -> np.ndarray:
    joints = rng.uniform(0, [50, 100], size=(17, 2)) + origin
    return np.column_stack([joints, rng.uniform(0.5, 1.0, size=17)])


def _entry(keypoints, score, area=5000.0) -> dict:
    return {"keypoints": keypoints, "score": score, "area": area}


def test_oks_nms_duplicated_people():
    rng = np.random.default_rng(0)
    people = {name: _pose(rng, (x, 0)) for name, x in (("a", 0), ("b", 300), ("c", 600))}
    jitter = np.zeros((17, 3))
    jitter[:, :2] = 0.5  # half-pixel offset in x and y: OKS 0.994 between the copies
    kpts_db = [
        _entry(people["a"], 0.6),
        _entry(people["b"], 0.95),
        _entry(people["a"] + jitter, 0.8),
        _entry(people["c"], 0.3),
        _entry(people["b"] + jitter, 0.4),
        _entry(people["c"] + jitter, 0.35),
    ]
    assert oks_nms(kpts_db, 0.9) == [1, 2, 5]
    assert _oks_nms_loop(kpts_db, 0.9) == [1, 2, 5]
    assert oks_nms(kpts_db, 0.995) == [1, 2, 0, 4, 5, 3]  # nothing overlaps that much
    assert oks_nms([], 0.9) == []


def _random_kpts_db(seed: int) -> list:
    """Crowded poses: a few people, each detected several times with varying noise."""
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 40))
    people = [_pose(rng, rng.uniform(0, 60, size=2)) for _ in range(int(rng.integers(1, 5)))]
    dtype = np.float32 if seed % 2 else np.float64
    kpts_db = []
    for _ in range(count):
        keypoints = people[rng.integers(len(people))].copy()
        keypoints[:, :2] += rng.normal(0, rng.uniform(0.5, 6), size=(17, 2))
        keypoints[:, 2] = rng.uniform(0, 1, size=17)
        area = rng.uniform(1000, 8000)
        kpts_db.append(_entry(keypoints.astype(dtype), dtype(rng.uniform()), dtype(area)))
    return kpts_db


def test_oks_nms_vectorised_equals_loop_on_random_data():
    suppressed_something = kept_several = 0
    for seed in range(60):
        kpts_db = _random_kpts_db(seed)
        for thresh in (0.3, 0.6, 0.9):
            for vis in (None, 0.2):
                keep = oks_nms(kpts_db, thresh, in_vis_thre=vis)
                assert keep == _oks_nms_loop(kpts_db, thresh, in_vis_thre=vis), (seed, thresh)
                suppressed_something += len(keep) < len(kpts_db)
                kept_several += len(keep) > 1
    assert suppressed_something > 200 and kept_several > 200  # the cases are not trivial


def test_oks_survivors_equal_the_full_matrix_decisions():
    from lib.nms.oks_nms import _oks_block, _oks_survivors

    for seed in range(20):
        kpts_db = _random_kpts_db(seed)
        kpts = np.array([e["keypoints"] for e in kpts_db])
        areas = np.array([e["area"] for e in kpts_db])
        for vis in (None, 0.2):
            full = _oks_block(kpts, kpts, areas, areas, COCO_SIGMAS, vis)
            for thresh in (0.3, 0.6, 0.9, 1.0):
                fast = _oks_survivors(kpts, areas, COCO_SIGMAS, vis, thresh)
                assert np.array_equal(fast, full <= thresh), (seed, vis, thresh)


# ----------------------------------------------------------------------------- soft OKS NMS


def test_soft_oks_nms_rescored_order():
    # One joint, sigma 0.5 (variance 1) and areas 0.5 make OKS = exp(-dx^2) (up to eps).
    # Soft threshold 0.5: score *= exp(-oks^2 / 0.5).
    #   pick P0 (x=0, 1.0). P1 (x=0.1): oks .990 -> .9 * exp(-1.960) = .127
    #                       P2 (x=3):   oks 1e-4 -> .5 (unchanged)
    #                       P3 (x=1):   oks .368 -> .6 * exp(-.271) = .458
    #   pick P2. P3: oks exp(-4) -> .458; P1: oks exp(-8.41) -> .127
    #   pick P3. P1: oks exp(-.81) = .445 -> .127 * exp(-.396) = .086; pick P1.
    xs_scores = [(0.0, 1.0), (0.1, 0.9), (3.0, 0.5), (1.0, 0.6)]
    kpts_db = [_entry(np.array([[x, 0.0, 1.0]]), s, 0.5) for x, s in xs_scores]
    assert soft_oks_nms(kpts_db, 0.5, sigmas=[0.5]) == [0, 2, 3, 1]
    assert soft_oks_nms(kpts_db, 0.5, sigmas=[0.5], max_dets=2) == [0, 2]
    # Hard NMS at 0.5 only drops P1 (oks .99) and keeps score order: P3 before P2.
    assert oks_nms(kpts_db, 0.5, sigmas=[0.5]) == [0, 3, 2]
    assert soft_oks_nms([], 0.5) == []


def test_soft_oks_nms_keeps_at_most_twenty():
    rng = np.random.default_rng(1)
    scores = rng.permutation(25) / 25 + 0.01
    kpts_db = [_entry(_pose(rng, (400 * i, 0)), s) for i, s in enumerate(scores)]  # far apart
    keep = soft_oks_nms(kpts_db, 0.9)
    assert keep == list(np.argsort(-scores)[:20])


# ----------------------------------------------------------------------------- bad input


def test_oks_errors_name_the_problem():
    good = np.zeros((17, 3))
    with pytest.raises(ValueError, match=r"kpts_db\[1\]\['keypoints'\] must be J x 3"):
        oks_nms([_entry(good, 1.0), _entry(np.zeros((17, 2)), 0.5)], 0.9)
    with pytest.raises(ValueError, match="J x 3"):
        soft_oks_nms([_entry(np.zeros(51), 1.0)], 0.9)
    with pytest.raises(ValueError, match=r"has 14 joints, kpts_db\[0\] has 17"):
        oks_nms([_entry(good, 1.0), _entry(np.zeros((14, 3)), 0.5)], 0.9)
    with pytest.raises(ValueError, match="sigmas have shape"):
        oks_nms([_entry(good, 1.0)], 0.9, sigmas=np.ones(5))
    with pytest.raises(ValueError, match="default COCO sigmas"):
        oks_nms([_entry(np.zeros((16, 3)), 1.0)], 0.9)
    with pytest.raises(KeyError, match="area"):
        oks_nms([{"keypoints": good, "score": 1.0}], 0.9)
    with pytest.raises(ValueError, match="one area per candidate"):
        oks_iou(good, good[None], 1.0, [1.0, 2.0])
    with pytest.raises(ValueError, match="M x 3J"):
        oks_iou(good.ravel(), np.zeros((2, 50)), 1.0, [1.0, 2.0])
