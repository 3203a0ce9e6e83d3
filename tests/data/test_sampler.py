import pytest

from v2idetr.data.sampler import MixedSampler, ResumableSampler


def test_epoch_order_depends_only_on_seed_and_epoch() -> None:
    a, b = ResumableSampler(50, seed=3), ResumableSampler(50, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)
    assert sorted(a) == list(range(50))


def test_resume_mid_epoch_continues_the_same_order() -> None:
    s = ResumableSampler(40, seed=1)
    s.set_epoch(5)
    full = list(s)
    s.set_epoch(5, start=13)
    assert list(s) == full[13:]
    assert len(s) == 27


def test_ranks_split_the_epoch_disjointly_and_equally() -> None:
    parts = []
    for rank in range(3):
        s = ResumableSampler(10, seed=0, rank=rank, world_size=3)
        s.set_epoch(0)
        parts.append(list(s))
    assert all(len(p) == 4 for p in parts)
    assert set().union(*parts) == set(range(10))


def test_weighted_epochs_draw_in_proportion_and_resume_exactly() -> None:
    s = ResumableSampler(4, seed=2, weights=[0.0, 0.0, 1.0, 3.0])
    drawn = []
    for epoch in range(500):
        s.set_epoch(epoch)
        drawn += list(s)
    assert len(drawn) == 2000 and set(drawn) == {2, 3}  # zero weight: never drawn
    assert 2.6 < drawn.count(3) / drawn.count(2) < 3.4
    s.set_epoch(7)
    full = list(s)
    s.set_epoch(7, start=1)
    assert list(s) == full[1:]


def test_bad_weights_are_refused() -> None:
    for weights in ([1.0, 1.0], [1.0, -1.0, 1.0], [0.0, 0.0, 0.0]):
        with pytest.raises(ValueError, match="weights"):
            ResumableSampler(3, weights=weights)
    with pytest.raises(ValueError, match="shuffle"):
        ResumableSampler(3, shuffle=False, weights=[1.0, 1.0, 1.0])


def _batches(order: list[int], size: int) -> list[list[int]]:
    return [order[i : i + size] for i in range(0, len(order), size)]


def test_mixed_batches_hold_a_fixed_number_of_unlabelled_items() -> None:
    unlabelled = [i % 3 != 0 for i in range(30)]  # 10 labelled, 20 unlabelled
    s = MixedSampler(unlabelled, batch_size=4, per_batch=1, seed=5)
    s.set_epoch(0)
    order = list(s)
    assert len(order) == len(s) == 3 * 4  # one pass over the labelled items, 3 per batch
    for batch in _batches(order, 4):
        assert sum(unlabelled[i] for i in batch) == 1
    labelled_seen = [i for i in order if not unlabelled[i]]
    assert len(set(labelled_seen)) == len(labelled_seen) == 9  # a shuffle, no repeats within the epoch
    s.set_epoch(0, start=5)
    assert list(s) == order[5:]
    s.set_epoch(1)
    assert list(s) != order


def test_mixed_batches_repeat_the_unlabelled_items_when_there_are_few() -> None:
    unlabelled = [False] * 12 + [True]
    s = MixedSampler(unlabelled, batch_size=4, per_batch=2, seed=0)
    s.set_epoch(0)
    assert [sum(unlabelled[i] for i in b) for b in _batches(list(s), 4)] == [2] * 6


def test_mixed_batches_under_several_processes_have_the_same_make_up() -> None:
    unlabelled = [i % 2 == 1 for i in range(40)]
    parts = []
    for rank in range(2):
        s = MixedSampler(unlabelled, batch_size=4, per_batch=1, seed=0, rank=rank, world_size=2)
        s.set_epoch(0)
        parts.append(list(s))
        assert all(sum(unlabelled[i] for i in b) == 1 for b in _batches(parts[-1], 4))
    labelled = [i for p in parts for i in p if not unlabelled[i]]
    assert len(set(labelled)) == len(labelled)  # the ranks share no labelled item


def test_mixed_sampler_refuses_what_cannot_fill_a_batch() -> None:
    with pytest.raises(ValueError, match="per batch"):
        MixedSampler([False, True], batch_size=2, per_batch=2)
    with pytest.raises(ValueError, match="no unlabelled"):
        MixedSampler([False] * 4, batch_size=2, per_batch=1)
    with pytest.raises(ValueError, match="too few"):
        MixedSampler([False, True, True], batch_size=4, per_batch=1)


def test_with_epoch_sends_each_index_with_its_epoch() -> None:
    plain = ResumableSampler(10, seed=1)
    paired = ResumableSampler(10, seed=1, with_epoch=True)
    for s in (plain, paired):
        s.set_epoch(3, start=2)
    assert list(paired) == [(3, i) for i in plain]
    mixed = MixedSampler([False] * 6 + [True] * 4, batch_size=3, per_batch=1, seed=2, with_epoch=True)
    mixed.set_epoch(1)
    assert all(e == 1 for e, _ in mixed) and len(list(mixed)) == len(mixed)


def test_batch_scales_give_each_batch_one_size_and_resume_exactly() -> None:
    plain = ResumableSampler(22, seed=1, with_epoch=True)
    scaled = ResumableSampler(22, seed=1, with_epoch=True, batch_scales=[16, 24, 32], batch_size=4)
    for s in (plain, scaled):
        s.set_epoch(2)
    full = list(scaled)
    assert [(e, i) for e, i, _ in full] == list(plain)  # the order is the one without sizes
    batches = [full[b : b + 4] for b in range(0, len(full), 4)]
    assert all(len({size for _, _, size in batch}) == 1 for batch in batches)
    assert len({batch[0][2] for batch in batches}) > 1
    scaled.set_epoch(2, start=8)
    assert list(scaled) == full[8:]
    scaled.set_epoch(3)
    assert [size for _, _, size in scaled] != [size for _, _, size in full]
    mixed = MixedSampler([False] * 12 + [True] * 6, batch_size=3, per_batch=1, seed=2, with_epoch=True,
                         batch_scales=[16, 24])
    mixed.set_epoch(0)
    items = list(mixed)
    assert all(len({size for _, _, size in items[b : b + 3]}) == 1 for b in range(0, len(items), 3))
    with pytest.raises(ValueError, match="batch_scales"):
        ResumableSampler(10, batch_scales=[16])  # the dataset needs the epoch to come with the size
