"""A listing fetched while our own change happened is not cached: the change may be
missing from it, and a cached listing without a file makes its lookups fail (ENOENT)
until the listing expires."""

from __future__ import annotations

from s3mount.stat_cache import StatCache


def cache() -> StatCache[str]:
    return StatCache(ttl=60, max_entries=100, negative=True)


def test_a_listing_fetched_without_changes_meanwhile_is_cached():
    c = cache()
    since = c.changes
    assert c.put_listing("d", {"a": 1}, since)
    assert c.listing("d") == {"a": 1}


def test_a_listing_fetched_across_a_create_is_not_cached():
    c = cache()
    since = c.changes  # the LIST starts
    c.put("d/new", "node")  # a create in another thread, answered before the LIST
    c.listing_set("d", "new", 2)
    assert not c.put_listing("d", {"a": 1}, since)  # the LIST's answer lacks "new"
    assert c.listing("d") is None


def test_a_listing_fetched_across_an_unlink_is_not_cached():
    c = cache()
    since = c.changes
    c.put_missing("d/a")
    c.listing_set("d", "a", None)
    assert not c.put_listing("d", {"a": 1}, since)
    assert c.listing("d") is None


def test_our_own_listing_is_always_cached():
    c = cache()
    c.put("d", "node")
    assert c.put_listing("d", {})  # mkdir: a new directory is empty
    assert c.listing("d") == {}
