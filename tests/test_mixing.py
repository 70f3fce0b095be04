"""Several training image sets at once (lib/dataset/mixing.py): the epochs' shares, their
reproducibility and split over ranks, and a '+'-joined TRAIN_SET through the config checks."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from lib.config import ConfigValueError, check_config
from lib.dataset.mixing import MixedSampler, epoch_counts, epoch_indices, set_sizes, training_sets


def test_an_epoch_is_the_first_set_once_and_the_others_by_their_shares():
    assert epoch_counts([60, 4000], [0.5, 0.5]) == [60, 60]
    assert epoch_counts([60, 4000], [1, 3]) == [60, 180]        # shares need not sum to 1
    assert epoch_counts([10, 4, 100], [0.5, 0.25, 0.25]) == [10, 5, 5]
    drawn = epoch_indices([10, 4, 100], [0.5, 0.25, 0.25], torch.Generator().manual_seed(0))
    assert len(drawn) == 20
    first = sorted(i for i in drawn.tolist() if i < 10)
    second = [i for i in drawn.tolist() if 10 <= i < 14]
    third = [i for i in drawn.tolist() if i >= 14]
    assert first == list(range(10))                             # every image of the first set
    assert len(second) == 5 and set(second) == set(range(10, 14))  # round the set once more
    assert max(Counter(second).values()) == 2
    assert len(third) == len(set(third)) == 5                   # without replacement
    assert drawn.tolist() != sorted(drawn.tolist())             # shuffled together
    assert epoch_counts([10, 50], [1.0, 0.01]) == [10, 0]
    assert sorted(epoch_indices([10, 50], [1.0, 0.01], torch.Generator()).tolist()) == list(
        range(10))


def test_the_sampler_repeats_an_epoch_from_its_seed_and_splits_it_over_ranks():
    sampler = MixedSampler([6, 50], [0.5, 0.5], seed=3)
    sampler.set_epoch(2)
    epoch2 = list(sampler)
    again = MixedSampler([6, 50], [0.5, 0.5], seed=3)
    again.set_epoch(2)
    assert list(again) == epoch2 and len(sampler) == 12
    sampler.set_epoch(3)
    assert list(sampler) != epoch2
    # two ranks: 5 + 6 samples padded to 12, 6 a rank, together the whole epoch and its first
    ranks = [MixedSampler([5, 50], [1, 1.2], seed=3, rank=r, world_size=2) for r in (0, 1)]
    alone = MixedSampler([5, 50], [1, 1.2], seed=3)
    for part in (*ranks, alone):
        part.set_epoch(1)
    shards = [list(part) for part in ranks]
    assert [len(s) for s in shards] == [6, 6] and len(alone) == 11
    assert Counter(shards[0] + shards[1]) - Counter(list(alone)) == Counter([list(alone)[0]])
    with pytest.raises(ValueError, match="2 image sets but 1 shares"):
        MixedSampler([6, 50], [1.0])


def test_joined_sets_are_concatenated_and_sized():
    sets = training_sets(lambda name: list(range({"a": 3, "b/c": 5}[name])), "a + b/c")
    assert len(sets) == 8 and set_sizes(sets) == [3, 5]
    assert set_sizes(training_sets(lambda name: [0, 1], "a")) == [2]


def test_shares_must_match_the_joined_sets(make_cfg):
    from lib.config import default_config

    base = default_config()
    check_config(make_cfg(base, {"DATASET.TRAIN_SET": "lightbox/pseudo+train",
                                 "DATASET.TRAIN_SET_SHARES": [0.5, 0.5]}))
    with pytest.raises(ConfigValueError, match=r"one share per image set .* \(2: "
                                               r"lightbox/pseudo, train\), got 3"):
        check_config(make_cfg(base, {"DATASET.TRAIN_SET": "lightbox/pseudo+train",
                                     "DATASET.TRAIN_SET_SHARES": [0.5, 0.25, 0.25]}))
    with pytest.raises(ConfigValueError, match="TRAIN_SET_SHARES must be a list of positive"):
        check_config(make_cfg(base, {"DATASET.TRAIN_SET_SHARES": [0.0]}))
