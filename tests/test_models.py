"""Models: exact state_dict layout of the original experiments, shapes, generality, init, cost."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from yacs.config import CfgNode as CN

from lib.config import cfg as default_cfg
from lib.config import merge_from_file
from lib.models import UnknownModelError, build_model, pose_hrnet, pose_resnet
from lib.utils.checkpoint import CheckpointMismatchError, CheckpointNotFoundError
from lib.utils.model_summary import count_params_and_macs, get_model_summary, paper_gflops

REPO = Path(__file__).resolve().parents[1]
SCHEMA_FILE = Path('/work/shared/spec/official_state_dict_keys.json')
if not SCHEMA_FILE.is_file():  # a checkout outside the team machine
    SCHEMA_FILE = REPO / 'shared' / 'spec' / 'official_state_dict_keys.json'
SCHEMA = json.loads(SCHEMA_FILE.read_text()) if SCHEMA_FILE.is_file() else {}

W32 = 'coco/hrnet/w32_256x192_adam_lr1e-3.yaml'
RES50 = 'coco/resnet/res50_256x192_d256x3_adam_lr1e-3.yaml'


def experiment_cfg(name: str, **model_overrides) -> CN:
    cfg = default_cfg.clone()
    cfg.defrost()
    merge_from_file(cfg, REPO / 'experiments' / name)
    for key, value in model_overrides.items():
        cfg.MODEL[key] = value
    return cfg


def stage(num_modules, block, num_blocks, num_channels) -> dict:
    return {'NUM_MODULES': num_modules, 'NUM_BRANCHES': len(num_channels), 'BLOCK': block,
            'NUM_BLOCKS': num_blocks, 'NUM_CHANNELS': num_channels, 'FUSE_METHOD': 'SUM'}


def small_hrnet_cfg(**stages) -> CN:
    """Two stages, Bottleneck branches, three branches at the end, 3x3 head, 5 joints."""
    cfg = default_cfg.clone()
    cfg.defrost()
    extra = stages or {
        'STAGE2': stage(1, 'BOTTLENECK', [1, 1], [4, 8]),
        'STAGE3': stage(2, 'BOTTLENECK', [1, 2, 1], [4, 8, 16]),
    }
    cfg.MODEL.NUM_JOINTS = 5
    cfg.MODEL.EXTRA = CN({'FINAL_CONV_KERNEL': 3, 'PRETRAINED_LAYERS': ['*'], **extra},
                         new_allowed=True)
    return cfg


@pytest.mark.skipif(not SCHEMA, reason='official_state_dict_keys.json not available')
@pytest.mark.parametrize('experiment', sorted(SCHEMA))
def test_state_dict_equals_official_schema(experiment):
    cfg = experiment_cfg(experiment)
    with torch.device('meta'):  # shapes only: fast even for W48 and ResNet-152
        model = build_model(cfg, is_train=False)
    ours = [[key, list(tensor.shape)] for key, tensor in model.state_dict().items()]
    assert ours == SCHEMA[experiment]


@pytest.mark.parametrize('experiment, module_type', [(W32, pose_hrnet.PoseHighResolutionNet),
                                                     (RES50, pose_resnet.PoseResNet)])
def test_heatmaps_are_quarter_resolution(experiment, module_type):
    model = build_model(experiment_cfg(experiment), is_train=False).eval()
    assert isinstance(model, module_type)
    with torch.no_grad():
        heatmaps = model(torch.randn(2, 3, 96, 64))  # N x C x H x W, H != W on purpose
    assert heatmaps.shape == (2, 17, 24, 16)


def test_hrnet_rejects_input_size_its_branches_cannot_halve():
    model = build_model(experiment_cfg(W32), is_train=False)
    with pytest.raises(ValueError, match='multiples of 32'):
        model(torch.zeros(1, 3, 64, 48))


def test_custom_two_stage_bottleneck_hrnet_builds_and_runs():
    model = build_model(small_hrnet_cfg(), is_train=False).eval()
    keys = model.state_dict().keys()
    assert not any(key.startswith('stage4') or key.startswith('transition3') for key in keys)
    # Bottleneck branches: planes 4, output 4 * 4 = 16 channels
    assert model.stage2[0].branches[0][0].conv3.weight.shape == (16, 4, 1, 1)
    assert model.transition2[2][0][0].weight.shape == (64, 32, 3, 3)
    # the last module of the last stage only produces the highest-resolution output
    assert len(model.stage3[0].fuse_layers) == 3 and len(model.stage3[1].fuse_layers) == 1
    assert model.stage3[1].fuse_layers[0][2][0].weight.shape == (16, 64, 1, 1)
    assert model.final_layer.weight.shape == (5, 16, 3, 3)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 32))
    assert out.shape == (1, 5, 16, 8)


def test_transition_that_widens_existing_branches_feeds_each_its_own_input():
    cfg = small_hrnet_cfg(STAGE2=stage(1, 'BASIC', [1, 1], [4, 8]),
                          STAGE3=stage(1, 'BASIC', [1, 1, 1], [6, 12, 24]))
    model = build_model(cfg, is_train=False).eval()
    assert model.transition2[0][0].weight.shape == (6, 4, 3, 3)
    assert model.transition2[1][0].weight.shape == (12, 8, 3, 3)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5, 8, 8)


def test_fuse_layers_upsample_nearest_and_downsample_strided():
    module = pose_hrnet.HighResolutionModule(pose_resnet.BasicBlock, [1, 1, 1], [4, 8, 16],
                                             [4, 8, 16])
    upsample = module.fuse_layers[0][2]
    assert isinstance(upsample[2], nn.Upsample) and upsample[2].mode == 'nearest'
    assert upsample[2].scale_factor == 4
    down_two = module.fuse_layers[2][0]
    assert [unit[0].stride for unit in down_two] == [(2, 2), (2, 2)]
    assert isinstance(down_two[0][2], nn.ReLU) and len(down_two[1]) == 2  # no ReLU at the end
    outputs = module([torch.randn(1, 4, 8, 8), torch.randn(1, 8, 4, 4), torch.randn(1, 16, 2, 2)])
    assert [tuple(o.shape) for o in outputs] == [(1, 4, 8, 8), (1, 8, 4, 4), (1, 16, 2, 2)]
    assert all(bool((o >= 0).all()) for o in outputs)  # the fused sums are rectified


@pytest.mark.parametrize('edit, message', [
    (lambda s: s.update(NUM_CHANNELS=[4]), 'MODEL.EXTRA.STAGE2.NUM_CHANNELS has 1 entries'),
    (lambda s: s.update(BLOCK='WIDE'), 'MODEL.EXTRA.STAGE2.BLOCK must be one of'),
    (lambda s: s.update(FUSE_METHOD='CAT'), 'MODEL.EXTRA.STAGE2.FUSE_METHOD'),
])
def test_bad_stage_config_names_the_key(edit, message):
    cfg = small_hrnet_cfg()
    edit(cfg.MODEL.EXTRA.STAGE2)
    with pytest.raises(ValueError, match=message):
        build_model(cfg, is_train=False)


def test_unknown_model_name_lists_valid_ones():
    cfg = experiment_cfg(W32)
    cfg.MODEL.NAME = 'pose_vit'
    with pytest.raises(UnknownModelError, match=r"'pose_vit'.*pose_hrnet.*pose_resnet"):
        build_model(cfg, is_train=False)


def test_bad_resnet_depth_is_a_clear_error():
    cfg = experiment_cfg(RES50)
    cfg.MODEL.EXTRA.NUM_LAYERS = 42
    with pytest.raises(ValueError, match=r'MODEL.EXTRA.NUM_LAYERS must be one of \[18, 34'):
        build_model(cfg, is_train=False)


def assert_normal_init(model: nn.Module) -> None:
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert weights.std().item() == pytest.approx(0.001, rel=0.05)
    assert all(m.bias is None or not m.bias.any() for m in convs)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in norms)


def test_training_build_initialises_normal_without_pretrained_file():
    cfg = small_hrnet_cfg()
    cfg.MODEL.PRETRAINED = ''
    assert_normal_init(build_model(cfg, is_train=True))


def test_hrnet_pretrained_file_filtered_by_pretrained_layers(tmp_path, caplog):
    source = build_model(small_hrnet_cfg(), is_train=False)
    weights = {key: torch.full_like(value, 0.5) if value.is_floating_point() else value
               for key, value in source.state_dict().items()}
    weights['incre_modules.0.weight'] = torch.ones(3)  # ImageNet-only layer: no slot here
    path = tmp_path / 'imagenet.pth'
    torch.save({f'module.{key}': value for key, value in weights.items()}, path)

    cfg = small_hrnet_cfg()
    cfg.MODEL.EXTRA.PRETRAINED_LAYERS = ['conv1', 'bn1', 'layer1', 'incre_modules']
    cfg.MODEL.PRETRAINED = str(path)
    with caplog.at_level(logging.INFO):
        model = build_model(cfg, is_train=True)
    state = model.state_dict()
    assert bool((state['conv1.weight'] == 0.5).all())
    assert bool((state['layer1.3.conv3.weight'] == 0.5).all())
    assert state['stage2.0.branches.0.0.conv1.weight'].abs().max() < 0.05  # normal(0, 0.001)
    assert bool((state['bn2.weight'] == 1).all())
    loaded = sum(key.split('.')[0] in ('conv1', 'bn1', 'layer1') for key in weights)
    assert f'loaded {loaded} pretrained tensors' in caplog.text
    assert "'stage2'" in caplog.text and "'incre_modules'" in caplog.text


def test_pretrained_layer_of_other_shape_is_an_error(tmp_path):
    other = small_hrnet_cfg()
    other.MODEL.NUM_JOINTS = 9
    path = tmp_path / 'other.pth'
    torch.save(build_model(other, is_train=False).state_dict(), path)
    cfg = small_hrnet_cfg()
    cfg.MODEL.PRETRAINED = str(path)
    with pytest.raises(CheckpointMismatchError, match=r'final_layer.weight: checkpoint \[9'):
        build_model(cfg, is_train=True)


def test_missing_pretrained_file_names_path_and_key(tmp_path):
    cfg = small_hrnet_cfg()
    cfg.MODEL.PRETRAINED = str(tmp_path / 'nowhere.pth')
    with pytest.raises(ValueError, match=r"nowhere\.pth.*MODEL\.PRETRAINED") as caught:
        build_model(cfg, is_train=True)
    assert isinstance(caught.value, CheckpointNotFoundError)
    assert isinstance(caught.value, FileNotFoundError)
    build_model(cfg, is_train=False)  # testing never reads the ImageNet file


def test_pose_resnet_loads_torchvision_backbone_and_skips_classifier(tmp_path, caplog):
    torchvision = pytest.importorskip('torchvision')
    backbone = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / 'resnet18.pth'
    torch.save(backbone, path)
    cfg = experiment_cfg(RES50)
    cfg.MODEL.EXTRA.NUM_LAYERS = 18
    cfg.MODEL.EXTRA.NUM_DECONV_FILTERS = [16, 16, 16]
    cfg.MODEL.PRETRAINED = str(path)
    with caplog.at_level(logging.INFO):
        model = build_model(cfg, is_train=True)
    state = model.state_dict()
    assert torch.equal(state['layer4.1.conv2.weight'], backbone['layer4.1.conv2.weight'])
    assert torch.equal(state['bn1.running_var'], backbone['bn1.running_var'])
    assert state['deconv_layers.0.weight'].std().item() == pytest.approx(0.001, rel=0.1)
    assert not state['final_layer.bias'].any()
    assert f'loaded {len(backbone) - 2} pretrained tensors' in caplog.text
    assert "no such layer in the model, skipped: ['fc']" in caplog.text


def test_model_summary_counts_a_hand_checked_network():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Flatten(),
                        nn.Linear(8 * 4 * 4, 10))
    params, macs = count_params_and_macs(net, (2, 3, 4, 4))
    assert params == (8 * 3 * 9 + 8) + 16 + (128 * 10 + 10)
    assert macs == 8 * 3 * 9 * 16 + 128 * 10  # per sample, BN not counted
    _, with_bn = count_params_and_macs(net, (2, 3, 4, 4), count_batchnorm=True)
    assert with_bn == macs + 8 * 16
    deconv = nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1)
    assert count_params_and_macs(deconv, (1, 4, 5, 5))[1] == 4 * 2 * 16 * 10 * 10


def test_hrnet_w32_cost_matches_published_figures():
    """28.5M parameters and 7.1 GFLOPs at 256x192 (HRNet paper, Table 1), on a real forward."""
    model = build_model(experiment_cfg(W32), is_train=False)
    summary = get_model_summary(model, torch.zeros(1, 3, 256, 192))
    params, macs = count_params_and_macs(model, (1, 3, 256, 192))
    assert params == pytest.approx(28.5e6, rel=0.01)
    assert paper_gflops(macs) == pytest.approx(7.1, rel=0.01)
    assert f'Total Parameters: {params:,}' in summary and f'{macs:,}' in summary
    with torch.device('meta'):  # the shape-only path gives the same numbers
        assert count_params_and_macs(build_model(experiment_cfg(W32), False),
                                     (1, 3, 256, 192)) == (params, macs)


def test_pose_resnet50_cost_matches_published_figures():
    with torch.device('meta'):
        model = build_model(experiment_cfg(RES50), is_train=False)
    params, macs = count_params_and_macs(model, (1, 3, 256, 192))
    assert params == pytest.approx(34.0e6, rel=0.01)
    assert paper_gflops(macs) == pytest.approx(8.9, rel=0.015)


@pytest.mark.slow
def test_model_summary_tool_prints_params_and_gflops():
    result = subprocess.run(
        [sys.executable, 'tools/model_summary.py', '--cfg', f'experiments/{W32}',
         'MODEL.NUM_JOINTS', '16'],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
    )
    assert 'pose_hrnet 256x192 (HxW): 28.54M params, 7.12 GFLOPs' in result.stdout


def test_light_stem_and_layer1_are_configurable():
    cfg = small_hrnet_cfg()
    cfg.MODEL.EXTRA.STEM_CHANNELS = 16
    cfg.MODEL.EXTRA.LAYER1_PLANES = 8
    cfg.MODEL.EXTRA.LAYER1_BLOCKS = 1
    model = build_model(cfg, is_train=False).eval()
    assert model.conv2.weight.shape == (16, 16, 3, 3)
    assert len(model.layer1) == 1 and model.layer1[0].conv3.weight.shape == (32, 8, 1, 1)
    assert model.transition1[0][0].weight.shape == (4 * 4, 32, 3, 3)  # Bottleneck planes 4
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 32)).shape == (1, 5, 16, 8)
    cfg.MODEL.EXTRA.LAYER1_BLOCKS = 0
    with pytest.raises(ValueError, match='LAYER1_BLOCKS'):
        build_model(cfg, is_train=False)
