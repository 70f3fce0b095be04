"""Pseudo-label self-training on unlabelled SPEED+ test domains, then their predictions.

    python tools/self_train.py --cfg FILE DATASET.TEST_SET lightbox/test+sunlamp/test \
        TEST.MODEL_FILE W [SELF_TRAINING.ROUNDS 3 SELF_TRAINING.EPOCHS 5 ...]

Each round predicts every domain as tools/test.py does, keeps the images whose landmarks agree
with their PnP pose (written as '<domain>/pseudo.json', labelled with that pose) and fine-tunes
one model on all of them (lib.core.self_training); the last round's weights then predict each
domain (submission, SPEC2021 rows, and scores where a domain is labelled).
"""

import _init_paths  # noqa: F401  (puts the repository root on sys.path)
from cli import load_config, parse_args, run_cli

from lib.config import cfg
from lib.core.engine import run_test
from lib.core.self_training import self_train
from lib.utils.io import split_image_sets


def main() -> None:
    args = parse_args("Pseudo-label self-training on test domains")
    load_config(cfg, args)
    result = self_train(cfg, args.cfg)
    for index, labels in enumerate(result["rounds"], start=1):
        for set_labels in labels:
            print(f"round {index}: {set_labels.kept} of {set_labels.total} images of "
                  f"'{set_labels.image_set}' pseudo-labelled ({set_labels.labels_file})")
    for image_set in split_image_sets(cfg.DATASET.TEST_SET):
        tested = cfg.clone()
        tested.defrost()
        tested.DATASET.TEST_SET = image_set
        tested.TEST.MODEL_FILE = result["model_file"]
        tested.freeze()
        run = run_test(tested, args.cfg)
        print(f"self-trained model {result['model_file']} on '{image_set}': results in "
              f"{run['output_dir']} (perf indicator {run['perf']:.4f})")


if __name__ == "__main__":
    run_cli(main)
