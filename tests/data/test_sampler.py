import pytest

from v2idetr.data.sampler import ResumableSampler


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
