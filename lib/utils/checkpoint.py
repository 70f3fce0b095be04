"""Reading, validating and writing model checkpoints safely.

Checkpoints are read with ``torch.load(weights_only=True)`` only, so opening a file never runs
code from it. Legacy files that pickle Python objects are converted once, explicitly, by
``tools/convert_checkpoint.py``. Model-zoo files are plain state_dicts (sometimes with the
``module.`` prefix of DataParallel); our training checkpoints are dicts holding one.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import re
import signal
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from lib.utils.io import atomic_write, disk_full_error

logger = logging.getLogger(__name__)

DATA_PARALLEL_PREFIX = 'module.'
STATE_DICT_ENTRIES = ('state_dict', 'best_state_dict', 'model')
KEYS_SHOWN_IN_ERRORS = 5
WEIGHTS_ONLY_FAILURE = 'Weights only load failed'
PICKLE_PROTOCOL_OPCODE = b'\x80'
# Test hook: '<file name>:<stage>[:<n>[:<signal>]]' makes the n-th (default 1st) save of that
# file in this process send itself <signal> (default KILL; INT: a Ctrl-C) at <stage>, one of
# SAVE_STAGES (tests/test_kill.py, tests/test_cli_errors.py).
KILL_IN_SAVE_VARIABLE = 'HRNET_KILL_IN_SAVE'
SAVE_STAGES = ('begin', 'written', 'renamed')  # nothing yet / temp file full / under its name
STALE_TEMP_PATTERN = '.*.pth.*.tmp'  # what lib.utils.io.atomic_write leaves when killed


class CheckpointNotFoundError(FileNotFoundError, ValueError):
    """A named checkpoint file does not exist (a ValueError too, as in the original repo)."""


class UnsafeCheckpointError(ValueError):
    """The file needs full unpickling (it stores Python objects, not only tensors)."""


class CheckpointFormatError(ValueError):
    """The file is readable but holds no state_dict, or is not a checkpoint at all."""


class CheckpointMismatchError(ValueError):
    """The state_dict belongs to another architecture than the model it is loaded into."""


class NonFiniteWeightsError(CheckpointFormatError):
    """A weight tensor holds NaN or inf: the model would predict garbage (and could score as
    perfect, since NaN compares as nothing), so it is refused before any evaluation."""


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = 'cpu') -> Any:
    """Load a checkpoint with ``weights_only=True``; never execute code stored in the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f'checkpoint file {str(path)!r} does not exist')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if WEIGHTS_ONLY_FAILURE not in str(error) or not _is_torch_file(path):
            raise CheckpointFormatError(
                f'{str(path)!r} is not a readable PyTorch checkpoint: {error}'
            ) from error
        raise UnsafeCheckpointError(
            f'{str(path)!r} stores Python objects besides tensors and cannot be read safely '
            f'(weights_only=True){_offending_global(str(error))}. If you trust this file, '
            f'convert it once, explicitly: python tools/convert_checkpoint.py --in {path} '
            f'--out NEW.pth and use NEW.pth instead.'
        ) from error
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, IndexError, TypeError,
            AttributeError) as error:  # a non-checkpoint can trip the unpickler anywhere
        raise CheckpointFormatError(
            f'{str(path)!r} is not a readable PyTorch checkpoint: {error!r}'
        ) from error


def _is_torch_file(path: Path) -> bool:
    """A torch.save zip archive, or a legacy (pre-1.6) file, which starts with a pickle opcode."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, 'rb') as handle:
        return handle.read(1) == PICKLE_PROTOCOL_OPCODE


def _offending_global(loader_message: str) -> str:
    """The 'Unsupported global: ...' part of torch's refusal, if it names one."""
    found = re.search(r'Unsupported global: GLOBAL (\S+)', loader_message)
    return f' (it needs {found.group(1)})' if found else ''


def _is_tensor_mapping(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(value, torch.Tensor) for value in obj.values()
    )


def _strip_data_parallel_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict:
    prefix_length = len(DATA_PARALLEL_PREFIX)
    return {
        key[prefix_length:] if key.startswith(DATA_PARALLEL_PREFIX) else key: value
        for key, value in state_dict.items()
    }


def extract_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Return the model state_dict held by a loaded checkpoint, without a ``module.`` prefix.

    Accepts a plain state_dict or a dict with one of 'state_dict', 'best_state_dict', 'model'
    (tried in that order; our training checkpoints keep the model *name* under 'model').
    """
    if _is_tensor_mapping(obj):
        return _strip_data_parallel_prefix(obj)
    if isinstance(obj, Mapping):
        for entry in STATE_DICT_ENTRIES:
            if _is_tensor_mapping(obj.get(entry)):
                return _strip_data_parallel_prefix(obj[entry])
        raise CheckpointFormatError(
            f'no state_dict found: expected a mapping of tensors or a dict with one of '
            f'{list(STATE_DICT_ENTRIES)}; top-level keys are {list(obj)[:10]}'
        )
    raise CheckpointFormatError(
        f'no state_dict found: the checkpoint holds a {type(obj).__name__}, not a dict'
    )


def _first_keys(keys: list[str]) -> str:
    shown = ', '.join(keys[:KEYS_SHOWN_IN_ERRORS])
    return shown + (', ...' if len(keys) > KEYS_SHOWN_IN_ERRORS else '')


def compare_state_dicts(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """Keys missing from ``given``, unexpected in it, and present in both with another shape."""
    missing = [key for key in expected if key not in given]
    unexpected = [key for key in given if key not in expected]
    mismatched = [
        key for key in expected
        if key in given and tuple(expected[key].shape) != tuple(given[key].shape)
    ]
    return missing, unexpected, mismatched


def describe_mismatch(
    missing: list[str], unexpected: list[str], mismatched: list[str],
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor],
) -> str:
    """Human-readable summary naming the first few offending keys of each kind."""
    parts = []
    if missing:
        parts.append(f'{len(missing)} missing keys ({_first_keys(missing)})')
    if unexpected:
        parts.append(f'{len(unexpected)} unexpected keys ({_first_keys(unexpected)})')
    if mismatched:
        shapes = [
            f'{key}: checkpoint {list(given[key].shape)} vs model {list(expected[key].shape)}'
            for key in mismatched
        ]
        parts.append(f'{len(mismatched)} keys with another shape ({_first_keys(shapes)})')
    return '; '.join(parts)


def load_state_dict_strict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str | os.PathLike
) -> None:
    """Load every tensor of ``state_dict`` into ``model``; any mismatch is a clear error."""
    expected = model.state_dict()
    missing, unexpected, mismatched = compare_state_dicts(expected, state_dict)
    if missing or unexpected or mismatched:
        details = describe_mismatch(missing, unexpected, mismatched, expected, state_dict)
        raise CheckpointMismatchError(
            f'{str(source)!r} does not fit {type(model).__name__} (a checkpoint of another '
            f'architecture or configuration?): {details}'
        )
    model.load_state_dict(state_dict, strict=True)


def check_finite_weights(state_dict: Mapping[str, torch.Tensor], source: str | os.PathLike
                         ) -> None:
    """Raise NonFiniteWeightsError naming the first tensor (and ``source``) holding NaN/inf."""
    for key, tensor in state_dict.items():
        if not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise NonFiniteWeightsError(
                f'{str(source)!r}: tensor {key!r} holds {bad} non-finite value(s) (NaN or inf) '
                f'out of {tensor.numel()}; these weights are broken (a diverged training?)')


def load_weights_file(model: nn.Module, path: str | os.PathLike) -> None:
    """The weights of a checkpoint or model-zoo state_dict file into ``model``, strictly (any
    mismatch is an error naming the file); loaded with weights_only=True. A NaN or inf in
    any weight is an error naming the tensor and the file."""
    state_dict = extract_state_dict(load_checkpoint_file(path))
    check_finite_weights(state_dict, path)
    load_state_dict_strict(model, state_dict, path)


_saves_started: dict[str, int] = {}


def _kill_point(name: str, stage: str) -> None:
    """Signal this process here when HRNET_KILL_IN_SAVE names this save and stage: a kill at
    an exact point of a save, for the kill tests, independent of timing."""
    wanted = os.environ.get(KILL_IN_SAVE_VARIABLE, '')
    if not wanted:
        return
    if stage == 'begin':
        _saves_started[name] = _saves_started.get(name, 0) + 1
    file_name, wanted_stage, nth, signal_name = (wanted.split(':') + ['', '', ''])[:4]
    if (file_name == name and wanted_stage == stage
            and _saves_started.get(name, 0) == int(nth or 1)):
        logger.warning('=> %s=%s: signalling this process', KILL_IN_SAVE_VARIABLE, wanted)
        for handler in logging.getLogger().handlers:
            handler.flush()
        if signal_name == 'INT':  # a Ctrl-C, even where the parent started us ignoring SIGINT
            signal.signal(signal.SIGINT, signal.default_int_handler)
        os.kill(os.getpid(), getattr(signal, f'SIG{signal_name or "KILL"}'))


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through the atomic writer: a crash mid-write never leaves a truncated
    checkpoint under the final name. A full disk is an OSError(ENOSPC) naming the file (the
    previous file under that name is kept)."""
    path = Path(path)
    _kill_point(path.name, 'begin')

    def write(handle: Any) -> None:
        torch.save(obj, handle)
        handle.flush()
        _kill_point(path.name, 'written')

    try:
        atomic_write(path, write)
    except (OSError, RuntimeError) as error:
        if disk_full_error(error) is not None:
            raise OSError(errno.ENOSPC, 'no space left on device', str(path)) from error
        raise
    _kill_point(path.name, 'renamed')


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary checkpoint files that a killed save left in ``folder``; returns
    them. Only one run writes a run folder's checkpoints, so at its start none is live."""
    stale = sorted(Path(folder).glob(STALE_TEMP_PATTERN))
    for temp in stale:
        temp.unlink(missing_ok=True)
        logger.info('=> removed %s, left by an interrupted save', temp)
    return stale


class PretrainedLoad(NamedTuple):
    """What ``load_pretrained_weights`` did, for logs and tests."""

    loaded: list[str]
    filtered_out: list[str]
    not_in_model: list[str]


def _top_level_names(keys: list[str]) -> list[str]:
    return sorted({key.split('.')[0] for key in keys})


def load_pretrained_weights(
    model: nn.Module, path: str | os.PathLike, pretrained_layers: list[str],
    config_key: str = 'MODEL.PRETRAINED',
) -> PretrainedLoad:
    """Initialise part of ``model`` from a (e.g. ImageNet) checkpoint, as the original does.

    Keeps the tensors whose first name component is listed in ``pretrained_layers`` ('*' keeps
    all); tensors the model has no slot for (an ImageNet classifier) are skipped and logged,
    tensors whose shape differs are an error, since silently keeping random weights there
    would go unnoticed until the results are bad.
    """
    if not Path(path).is_file():
        raise CheckpointNotFoundError(
            f'pretrained weights file {str(path)!r} (set by {config_key}) does not exist; '
            f'download it or set {config_key} to an empty string'
        )
    state_dict = extract_state_dict(load_checkpoint_file(path))
    keep_all = '*' in pretrained_layers
    selected = {
        key: value for key, value in state_dict.items()
        if keep_all or key.split('.')[0] in pretrained_layers
    }
    filtered_out = [key for key in state_dict if key not in selected]
    own = model.state_dict()
    not_in_model = [key for key in selected if key not in own]
    loadable = {key: value for key, value in selected.items() if key in own}
    _, _, mismatched = compare_state_dicts(own, loadable)
    if mismatched:
        details = describe_mismatch([], [], mismatched, own, loadable)
        raise CheckpointMismatchError(
            f'pretrained weights {str(path)!r} do not fit {type(model).__name__}: {details}; '
            f'leave those layers out of MODEL.EXTRA.PRETRAINED_LAYERS'
        )
    model.load_state_dict(loadable, strict=False)
    logger.info('=> loaded %d pretrained tensors from %s', len(loadable), path)
    if filtered_out:
        logger.info('=> not in PRETRAINED_LAYERS, skipped: %s', _top_level_names(filtered_out))
    if not_in_model:
        logger.info('=> no such layer in the model, skipped: %s', _top_level_names(not_in_model))
    return PretrainedLoad(list(loadable), filtered_out, not_in_model)
