"""Pseudo-label self-training on an unlabelled SPEED+ test domain, then its predictions.

    python tools/self_train.py --cfg FILE DATASET.TEST_SET lightbox/test TEST.MODEL_FILE W \
        [SELF_TRAINING.ROUNDS 1 SELF_TRAINING.EPOCHS 10 ...]

Each round predicts the domain as tools/test.py does, keeps the images whose landmarks agree
with their PnP pose (written as '<domain>/pseudo.json', labelled with that pose) and fine-tunes
the model on them (lib.core.self_training); the last round's weights then predict the domain
(submission, SPEC2021 rows, and scores where the domain is labelled).
"""

import _init_paths  # noqa: F401  (puts the repository root on sys.path)
from cli import load_config, parse_args, run_cli

from lib.config import cfg
from lib.core.engine import run_test
from lib.core.self_training import self_train


def main() -> None:
    args = parse_args("Pseudo-label self-training on a test domain")
    load_config(cfg, args)
    result = self_train(cfg, args.cfg)
    for index, labels in enumerate(result["rounds"], start=1):
        print(f"round {index}: {labels.kept} of {labels.total} images pseudo-labelled "
              f"({labels.labels_file})")
    tested = cfg.clone()
    tested.defrost()
    tested.TEST.MODEL_FILE = result["model_file"]
    tested.freeze()
    run = run_test(tested, args.cfg)
    print(f"self-trained model {result['model_file']}; results in {run['output_dir']} "
          f"(perf indicator {run['perf']:.4f})")


if __name__ == "__main__":
    run_cli(main)
