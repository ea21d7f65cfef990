"""The byte budget shared by uploads: never more held than its capacity, and a
request larger than the whole budget still gets through, alone."""

from __future__ import annotations

import threading

from s3mount.transfer import ByteBudget


def test_holders_never_exceed_the_capacity():
    budget = ByteBudget(10)
    peak = 0
    peak_lock = threading.Lock()

    def worker(amount: int) -> None:
        nonlocal peak
        for _ in range(200):
            with budget.hold(amount), peak_lock:
                peak = max(peak, budget.used)

    threads = [threading.Thread(target=worker, args=(amount,)) for amount in (3, 4, 5, 6, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert 0 < peak <= 10
    assert budget.used == 0


def test_a_request_larger_than_the_budget_takes_all_of_it():
    budget = ByteBudget(10)
    with budget.hold(50):
        assert budget.used == 10
    assert budget.used == 0
