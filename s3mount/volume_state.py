"""The volume driver's persisted state: one private JSON file per volume, and the
passwd files of volumes created with access keys.

Layout under the state directory (mode 0700; every file 0600, written whole and
renamed into place, so a crash leaves the old or the new version)::

    volumes/NAME.json     {"name", "opts", "mounted_by", "created_at"}
    credentials/NAME      ACCESS_KEY:SECRET_KEY, the passwd file of the mount

``opts`` are the options as given at Create, secrets included: a restarted
driver needs them to mount again. Nothing here logs them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
from typing import Any

from .errors import S3mountError

log = logging.getLogger(__name__)

# Docker's volume name rule; it also keeps names safe as file names.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_NAME_MAX = 255 - len(".json.tmp")


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise S3mountError("the request has no volume Name")
    if not _NAME.fullmatch(name) or len(name) > _NAME_MAX:
        raise S3mountError(f"'{name}' is not a valid volume name: use letters, digits, '_', "
                           "'.' and '-', starting with a letter or digit")
    return name


@dataclasses.dataclass
class Volume:
    name: str
    opts: dict[str, Any] = dataclasses.field(repr=False)
    # IDs of the Mount requests not unmounted yet (Docker sends one per container).
    mounted_by: set[str] = dataclasses.field(default_factory=set)
    created_at: str = ""


def _write_private(path: str, data: bytes) -> None:
    temporary = path + ".tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


class VolumeStore:
    def __init__(self, state_dir: str) -> None:
        self.state_dir = os.path.abspath(state_dir)
        self._volumes_dir = os.path.join(self.state_dir, "volumes")
        self._credentials_dir = os.path.join(self.state_dir, "credentials")
        for directory in (self.state_dir, self._volumes_dir, self._credentials_dir):
            os.makedirs(directory, mode=0o700, exist_ok=True)
            os.chmod(directory, 0o700)

    def _volume_path(self, name: str) -> str:
        return os.path.join(self._volumes_dir, name + ".json")

    def passwd_path(self, name: str) -> str:
        return os.path.join(self._credentials_dir, name)

    def load_all(self) -> dict[str, Volume]:
        volumes = {}
        for entry in sorted(os.listdir(self._volumes_dir)):
            if not entry.endswith(".json"):
                continue
            path = os.path.join(self._volumes_dir, entry)
            try:
                with open(path, encoding="utf-8") as f:
                    record = json.load(f)
                volume = Volume(check_name(record["name"]), dict(record["opts"]),
                                set(record.get("mounted_by", ())), record.get("created_at", ""))
            except (OSError, ValueError, KeyError, TypeError, S3mountError) as exc:
                # The message names the file, never its content.
                log.error("skipping the unreadable volume file %s: %s", path,
                          type(exc).__name__)
                continue
            volumes[volume.name] = volume
        return volumes

    def save(self, volume: Volume) -> None:
        record = {"name": volume.name, "opts": volume.opts,
                  "mounted_by": sorted(volume.mounted_by), "created_at": volume.created_at}
        _write_private(self._volume_path(volume.name), json.dumps(record, indent=1).encode())

    def delete(self, name: str) -> None:
        for path in (self._volume_path(name), self.passwd_path(name)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def write_passwd_file(self, name: str, access_key: str, secret_key: str) -> str:
        path = self.passwd_path(name)
        _write_private(path, f"{access_key}:{secret_key}\n".encode())
        return path
