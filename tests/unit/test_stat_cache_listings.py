"""Listings are bounded by the children they hold in all (max_stat_cache_size),
not by the number of directories: a few huge directories cannot hold more than
the budget, and one larger than the whole budget is not kept."""

from __future__ import annotations

from s3mount.stat_cache import StatCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def children(n: int, tag: str = "") -> dict[str, str]:
    return {f"{tag}{i}": "x" for i in range(n)}


def test_listings_beyond_the_budget_evict_the_oldest():
    c: StatCache[str] = StatCache(ttl=60, max_entries=100, negative=True, timer=Clock())
    c.put_listing("a", children(40))
    c.put_listing("b", children(40))
    c.put_listing("empty", {})
    assert c.listed_children == 81
    c.put_listing("c", children(40))  # 121 > 100: "a" goes
    assert c.listing("a") is None
    assert c.listing("b") is not None and c.listing("c") is not None
    assert c.listing("empty") == {}
    assert c.listed_children == 81


def test_a_listing_larger_than_the_budget_is_not_kept_and_its_old_copy_goes():
    c: StatCache[str] = StatCache(ttl=60, max_entries=100, negative=True, timer=Clock())
    c.put_listing("big", children(10))
    c.put_listing("small", children(5))
    c.put_listing("big", children(101))
    assert c.listing("big") is None
    assert c.listing("small") == children(5)
    assert c.listed_children == 5


def test_a_hundred_thousand_keys_fit_the_default_budget_once():
    c: StatCache[str] = StatCache(ttl=60, max_entries=100_000, negative=True, timer=Clock())
    c.put_listing("huge", children(100_000))
    assert c.listing("huge") is not None
    c.put_listing("other", children(1, "o"))
    assert c.listing("huge") is None
    assert c.listing("other") is not None
    assert c.listed_children == 1


def test_our_own_changes_are_counted_and_can_evict():
    c: StatCache[str] = StatCache(ttl=60, max_entries=10, negative=True, timer=Clock())
    c.put_listing("a", children(3))
    c.put_listing("b", children(3))
    assert c.listed_children == 6
    c.listing_set("b", "new", "y")
    c.listing_set("b", "0", None)
    c.listing_set("b", "missing", None)  # not there: no change of size
    assert c.listed_children == 6
    for name in ("n2", "n3", "n4", "n5"):
        c.listing_set("b", name, "y")  # 3 + 7 = 10: room for all
    assert c.listed_children == 10
    c.listing_set("b", "n6", "y")  # 11 > 10: the oldest, "a", goes
    assert c.listing("a") is None
    assert c.listing("b") is not None
    assert c.listed_children == 8


def test_expired_and_forgotten_listings_give_their_room_back():
    clock = Clock()
    c: StatCache[str] = StatCache(ttl=10, max_entries=100, negative=True, timer=clock)
    c.put_listing("d", children(20))
    c.put_listing("d/sub", children(20))
    clock.now = 5
    c.put_listing("e", children(20))
    c.forget_tree("d")
    assert c.listed_children == 20
    clock.now = 15.5
    assert c.listing("e") is None
    assert c.listed_children == 0


def test_a_renewed_listing_moves_behind_the_others_in_expiry():
    clock = Clock()
    c: StatCache[str] = StatCache(ttl=10, max_entries=100, negative=True, timer=clock)
    c.put_listing("a", children(1))
    clock.now = 1
    c.put_listing("b", children(1))
    clock.now = 9
    c.renew_listing("a")
    clock.now = 12  # "b" expired at 11, "a" lives until 19
    assert c.listing("b") is None
    assert c.listing("a") == children(1)


def test_no_budget_keeps_no_listing():
    c: StatCache[str] = StatCache(ttl=60, max_entries=0, negative=True, timer=Clock())
    c.put_listing("a", {})
    assert c.listing("a") is None
    c = StatCache(ttl=0, max_entries=100, negative=True, timer=Clock())
    c.put_listing("a", {})
    assert c.listing("a") is None
