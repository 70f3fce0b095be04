"""Turn a legacy pickled checkpoint into a plain tensor state_dict, once, explicitly.

    python tools/convert_checkpoint.py --in OLD.pth --out NEW.pth

Old training checkpoints may pickle Python objects (a config, a numpy scalar, the whole model),
which the framework refuses to read: unpickling can execute code stored in the file. This tool
is the one place that reads such a file with ``weights_only=False``. Run it only on files you
trust; the result loads everywhere with ``weights_only=True``.
"""

import argparse
import pickle
import sys
from pathlib import Path

import _init_paths  # noqa: F401  (puts the repository root on sys.path)
import torch
from cli import run_cli

from lib.utils.checkpoint import (
    CheckpointFormatError,
    CheckpointNotFoundError,
    extract_state_dict,
    save_atomic,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--in', dest='source', required=True, help='legacy checkpoint (trusted)')
    parser.add_argument('--out', dest='target', required=True, help='plain state_dict to write')
    return parser.parse_args(argv)


def convert(source: str, target: str) -> int:
    """Write the state_dict held by ``source`` to ``target``; returns the number of tensors."""
    if not Path(source).is_file():
        raise CheckpointNotFoundError(f'checkpoint file {source!r} does not exist')
    print(f'WARNING: loading {source} with weights_only=False: this executes any code stored '
          f'in the file. Only continue with files you trust.', file=sys.stderr)
    try:
        loaded = torch.load(source, map_location='cpu', weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError,
            ModuleNotFoundError) as error:
        raise CheckpointFormatError(f'{source!r} is not a readable PyTorch checkpoint: '
                                    f'{error!r}') from error
    if isinstance(loaded, torch.nn.Module):  # a whole pickled model
        loaded = loaded.state_dict()
    state_dict = {key: value.detach().clone() for key, value in extract_state_dict(loaded).items()}
    save_atomic(state_dict, target)
    return len(state_dict)


def main() -> None:
    args = parse_args()
    count = convert(args.source, args.target)
    print(f'wrote {count} tensors to {args.target}')


if __name__ == '__main__':
    run_cli(main)
