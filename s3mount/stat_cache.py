"""Caches of what S3 told us: attributes by path, names known not to exist,
and directory listings. All bounded by size and time, and safe to use from
several threads: attributes and names by cachetools, listings by the children
they hold (_Listings), which cachetools cannot count as listings change in place.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from cachetools import TTLCache

T = TypeVar("T")
R = TypeVar("R")

class _Bounded(Generic[T]):
    """A TTL cache that tolerates a size or TTL of zero (then it keeps nothing)."""

    def __init__(self, maxsize: int, ttl: float, timer: Callable[[], float]) -> None:
        self._cache: TTLCache[str, T] | None = (
            TTLCache(maxsize=maxsize, ttl=ttl, timer=timer) if maxsize > 0 and ttl > 0 else None
        )
        self._lock = threading.Lock()

    def get(self, key: str) -> T | None:
        if self._cache is None:
            return None
        with self._lock:
            return self._cache.get(key)

    def read(self, key: str, how: Callable[[T], R | None]) -> R | None:
        """What ``how`` makes of a cached value (under the cache's lock, so that
        it sees no change half made)."""
        if self._cache is None:
            return None
        with self._lock:
            value = self._cache.get(key)
            return how(value) if value is not None else None

    def put(self, key: str, value: T) -> None:
        if self._cache is None:
            return
        with self._lock:
            self._cache[key] = value

    def pop(self, key: str) -> None:
        if self._cache is None:
            return
        with self._lock:
            self._cache.pop(key, None)

    def pop_tree(self, path: str) -> None:
        """Drop ``path`` and every key below it."""
        if self._cache is None:
            return
        below = path + "/"
        with self._lock:
            for key in [k for k in self._cache if k == path or k.startswith(below)]:
                self._cache.pop(key, None)

    def renew(self, key: str) -> None:
        """Restart the time of a value still cached (an expired one stays gone)."""
        if self._cache is None:
            return
        with self._lock:
            value = self._cache.get(key)
            if value is not None:
                self._cache[key] = value

    def update(self, key: str, change: Callable[[T], None]) -> None:
        """Change a cached value in place (under the cache's lock)."""
        if self._cache is None:
            return
        with self._lock:
            value = self._cache.get(key)
            if value is not None:
                change(value)


class _Listing:
    """A directory's children, and when they were fetched (renewals do not change it)."""

    __slots__ = ("children", "fetched")

    def __init__(self, children: dict, fetched: float) -> None:
        self.children = children
        self.fetched = fetched


class _Listings:
    """Listings by directory path, bounded by time and by the children they hold
    in all: a bound by the number of directories would let a few huge ones hold
    any amount of memory. A listing counts its children, an empty one counts one;
    one larger than the whole budget is not kept.

    The items stay in the order of their expiry (a constant TTL, and a renewal
    moves an item to the end), so expired ones are always at the front.
    """

    def __init__(self, max_children: int, ttl: float, timer: Callable[[], float]) -> None:
        self._max = max_children if ttl > 0 else 0
        self._ttl = ttl
        self._timer = timer
        self._items: OrderedDict[str, tuple[_Listing, float]] = OrderedDict()  # → expiry
        self._held = 0  # the sizes of the kept listings, added up
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        """The sizes of the kept listings, added up."""
        return self._held

    @staticmethod
    def _size(listing: _Listing) -> int:
        return max(1, len(listing.children))

    def _expire(self) -> None:
        now = self._timer()
        while self._items:
            key, (_, expiry) = next(iter(self._items.items()))
            if expiry > now:
                return
            self._drop(key)

    def _drop(self, key: str) -> None:
        listing, _ = self._items.pop(key)
        self._held -= self._size(listing)

    def get(self, key: str) -> _Listing | None:
        return self.read(key, lambda listing: listing)

    def read(self, key: str, how: Callable[[_Listing], R | None]) -> R | None:
        """What ``how`` makes of a kept listing (under the lock, so that it sees no
        change half made)."""
        with self._lock:
            self._expire()
            item = self._items.get(key)
            return how(item[0]) if item is not None else None

    def put(self, key: str, listing: _Listing) -> None:
        with self._lock:
            if key in self._items:
                self._drop(key)
            size = self._size(listing)
            if size > self._max:
                return
            self._items[key] = (listing, self._timer() + self._ttl)
            self._held += size
            while self._held > self._max:
                self._drop(next(iter(self._items)))

    def pop_tree(self, path: str) -> None:
        """Drop ``path`` and every key below it."""
        below = path + "/"
        with self._lock:
            for key in [k for k in self._items if k == path or k.startswith(below)]:
                self._drop(key)

    def renew(self, key: str) -> None:
        """Restart the time of a listing still kept (an expired one stays gone)."""
        with self._lock:
            self._expire()
            item = self._items.get(key)
            if item is not None:
                self._items[key] = (item[0], self._timer() + self._ttl)
                self._items.move_to_end(key)

    def update(self, key: str, change: Callable[[_Listing], None]) -> None:
        """Change a kept listing in place; its size is counted anew."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return
            before = self._size(item[0])
            change(item[0])
            self._held += self._size(item[0]) - before
            while self._held > self._max and self._items:
                self._drop(next(iter(self._items)))


class StatCache(Generic[T]):
    """Positive entries (path → T), negative entries, and listings (dir path → children)."""

    def __init__(self, *, ttl: float, max_entries: int, negative: bool,
                 timer: Callable[[], float] = time.monotonic) -> None:
        self._entries: _Bounded[T] = _Bounded(max_entries, ttl, timer)
        self._missing: _Bounded[bool] = _Bounded(max_entries if negative else 0, ttl, timer)
        # Listings share the entries' budget: max_stat_cache_size bounds both.
        self._listings = _Listings(max_entries, ttl, timer)
        self._ttl = ttl
        self._timer = timer
        # Counts our own changes, so that what a request fetched before a change
        # is not cached after it (see put_fetched).
        self._changes = 0
        self._changes_lock = threading.Lock()

    @property
    def changes(self) -> int:
        return self._changes

    @property
    def listed_children(self) -> int:
        """What the kept listings count against the budget (their children; one if empty)."""
        return self._listings.held

    def _changing(self) -> None:
        with self._changes_lock:
            self._changes += 1

    def get(self, path: str) -> T | None:
        return self._entries.get(path)

    def put(self, path: str, entry: T) -> None:
        """Cache what our own change made of ``path``."""
        self._changing()
        self._missing.pop(path)
        self._entries.put(path, entry)

    def put_fetched(self, path: str, entry: T | None, since: int) -> bool:
        """Cache what a request found (None: nothing), unless one of our own
        changes happened since ``since`` (the value of ``changes`` before the request)."""
        with self._changes_lock:
            if since != self._changes:
                return False
            if entry is None:
                self._entries.pop(path)
                self._missing.put(path, True)
            else:
                self._missing.pop(path)
                self._entries.put(path, entry)
            return True

    def is_missing(self, path: str) -> bool:
        return bool(self._missing.get(path))

    def put_missing(self, path: str) -> None:
        self._changing()
        self._entries.pop(path)
        self._missing.put(path, True)

    def listing(self, path: str) -> dict | None:
        """The children of ``path`` for its lookups: also a listing that a walk
        still in progress keeps beyond its TTL (renew_listing)."""
        listing = self._listings.get(path)
        return listing.children if listing is not None else None

    def listing_copy(self, path: str) -> dict | None:
        """For a new directory handle: a copy that our own later changes do not
        alter, of a listing fetched less than a TTL ago (renewals do not count,
        or a directory read again and again would never be listed anew)."""
        now = self._timer()

        def fresh_copy(listing: _Listing) -> dict | None:
            return dict(listing.children) if now - listing.fetched < self._ttl else None

        return self._listings.read(path, fresh_copy)

    def put_listing(self, path: str, children: dict, since: int | None = None) -> bool:
        """Cache a directory's listing: one our own change made (``since`` None), or
        one a LIST fetched, unless one of our own changes happened since ``since``
        (it may be missing from the answer, and would stay missing until the TTL)."""
        with self._changes_lock:
            if since is not None and since != self._changes:
                return False
            self._listings.put(path, _Listing(children, self._timer()))
            return True

    def renew_listing(self, path: str) -> None:
        """A reader is still walking ``path``'s listing: keep it for another TTL, so
        that the lookups of a walk that outlasts the TTL (a huge directory, a slow
        server) do not each fall back to a LIST and a HEAD."""
        self._listings.renew(path)

    def listing_set(self, directory: str, name: str, child: object | None) -> None:
        """Keep a cached listing true after our own change (None: the name is gone)."""
        self._changing()

        def change(listing: _Listing) -> None:
            if child is None:
                listing.children.pop(name, None)
            else:
                listing.children[name] = child

        self._listings.update(directory, change)

    def forget_tree(self, path: str) -> None:
        """Everything cached at or below ``path`` (after a directory rename or removal)."""
        self._changing()
        for cache in (self._entries, self._missing, self._listings):
            cache.pop_tree(path)
