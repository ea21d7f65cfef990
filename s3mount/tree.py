"""Moving every object below a prefix: the data part of a directory rename.

S3 has no rename, so a directory rename copies each object and deletes the
originals only after every copy succeeded. An interrupted rename leaves both
copies and can be re-run: the target then holds only objects that are copies
of source objects (same relative key and ETag), which ``is_partial_copy``
recognises so that the rename can continue instead of failing with ENOTEMPTY.
"""

from __future__ import annotations

import logging
from concurrent.futures import Executor

from .store import ListedObject, Store
from .transfer import Original, Transfer

log = logging.getLogger(__name__)


def list_tree(store: Store, prefix: str) -> list[ListedObject]:
    return [obj for page in store.list_all(prefix, delimiter="") for obj in page.objects]


def is_partial_copy(source: list[ListedObject], target: list[ListedObject], source_prefix: str,
                    target_prefix: str) -> bool:
    """Does the target hold nothing but copies of source objects, as an interrupted move leaves?"""
    if not target:
        return True
    originals = {o.key[len(source_prefix):]: o.etag for o in source}
    overlap = False
    for obj in target:
        etag = originals.get(obj.key[len(target_prefix):])
        if etag is None:
            continue
        if etag != obj.etag:
            return False
        overlap = True
    return overlap


def move_tree(store: Store, transfer: Transfer, executor: Executor, source: list[ListedObject],
              source_prefix: str, target_prefix: str) -> None:
    """Copy every object to its place below target_prefix, then delete the originals."""

    def copy(obj: ListedObject) -> None:
        target = target_prefix + obj.key[len(source_prefix):]
        transfer.copy_keeping_metadata(Original(obj.key, obj.etag, obj.size), target)

    # list() re-raises the first failure; nothing is deleted unless every copy succeeded.
    list(executor.map(copy, source))
    store.delete_many([obj.key for obj in source])
