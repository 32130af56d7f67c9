"""WeightedDistributedSampler: determinism, sharding, weighted mixing, exact mid-epoch resume."""

from __future__ import annotations

from collections import Counter

import pytest
from torch.utils.data import Dataset

from videomae.data.sampler import WeightedDistributedSampler, source_quotas


class Sources(Dataset):
    """Stand-in with the attributes the sampler reads from a HybridVideoDataset."""

    def __init__(self, sizes, weights=None, repeats=None):
        self.source_sizes = list(sizes)
        self.source_weights = list(weights or [1.0] * len(sizes))
        self.source_repeats = list(repeats or [None] * len(sizes))

    def __len__(self):
        return sum(self.source_sizes)

    def __getitem__(self, i):
        return i


def source_of(i: int, sizes: list[int]) -> int:
    for k, size in enumerate(sizes):
        if i < size:
            return k
        i -= size
    raise IndexError(i)


def test_quotas():
    assert source_quotas([10, 30], [1.0, 1.0], [None, None]) == [10, 30]  # plain concatenation
    assert source_quotas([100, 100], [2.0, 1.0], [None, None]) == [133, 67]
    assert source_quotas([10, 30], [1.0, 1.0], [2.5, None]) == [25, 30]  # repeat count
    assert source_quotas([10, 30], [3.0, 1.0], [None, None], num_samples=100) == [50, 50]  # 3 x 10 vs 1 x 30
    assert source_quotas([10, 30], [1.0, 1.0], [None, None], num_samples=60) == [15, 45]
    assert sum(source_quotas([7, 11, 13], [1.0, 2.0, 3.0], [None, None, None])) == 31


def test_deterministic_per_seed_and_epoch():
    ds = Sources([50, 30])
    a = WeightedDistributedSampler(ds, seed=1)
    b = WeightedDistributedSampler(ds, seed=1)
    assert list(a) == list(b)
    assert sorted(a) == list(range(80))  # equal weights: every row once
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == list(range(80))
    assert list(WeightedDistributedSampler(ds, seed=2)) != first
    assert list(WeightedDistributedSampler(ds, shuffle=False)) == list(range(80))


@pytest.mark.parametrize("total, drop_last", [(80, False), (81, False), (81, True)])
def test_two_ranks_are_disjoint_and_cover_everything(total, drop_last):
    ds = Sources([total - 30, 30])
    ranks = [WeightedDistributedSampler(ds, num_replicas=2, rank=r, seed=5, drop_last=drop_last) for r in range(2)]
    for s in ranks:
        s.set_epoch(3)
    out = [list(s) for s in ranks]
    assert len(out[0]) == len(out[1]) == len(ranks[0])
    full = ranks[0].global_indices()
    if total % 2 == 0:
        assert set(out[0]).isdisjoint(out[1]) and sorted(out[0] + out[1]) == list(range(total))
    elif drop_last:
        assert len(out[0]) == total // 2 and set(out[0]).isdisjoint(out[1])
    else:  # one index is repeated to pad rank 1
        assert len(out[0]) == (total + 1) // 2 and set(out[0] + out[1]) == set(range(total))
        assert out[1][-1] == full[0]
    # the shards interleave the global order
    assert out[0] == full[0 : 2 * len(out[0]) : 2][: len(out[0])]


def test_weighted_mixing_proportions():
    sizes = [100, 300]
    ds = Sources(sizes, weights=[9.0, 1.0])  # shares 900 : 300
    s = WeightedDistributedSampler(ds, seed=0, num_samples=4000)
    counts = Counter(source_of(i, sizes) for i in s)
    assert counts[0] == 3000 and counts[1] == 1000  # exact quotas per epoch
    # the small source is cycled through full permutations: every row 30 times
    assert set(Counter(i for i in s if i < 100).values()) == {30}
    # and mixing is spread over the epoch: every quarter of the epoch holds ~75% source-0 draws
    order = list(s)
    for q in range(4):
        part = order[q * 1000 : (q + 1) * 1000]
        frac = sum(i < 100 for i in part) / len(part)
        assert abs(frac - 0.75) < 0.05


def test_mid_epoch_resume_is_exact():
    ds = Sources([37, 23], weights=[1.0, 2.0])
    s = WeightedDistributedSampler(ds, num_replicas=2, rank=1, seed=9)
    s.set_epoch(4)
    full = list(s)
    it = iter(s)
    head = [next(it) for _ in range(11)]
    state = s.state_dict()
    assert state["epoch"] == 4 and state["offset"] == 22
    resumed = WeightedDistributedSampler(ds, num_replicas=2, rank=1, seed=9)
    resumed.load_state_dict(state)
    resumed.set_epoch(4)  # the engine calls set_epoch for the resumed epoch: the position is kept
    assert len(resumed) == len(full) - 11
    assert head + list(resumed) == full
    # the next epoch starts from the beginning
    resumed.set_epoch(5)
    s.set_epoch(5)
    assert list(resumed) == list(s)


def test_resume_with_consumed_count_and_new_world_size():
    ds = Sources([100])
    old = [WeightedDistributedSampler(ds, num_replicas=2, rank=r, seed=0) for r in range(2)]
    consumed = 10  # each rank trained on 10 samples (e.g. 5 steps of batch 2), whatever the loader prefetched
    state = old[0].state_dict(consumed=consumed)
    assert state["offset"] == 20
    new = [WeightedDistributedSampler(ds, num_replicas=4, rank=r, seed=0) for r in range(4)]
    for s in new:
        s.load_state_dict(state)
    rest = sorted(i for s in new for i in s)
    assert rest == sorted(old[0].global_indices()[20:])


def test_state_mismatch_is_refused():
    s = WeightedDistributedSampler(Sources([10]), seed=0)
    with pytest.raises(ValueError, match="seed=1"):
        s.load_state_dict({"epoch": 0, "offset": 0, "seed": 1, "total": 10})
    with pytest.raises(ValueError, match="manifests or weights changed"):
        s.load_state_dict({"epoch": 0, "offset": 0, "seed": 0, "total": 12})
    with pytest.raises(ValueError, match="rank=2"):
        WeightedDistributedSampler(Sources([10]), num_replicas=2, rank=2)


def test_plain_dataset_is_one_source():
    class Plain(Dataset):
        def __len__(self):
            return 7

    assert sorted(WeightedDistributedSampler(Plain())) == list(range(7))


def test_state_right_after_a_resume_keeps_the_loaded_position():
    ds = Sources([50])
    first = WeightedDistributedSampler(ds, num_replicas=2, rank=0, seed=3)
    state = first.state_dict(consumed=7)
    resumed = WeightedDistributedSampler(ds, num_replicas=2, rank=0, seed=3)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state, "a checkpoint before the next iteration must not rewind the epoch"
    resumed.set_epoch(state["epoch"])
    assert resumed.state_dict() == state
