"""Checkpoint files: safe loading, strict loading with clear errors, conversion, atomic writes."""

import argparse
import errno
from collections.abc import Callable

import numpy as np
import pytest
import torch

from lib.models import build_model
from lib.utils.checkpoint import (
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    NonFiniteWeightsError,
    UnsafeCheckpointError,
    extract_state_dict,
    load_checkpoint_file,
    load_state_dict_strict,
    load_weights_file,
    remove_stale_temp_files,
    save_atomic,
)
from lib.utils.utils import save_checkpoint

# A two-branch HRNet of 4 and 8 channels, and a PoseResNet-18 with one 8-filter deconvolution.
SMALL_HRNET = {'MODEL.EXTRA': {
    'FINAL_CONV_KERNEL': 1,
    'STAGE2': {'NUM_MODULES': 1, 'NUM_BRANCHES': 2, 'BLOCK': 'BASIC', 'NUM_BLOCKS': [1, 1],
               'NUM_CHANNELS': [4, 8], 'FUSE_METHOD': 'SUM'}}}
SMALL_RESNET = {'MODEL.NAME': 'pose_resnet', 'MODEL.EXTRA': {
    'NUM_LAYERS': 18, 'DECONV_WITH_BIAS': False, 'NUM_DECONV_LAYERS': 1,
    'NUM_DECONV_FILTERS': [8], 'NUM_DECONV_KERNELS': [4], 'FINAL_CONV_KERNEL': 1}}


@pytest.fixture
def small_hrnet(make_cfg) -> Callable[..., torch.nn.Module]:
    """small_hrnet(num_joints=5): a freshly initialised small HRNet per call."""
    def build(num_joints: int = 5) -> torch.nn.Module:
        cfg = make_cfg(None, {**SMALL_HRNET, 'MODEL.NUM_JOINTS': num_joints})
        return build_model(cfg, is_train=False)
    return build


@pytest.fixture
def small_resnet(make_cfg) -> torch.nn.Module:
    return build_model(make_cfg(None, SMALL_RESNET), is_train=False)


def randomised(model: torch.nn.Module) -> dict:
    generator = torch.Generator().manual_seed(0)
    return {key: torch.randn(value.shape, generator=generator) if value.is_floating_point()
            else value + 7 for key, value in model.state_dict().items()}


def assert_same_state(model: torch.nn.Module, expected: dict) -> None:
    state = model.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[key], expected[key]) for key in expected)


@pytest.mark.parametrize('prefix', ['', 'module.'])
def test_strict_load_of_saved_state_dict(small_hrnet, tmp_path, prefix):
    weights = randomised(small_hrnet())
    path = tmp_path / 'model_best.pth'
    save_atomic({prefix + key: value for key, value in weights.items()}, path)
    model = small_hrnet()
    load_state_dict_strict(model, extract_state_dict(load_checkpoint_file(path)), path)
    assert_same_state(model, weights)


@pytest.mark.slow
def test_training_checkpoint_loads_with_weights_only(small_hrnet, tmp_path):
    model = small_hrnet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(1, 3, 32, 32)).sum().backward()
    optimizer.step()
    best = randomised(model)
    path = tmp_path / 'checkpoint.pth'
    save_atomic({'epoch': 3, 'model': 'pose_hrnet', 'state_dict': model.state_dict(),
                 'best_state_dict': best, 'perf': 0.75, 'optimizer': optimizer.state_dict()}, path)
    loaded = load_checkpoint_file(path)
    assert loaded['epoch'] == 3 and loaded['optimizer']['param_groups'][0]['lr'] == 1e-3
    latest = small_hrnet()
    load_state_dict_strict(latest, extract_state_dict(loaded), path)  # 'state_dict' first
    assert_same_state(latest, model.state_dict())
    only_best = {'model': 'pose_hrnet', 'best_state_dict': best}
    assert extract_state_dict(only_best).keys() == best.keys()


def test_checkpoint_of_another_architecture_names_the_keys(small_hrnet, small_resnet, tmp_path):
    path = tmp_path / 'pose_resnet_18.pth'
    save_atomic(small_resnet.state_dict(), path)
    model = small_hrnet()
    with pytest.raises(CheckpointMismatchError) as caught:
        load_state_dict_strict(model, extract_state_dict(load_checkpoint_file(path)), path)
    message = str(caught.value)
    assert str(path) in message and 'PoseHighResolutionNet' in message
    # HRNet's stem has conv2/bn2 and stages; ResNet has layer2..4 and a 7x7 conv1
    assert '102 missing keys (conv2.weight, bn2.weight, bn2.bias' in message
    assert '96 unexpected keys (layer2.0.conv1.weight, layer2.0.bn1.weight' in message
    assert '5 keys with another shape (conv1.weight: checkpoint [64, 3, 7, 7] vs model ' \
           '[64, 3, 3, 3]' in message


def test_other_joint_count_is_a_shape_mismatch(small_hrnet, tmp_path):
    path = tmp_path / 'mpii.pth'
    save_atomic(small_hrnet(num_joints=16).state_dict(), path)
    with pytest.raises(CheckpointMismatchError, match=r'2 keys with another shape \(final_layer'):
        load_state_dict_strict(small_hrnet(num_joints=17), load_checkpoint_file(path), path)


def test_pickled_objects_get_the_convert_hint(small_hrnet, tmp_path):
    path = tmp_path / 'legacy.pth'
    torch.save({'state_dict': small_hrnet().state_dict(), 'args': argparse.Namespace(lr=1)},
               path)
    with pytest.raises(UnsafeCheckpointError) as caught:
        load_checkpoint_file(path)
    message = str(caught.value)
    assert str(path) in message and 'argparse.Namespace' in message
    assert f'python tools/convert_checkpoint.py --in {path} --out' in message


def test_unreadable_and_missing_files(tmp_path):
    garbage = tmp_path / 'garbage.pth'
    garbage.write_text('not a checkpoint')
    with pytest.raises(CheckpointFormatError, match='garbage.pth'):
        load_checkpoint_file(garbage)
    with pytest.raises(CheckpointNotFoundError, match='absent.pth'):
        load_checkpoint_file(tmp_path / 'absent.pth')
    with pytest.raises(CheckpointFormatError, match=r"top-level keys are \['epoch', 'perf'\]"):
        extract_state_dict({'epoch': 1, 'perf': 0.5})


@pytest.mark.slow
def test_convert_checkpoint_round_trip(small_hrnet, run_tool, tmp_path):
    weights = randomised(small_hrnet())
    legacy = tmp_path / 'legacy.pth.tar'
    torch.save({'epoch': 140, 'perf': np.float64(0.9), 'config': argparse.Namespace(a=1),
                'state_dict': {f'module.{key}': value for key, value in weights.items()}},
               legacy)
    converted = tmp_path / 'converted' / 'plain.pth'
    result = run_tool('tools/convert_checkpoint.py', '--in', legacy, '--out', converted)
    assert 'executes any code' in result.stderr
    assert f'wrote {len(weights)} tensors' in result.stdout
    plain = load_checkpoint_file(converted)  # weights_only=True now works
    assert plain.keys() == weights.keys()
    model = small_hrnet()
    load_state_dict_strict(model, plain, converted)
    assert_same_state(model, weights)


def test_save_atomic_replaces_whole_files_only(tmp_path):
    path = tmp_path / 'state.pth'
    save_atomic({'a': torch.arange(3)}, path)
    save_atomic({'a': torch.arange(5)}, path)
    assert torch.equal(load_checkpoint_file(path)['a'], torch.arange(5))
    with pytest.raises(Exception):  # noqa: B017 - a lambda cannot be pickled
        save_atomic({'a': lambda: 0}, path)
    assert torch.equal(load_checkpoint_file(path)['a'], torch.arange(5))
    assert [p.name for p in tmp_path.iterdir()] == ['state.pth']  # no temporary left over


def test_load_weights_file_reads_both_layouts_and_names_a_misfit(tmp_path):
    source, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    torch.save({"state_dict": {"module." + k: v for k, v in source.state_dict().items()}},
               tmp_path / "checkpoint.pth")
    load_weights_file(target, tmp_path / "checkpoint.pth")
    assert torch.equal(target.weight, source.weight) and torch.equal(target.bias, source.bias)
    torch.save(torch.nn.Linear(4, 2).state_dict(), tmp_path / "other.pth")
    with pytest.raises(CheckpointMismatchError, match="other.pth"):
        load_weights_file(target, tmp_path / "other.pth")


def test_non_finite_weights_are_refused_naming_tensor_and_file(small_hrnet, tmp_path):
    model = small_hrnet()  # 5 joints, final 1x1 conv over 4 channels: weight 5 x 4 x 1 x 1
    weights = {key: value.clone() for key, value in model.state_dict().items()}
    weights['final_layer.weight'][0] = float('nan')   # 4 values
    weights['final_layer.weight'][1, 0] = float('inf')  # 1 more
    torch.save(weights, tmp_path / 'diverged.pth')
    target = small_hrnet()
    before = {key: value.clone() for key, value in target.state_dict().items()}
    with pytest.raises(NonFiniteWeightsError) as err:
        load_weights_file(target, tmp_path / 'diverged.pth')
    message = str(err.value)
    assert "'final_layer.weight' holds 5 non-finite value(s)" in message
    assert 'out of 20' in message and 'diverged.pth' in message
    assert_same_state(target, before)  # nothing was loaded
    assert isinstance(err.value, CheckpointFormatError)  # a one-line error for the tools


def test_stale_temporary_checkpoints_are_removed(tmp_path):
    for name in ('.checkpoint.pth.k2j4.tmp', '.model_best.pth.x.tmp', '.final_state.pth.a.tmp',
                 '.results.json.b.tmp', 'checkpoint.pth', 'model_best.pth'):
        (tmp_path / name).write_bytes(b'x')
    removed = remove_stale_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == ['.checkpoint.pth.k2j4.tmp',
                                               '.final_state.pth.a.tmp', '.model_best.pth.x.tmp']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['.results.json.b.tmp',
                                                          'checkpoint.pth', 'model_best.pth']


def test_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / 'checkpoint.pth'
    save_atomic({'a': torch.arange(3)}, path)

    def full_disk(obj, handle):
        try:
            raise OSError(errno.ENOSPC, 'No space left on device')
        except OSError as cause:  # torch reports it as a RuntimeError of its zip writer
            raise RuntimeError('[enforce fail at inline_container.cc:672] unexpected pos') \
                from cause

    monkeypatch.setattr(torch, 'save', full_disk)
    with pytest.raises(OSError) as err:
        save_atomic({'a': torch.arange(5)}, path)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint_file(path)['a'], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ['checkpoint.pth']


def test_save_checkpoint_writes_model_best_from_the_best_state(tmp_path):
    best = {'w': torch.full((2,), 7.0)}
    save_checkpoint({'epoch': 3, 'state_dict': {'w': torch.zeros(2)}, 'best_state_dict': best},
                    True, str(tmp_path))
    assert torch.equal(load_checkpoint_file(tmp_path / 'model_best.pth')['w'], best['w'])
    assert load_checkpoint_file(tmp_path / 'checkpoint.pth')['epoch'] == 3
    save_checkpoint({'epoch': 4, 'state_dict': {'w': torch.ones(2)}, 'best_state_dict': best},
                    False, str(tmp_path))
    assert load_checkpoint_file(tmp_path / 'checkpoint.pth')['epoch'] == 4
    assert torch.equal(load_checkpoint_file(tmp_path / 'model_best.pth')['w'], best['w'])


def test_a_text_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / 'notes.pth'
    path.write_bytes(b'this is not a checkpoint\n')  # trips the unpickler with an IndexError
    with pytest.raises(CheckpointFormatError, match="notes.pth' is not a readable PyTorch"):
        load_checkpoint_file(path)
