"""A listing that a reader is still walking is kept another TTL from each step of
the walk; one nobody reads expires as before, and an expired one is not revived."""

from __future__ import annotations

from s3mount.stat_cache import StatCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def listed(clock: Clock) -> StatCache[str]:
    """A cache (TTL 10 s) holding the listing {"a": 1} of "d", put at ``clock.now``."""
    c: StatCache[str] = StatCache(ttl=10, max_entries=100, negative=True, timer=clock)
    c.put_listing("d", {"a": 1})
    return c


def test_a_renewed_listing_outlives_its_first_ttl():
    clock = Clock()
    c = listed(clock)
    clock.now = 8
    c.renew_listing("d")
    clock.now = 16
    assert c.listing("d") == {"a": 1}
    clock.now = 18.5
    assert c.listing("d") is None  # 10 s after the last renewal


def test_a_listing_not_renewed_expires_after_its_ttl():
    clock = Clock()
    c = listed(clock)
    clock.now = 10.5
    assert c.listing("d") is None


def test_an_expired_listing_is_not_revived():
    clock = Clock()
    c = listed(clock)
    clock.now = 11
    c.renew_listing("d")
    assert c.listing("d") is None
    c.renew_listing("missing")
    assert c.listing("missing") is None


def test_renewal_keeps_our_own_changes_to_the_listing():
    clock = Clock()
    c = listed(clock)
    c.listing_set("d", "b", 2)
    clock.now = 9
    c.renew_listing("d")
    clock.now = 15
    assert c.listing("d") == {"a": 1, "b": 2}


def test_a_renewed_listing_is_not_reused_by_a_new_directory_handle():
    """Renewal serves the lookups of the walk in progress; a directory opened
    again after the TTL is listed anew, however often it was read meanwhile."""
    clock = Clock()
    c = listed(clock)
    clock.now = 8
    assert c.listing_copy("d") == {"a": 1}
    c.renew_listing("d")
    clock.now = 12
    assert c.listing_copy("d") is None
    assert c.listing("d") == {"a": 1}  # the walk's lookups still have it


def test_a_handles_copy_does_not_follow_later_changes():
    clock = Clock()
    c = listed(clock)
    copy = c.listing_copy("d")
    c.listing_set("d", "b", 2)
    assert copy == {"a": 1} and c.listing("d") == {"a": 1, "b": 2}
