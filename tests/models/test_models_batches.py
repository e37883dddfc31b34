import collections

import numpy as np
import pytest

from models.batches import BatchConfig, StratifiedBatches, type_quotas

TYPES = np.array(["photo"] * 50 + ["sketch"] * 10 + ["cartoon"] * 10)  # seed 002's 5 : 1 : 1


def _counts(batch: np.ndarray) -> collections.Counter:
    return collections.Counter(TYPES[batch].tolist())


@pytest.mark.parametrize("quota", ["equal", "proportional"])
@pytest.mark.parametrize("replacement", [False, True])
def test_every_batch_holds_every_type(quota, replacement):
    batches = list(StratifiedBatches(TYPES, 8, BatchConfig("image_type", quota, replacement), seed=0))
    assert len(batches) == 9  # ceil(70 / 8)
    for batch in batches:
        assert len(batch) == 8 and set(_counts(batch)) == {"photo", "sketch", "cartoon"}


def test_equal_quota_is_equal_up_to_a_rotating_remainder():
    batches = list(StratifiedBatches(TYPES, 8, BatchConfig("image_type", "equal"), seed=0))
    totals = collections.Counter()
    for batch in batches:
        counts = _counts(batch)
        assert max(counts.values()) - min(counts.values()) <= 1
        totals.update(counts)
    assert max(totals.values()) - min(totals.values()) <= 1  # the extra images go to a different type each batch


def test_proportional_quota_follows_the_mix_with_at_least_one_each():
    assert type_quotas({"photo": 50, "sketch": 10, "cartoon": 10}, 7, "proportional") == {
        "cartoon": 1, "photo": 5, "sketch": 1,
    }  # fmt: skip
    assert type_quotas({"photo": 1000, "sketch": 1, "cartoon": 1}, 4, "proportional") == {
        "cartoon": 1, "photo": 2, "sketch": 1,
    }  # fmt: skip
    for batch in StratifiedBatches(TYPES, 14, BatchConfig("image_type", "proportional"), seed=3):
        assert _counts(batch) == {"photo": 10, "sketch": 2, "cartoon": 2}


def test_without_replacement_each_type_cycles_through_all_its_images():
    seen = np.concatenate(list(StratifiedBatches(TYPES, 14, BatchConfig("image_type", "proportional"), seed=1)))
    assert len(seen) == 70 and len(set(seen.tolist())) == 70  # 5 batches of 10/2/2 cover every image once


def test_with_replacement_may_repeat_within_an_epoch():
    seen = np.concatenate(list(StratifiedBatches(TYPES, 14, BatchConfig("image_type", "equal", True), seed=1)))
    assert len(set(seen.tolist())) < len(seen)


def test_reproducible_by_seed_and_different_across_seeds():
    cfg = BatchConfig("image_type", "equal")
    a = [b.tolist() for b in StratifiedBatches(TYPES, 9, cfg, seed=5)]
    assert a == [b.tolist() for b in StratifiedBatches(TYPES, 9, cfg, seed=5)]
    assert a != [b.tolist() for b in StratifiedBatches(TYPES, 9, cfg, seed=6)]


def test_a_batch_smaller_than_the_number_of_types_is_refused():
    with pytest.raises(ValueError, match="batch_size 2 < 3 types"):
        StratifiedBatches(TYPES, 2, BatchConfig("image_type"), seed=0)


def test_a_fixed_number_of_batches_keeps_workers_in_step():
    assert len(list(StratifiedBatches(TYPES[:40], 8, BatchConfig("image_type"), seed=0, n_batches=12))) == 12
