"""Builders and fixtures shared by the test modules, so that each exists once.

- ``make_cfg(base, overrides)``: a frozen config from the defaults, a CfgNode or an experiment
  file, with dotted-key overrides merged the way the command line merges them.
- ``speed_cfg``: the 11-landmark, 64 x 64 spacecraft setting over the shared rendered set.
- ``speed_root``: one small SPEED+-layout set rendered once per session; tests read it, and
  copy it (``shutil.copytree``) before changing anything in it.
- ``run_tool(script, *args)``: a repository script in a fresh interpreter.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from yacs.config import CfgNode

from lib.config import default_config, merge_from_file, merge_from_list

REPO = Path(__file__).resolve().parents[1]

# The shared rendered set: write_speed_synthetic's arguments (train / validation / test images).
SPEED_SET = {"num_train": 6, "num_val": 4, "num_test": 3, "seed": 11, "width": 320, "height": 200}
# A tiny HRNet (4 branches of 4..32 channels, one module per stage) at 64 x 96 input, as
# command-line overrides of a COCO HRNet experiment file: the tools' end-to-end tests train it.
TINY_HRNET = [
    "MODEL.INIT_WEIGHTS", "False", "MODEL.PRETRAINED", "''",
    "MODEL.IMAGE_SIZE", "[64, 96]", "MODEL.HEATMAP_SIZE", "[16, 24]",
    "MODEL.EXTRA.STAGE2.NUM_CHANNELS", "[4, 8]", "MODEL.EXTRA.STAGE2.NUM_BLOCKS", "[1, 1]",
    "MODEL.EXTRA.STAGE3.NUM_MODULES", "1", "MODEL.EXTRA.STAGE3.NUM_CHANNELS", "[4, 8, 16]",
    "MODEL.EXTRA.STAGE3.NUM_BLOCKS", "[1, 1, 1]",
    "MODEL.EXTRA.STAGE4.NUM_MODULES", "1", "MODEL.EXTRA.STAGE4.NUM_CHANNELS",
    "[4, 8, 16, 32]", "MODEL.EXTRA.STAGE4.NUM_BLOCKS", "[1, 1, 1, 1]",
]
SPEED_CFG = {
    "DATASET.DATASET": "speed", "DATASET.KEYPOINTS_FILE": "keypoints.json",
    "DATASET.TEST_SET": "validation", "DATASET.FLIP": False, "WORKERS": 0,
    "MODEL.NUM_JOINTS": 11, "MODEL.IMAGE_SIZE": [64, 64], "MODEL.HEATMAP_SIZE": [16, 16],
}

Overrides = Mapping[str, Any] | Sequence[Any] | None


def build_cfg(base: CfgNode | str | os.PathLike | None = None,
              overrides: Overrides = None) -> CfgNode:
    """A frozen config: `base` (None: the defaults; a CfgNode: a copy of it; a path: that
    experiment file over the defaults, relative to the repository), then `overrides`.

    Overrides go through lib.config.merge_from_list, as `KEY VALUE` pairs do on the command
    line: dotted keys, an unknown key is an error naming it, a string value is decoded like
    YAML ("[64, 64]", "True") and a value of the wrong type is refused. They come as a mapping
    ``{"TEST.USE_GT_BBOX": True}`` or as a flat list ``["TEST.USE_GT_BBOX", "True"]``.
    The values are not run through check_config: tests hand wrong values on purpose to the
    code that must refuse them (check_config has its own tests in test_config.py).
    """
    if base is None or isinstance(base, (str, os.PathLike)):
        cfg = default_config()
        if base is not None:
            merge_from_file(cfg, REPO / base, check=False)
    else:
        cfg = base.clone()
    cfg.defrost()
    if isinstance(overrides, Mapping):
        overrides = [item for pair in overrides.items() for item in pair]
    merge_from_list(cfg, overrides or [], check=False)
    cfg.freeze()
    return cfg


@pytest.fixture(scope="session")
def make_cfg() -> Callable[..., CfgNode]:
    """build_cfg, for tests and fixtures: ``make_cfg(base, {"SECTION.KEY": value})``."""
    return build_cfg


@pytest.fixture(scope="session")
def speed_set_args() -> dict[str, Any]:
    """The arguments the shared set was rendered with (to render it again, or a variant)."""
    return dict(SPEED_SET)


@pytest.fixture(scope="session")
def speed_root(tmp_path_factory: pytest.TempPathFactory, speed_set_args: dict) -> Path:
    """The shared SPEED+-layout set: 6 train, 4 validation (img000007-10), 3 unlabelled test
    images of 320 x 200 with camera.json, keypoints.json and test/labels.json."""
    from lib.spacecraft.renderer import write_speed_synthetic

    root = tmp_path_factory.mktemp("speed_set")
    write_speed_synthetic(root, show_progress=False, **speed_set_args)
    return root


@pytest.fixture(scope="session")
def speed_cfg(speed_root: Path) -> CfgNode:
    """The spacecraft setting of the tests (11 landmarks, 64 x 64 input, 16 x 16 heatmaps, no
    workers) with DATASET.ROOT at the shared set; build variants with make_cfg(speed_cfg, ...)."""
    return build_cfg(None, {**SPEED_CFG, "DATASET.ROOT": str(speed_root)})


def load_script(script: str, monkeypatch: pytest.MonkeyPatch | None = None,
                module_name: str | None = None) -> ModuleType:
    """A tool or plotting script (``script``: its path in the repository, e.g.
    'tools/speed_demo.py') as a module, its folder on sys.path as when it runs (for the test
    alone with ``monkeypatch``)."""
    path = REPO / script
    if monkeypatch is not None:
        monkeypatch.syspath_prepend(str(path.parent))
    else:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(module_name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_tool(script: str | os.PathLike, *args: Any, check: bool = True,
              env: Mapping[str, str] | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `script` (a path relative to the repository, e.g. 'tools/speed_score.py') with
    `args` (turned into strings) from the repository root, one OpenMP thread, no progress bars.
    With `check`, a non-zero exit fails the test showing the tool's output."""
    command = [sys.executable, str(REPO / script), *map(str, args)]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1", **(env or {})}
    done = subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{script} exited with {done.returncode}:\n{done.stdout[-2000:]}\n"
                             f"{done.stderr[-4000:]}")
    return done


@pytest.fixture(scope="session")
def run_tool() -> Callable[..., subprocess.CompletedProcess]:
    """_run_tool: ``run_tool("tools/speed_score.py", "--gt", path, check=False)``."""
    return _run_tool


@pytest.fixture(scope="session")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small COCO layout (4 train, 2 val images) for the tools' command-line tests; a module
    may define its own ``coco_root`` when it needs another size."""
    from datagen import make_coco_fixture

    root = tmp_path_factory.mktemp("coco")
    make_coco_fixture(root, "train2017", num_images=4, seed=1)
    make_coco_fixture(root, "val2017", num_images=2, seed=2)
    return root
