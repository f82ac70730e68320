"""Training over processes: one process is a plain run; a batch must give every process an
image; a seed share names the seeds its process trains."""

import pytest

from subnets import distributed


def test_a_plain_run_is_one_process_and_its_sums_are_its_own():
    assert distributed.processes() == (0, 1)
    assert distributed.summed([1.0, 2.5]) == [1.0, 2.5]


def test_a_batch_without_an_image_for_every_process_is_refused():
    with pytest.raises(ValueError, match="batch_size"):
        distributed.check_shares(65, 32, 2)


def test_a_seed_share_names_its_seeds_and_refuses_a_bad_share(monkeypatch):
    monkeypatch.setenv(distributed.SEED_SHARE, "1/3")
    assert [s for s in range(7) if distributed.in_seed_share(s)] == [1, 4]
    for bad in ("3/3", "one of two"):
        monkeypatch.setenv(distributed.SEED_SHARE, bad)
        with pytest.raises(ValueError, match=distributed.SEED_SHARE):
            distributed.in_seed_share(0)
