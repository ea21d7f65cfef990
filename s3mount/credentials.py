"""Find the access key to sign requests with, the way s3fs-fuse does.

Lookup order (the first source that exists wins; s3fs_cred.cpp InitialS3fsCredentials):

1. the ``passwd_file`` option,
2. ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (or the old ``AWSACCESSKEYID`` names),
3. the file named by ``AWS_CREDENTIAL_FILE`` (s3fs passwd format),
4. the AWS shared credentials file (``-o profile=``, ``AWS_PROFILE`` or ``default``),
5. ``~/.passwd-s3mount``, ``~/.passwd-s3fs``, ``/etc/passwd-s3mount``, ``/etc/passwd-s3fs``.

When none of them exists, :func:`resolve_credentials` returns None and botocore's
default chain (instance role, web identity, container credentials) decides.

No error message built here contains a secret or any part of a passwd line: a
credentials file is identified by its path and line number only.
"""

from __future__ import annotations

import configparser
import os
import pwd
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from s3mount.errors import CredentialsError

USER_PASSWD_FILE_NAMES: tuple[str, ...] = (".passwd-s3mount", ".passwd-s3fs")
"""Per-user passwd files, relative to the home directory, in lookup order."""

SYSTEM_PASSWD_FILES: tuple[str, ...] = ("/etc/passwd-s3mount", "/etc/passwd-s3fs")
"""System-wide passwd files, in lookup order; these may be readable by their group."""

# Keys of the old AWS credential file format that s3fs also accepts in passwd files.
_KEY_ACCESS = "AWSAccessKeyId"
_KEY_SECRET = "AWSSecretKey"


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    source: str = ""
    """Where the keys came from, for log messages, e.g. ``passwd file /etc/passwd-s3fs``."""


def default_passwd_files(
    home: str, system_passwd_files: Sequence[str] = SYSTEM_PASSWD_FILES
) -> list[str]:
    """The passwd files tried when no other source exists, in lookup order."""
    return [os.path.join(home, name) for name in USER_PASSWD_FILE_NAMES] + list(system_passwd_files)


DEFAULT_PASSWD_FILES: tuple[str, ...] = tuple(default_passwd_files("~"))
"""The default passwd files with the home directory written as ``~``, for help texts."""


def resolve_credentials(
    bucket: str,
    *,
    passwd_file: str | None = None,
    profile: str | None = None,
    use_session_token: bool = False,
    environ: Mapping[str, str] | None = None,
    home: str | None = None,
    system_passwd_files: Sequence[str] | None = None,
) -> Credentials | None:
    """Return the explicitly configured credentials, or None to let botocore decide.

    ``environ`` defaults to ``os.environ``; ``home`` to ``$HOME``, else the home
    directory of the current user; ``system_passwd_files`` to
    :data:`SYSTEM_PASSWD_FILES`. A leading ``~`` in a path option or variable is
    expanded to ``home``. Raises :class:`CredentialsError` when a source exists but
    is unusable: an insecure or malformed credentials file is never skipped.
    """
    env = os.environ if environ is None else environ
    home_dir = _home_directory(env) if home is None else home
    system_files = (
        SYSTEM_PASSWD_FILES if system_passwd_files is None else tuple(system_passwd_files)
    )

    if passwd_file is not None:
        path = _expand_home(passwd_file, home_dir)
        return _load_passwd_file(path, bucket, system_files, source=f"passwd file {path}")

    creds = _from_environment(env, use_session_token)
    if creds is not None:
        return creds

    credential_file = env.get("AWS_CREDENTIAL_FILE")
    if credential_file:
        path = _expand_home(credential_file, home_dir)
        return _load_passwd_file(path, bucket, system_files, source=f"AWS_CREDENTIAL_FILE {path}")

    creds = _from_shared_credentials_file(env, home_dir, profile, use_session_token)
    if creds is not None:
        return creds

    for path in default_passwd_files(home_dir, system_files):
        # lexists, so that a dangling symlink is reported instead of silently skipped.
        if os.path.lexists(path):
            return _load_passwd_file(path, bucket, system_files, source=f"passwd file {path}")
    return None


def check_passwd_file_permissions(
    path: str, *, system_passwd_files: Sequence[str] = SYSTEM_PASSWD_FILES
) -> None:
    """Raise CredentialsError unless ``path`` is readable and private enough (s3fs rules)."""
    mode, _ = _read_passwd_file(path)
    _check_mode(path, mode, system_passwd_files)


def parse_passwd_file(path: str, bucket: str) -> tuple[str, str]:
    """Return (access key, secret key) for ``bucket`` from an s3fs passwd file.

    Permissions are not checked here; see :func:`check_passwd_file_permissions`.
    """
    _, data = _read_passwd_file(path)
    return _parse_passwd_text(_decode(path, data), path, bucket)


def _home_directory(env: Mapping[str, str]) -> str:
    return env.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir


def _expand_home(path: str, home: str) -> str:
    # Only "~" and "~/...": os.path.expanduser would consult os.environ, not `environ`.
    if path == "~" or path.startswith("~/"):
        return home + path[1:]
    return path


def _from_environment(env: Mapping[str, str], use_session_token: bool) -> Credentials | None:
    # Empty values count as unset, so `AWS_ACCESS_KEY_ID= s3mount ...` can mask a variable.
    access_name, access = _first_set(env, "AWS_ACCESS_KEY_ID", "AWSACCESSKEYID")
    secret_name, secret = _first_set(env, "AWS_SECRET_ACCESS_KEY", "AWSSECRETACCESSKEY")
    _, token = _first_set(env, "AWS_SESSION_TOKEN", "AWSSESSIONTOKEN")
    if not access and not secret:
        return None
    if not access or not secret:
        raise CredentialsError(
            "both environment variables AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            " must be set together"
        )
    if use_session_token and not token:
        raise CredentialsError("use_session_token is set but AWS_SESSION_TOKEN is not set")
    return Credentials(
        access_key=access,
        secret_key=secret,
        session_token=token or None,
        source=f"environment variables {access_name}/{secret_name}",
    )


def _first_set(env: Mapping[str, str], *names: str) -> tuple[str, str]:
    for name in names:
        value = env.get(name)
        if value:
            return name, value
    return names[0], ""


def _from_shared_credentials_file(
    env: Mapping[str, str], home: str, profile: str | None, use_session_token: bool
) -> Credentials | None:
    path = _expand_home(
        env.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.join(home, ".aws", "credentials"), home
    )
    named = profile or env.get("AWS_PROFILE") or None
    section = named or "default"
    not_found = CredentialsError(f"profile '{section}' not found in {path}")

    # RawConfigParser like botocore: no interpolation, since secrets may contain '%'.
    parser = configparser.RawConfigParser()
    try:
        with open(path, encoding="utf-8-sig") as f:
            parser.read_file(f, source=path)
    except FileNotFoundError:
        if named:
            raise not_found from None
        return None
    except OSError as exc:
        raise _read_error("AWS credentials file", path, exc) from None
    except UnicodeDecodeError:
        raise CredentialsError(f"AWS credentials file {path} is not UTF-8 text") from None
    except configparser.Error as exc:
        # The exception text may quote a line of the file, hence a secret: keep only the number.
        raise CredentialsError(
            f"cannot parse AWS credentials file {path}{_config_error_line(exc)}"
        ) from None

    if not parser.has_section(section):
        if named:
            raise not_found
        return None
    values = parser[section]
    access = values.get("aws_access_key_id", "")
    secret = values.get("aws_secret_access_key", "")
    token = values.get("aws_session_token", "")
    if not access and not secret:
        if named:
            raise not_found
        return None
    if not access or not secret:
        present, missing = (
            ("aws_access_key_id", "aws_secret_access_key")
            if access
            else ("aws_secret_access_key", "aws_access_key_id")
        )
        raise CredentialsError(f"profile '{section}' in {path} has {present} but no {missing}")
    if use_session_token and not token:
        raise CredentialsError(
            f"use_session_token is set but profile '{section}' in {path} has no aws_session_token"
        )
    return Credentials(
        access_key=access,
        secret_key=secret,
        session_token=token or None,
        source=f"profile '{section}' in {path}",
    )


def _config_error_line(exc: configparser.Error) -> str:
    lineno = getattr(exc, "lineno", None)
    if lineno is None and isinstance(exc, configparser.ParsingError) and exc.errors:
        lineno = exc.errors[0][0]
    return f" (line {lineno})" if lineno is not None else ""


def _load_passwd_file(
    path: str, bucket: str, system_files: Sequence[str], *, source: str
) -> Credentials:
    mode, data = _read_passwd_file(path)
    _check_mode(path, mode, system_files)
    access, secret = _parse_passwd_text(_decode(path, data), path, bucket)
    return Credentials(access_key=access, secret_key=secret, source=source)


def _read_passwd_file(path: str) -> tuple[int, bytes]:
    # One open for both the mode and the content, so they describe the same file.
    try:
        with open(path, "rb") as f:
            return os.fstat(f.fileno()).st_mode, f.read()
    except OSError as exc:
        raise _read_error("credentials file", path, exc) from None


def _read_error(kind: str, path: str, exc: OSError) -> CredentialsError:
    if isinstance(exc, FileNotFoundError):
        return CredentialsError(f"{kind} {path} does not exist")
    # A directory can't be read even by root, and the fix is the same: point at a readable file.
    if isinstance(exc, (PermissionError, IsADirectoryError)):
        return CredentialsError(f"{kind} {path} is not readable by this user")
    return CredentialsError(f"cannot read {kind} {path}: {exc.strerror or exc}")


def _decode(path: str, data: bytes) -> str:
    try:
        # utf-8-sig: a byte order mark left by a Windows editor would become part of a key.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CredentialsError(f"credentials file {path} is not UTF-8 text") from None


def _check_mode(path: str, mode: int, system_files: Sequence[str]) -> None:
    """s3fs CheckS3fsPasswdFilePerms, with a fix suggestion in every message."""
    perms = f"mode {stat.S_IMODE(mode):04o}"
    # The system files may be shared with a group of mount users (s3fs allows this for
    # /etc/passwd-s3fs); compared as absolute paths so "passwd_file=/etc//passwd-s3fs" counts.
    is_system = os.path.abspath(path) in {os.path.abspath(p) for p in system_files}
    private = "640" if is_system else "600"
    if mode & stat.S_IRWXO:
        how = "readable or writable" if mode & (stat.S_IROTH | stat.S_IWOTH) else "executable"
        raise CredentialsError(
            f"credentials file {path} is {how} by others ({perms}); run: chmod {private} {path}"
        )
    if is_system:
        if mode & stat.S_IWGRP:
            raise CredentialsError(
                f"credentials file {path} is group-writable ({perms}); run: chmod 640 {path}"
            )
    elif mode & stat.S_IRWXG:
        raise CredentialsError(
            f"credentials file {path} has group permissions ({perms}); run: chmod 600 {path}"
        )
    if mode & (stat.S_IXUSR | stat.S_IXGRP):
        raise CredentialsError(
            f"credentials file {path} is executable ({perms}); run: chmod {private} {path}"
        )


def _parse_passwd_text(text: str, path: str, bucket: str) -> tuple[str, str]:
    """s3fs ParseS3fsPasswdFile plus CheckS3fsCredentialAwsFormat; stricter about junk lines."""
    # AWSAccessKeyId=/AWSSecretKey= lines → value; bucket name ("" = default) → keys.
    key_values: dict[str, str] = {}
    entries: dict[str, tuple[str, str]] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if any(c.isspace() for c in line):
            raise _invalid_line(path, number, "whitespace is not allowed")
        if line.startswith("["):
            raise _invalid_line(
                path,
                number,
                "found a bracket '[' (is this an AWS credentials file? use -o profile= instead)",
            )
        key, equals, value = line.partition("=")
        if equals and key in (_KEY_ACCESS, _KEY_SECRET):
            if key in key_values:
                raise CredentialsError(f"{path} has several {key} lines")
            if not value:
                raise _invalid_line(
                    path, number, f"empty {'access' if key == _KEY_ACCESS else 'secret'} key"
                )
            key_values[key] = value
            continue
        if ":" not in line:
            # s3fs ignores such lines; they are almost always a mangled entry, so say so.
            raise _invalid_line(
                path,
                number,
                f"expected ACCESS:SECRET, BUCKET:ACCESS:SECRET, {_KEY_ACCESS}= or {_KEY_SECRET}=",
            )
        first, last = line.index(":"), line.rindex(":")
        if first == last:
            name, access, secret = "", line[:first], line[first + 1 :]
        else:
            # Like s3fs, ":ACCESS:SECRET" (empty bucket name) is a default entry.
            name, access, secret = line[:first], line[first + 1 : last], line[last + 1 :]
        if not access:
            raise _invalid_line(path, number, "empty access key")
        if not secret:
            raise _invalid_line(path, number, "empty secret key")
        if name in entries:
            what = f"entries for bucket {name}" if name else "default entries"
            raise CredentialsError(f"{path} has several {what}")
        entries[name] = (access, secret)

    if key_values:
        for have, missing in ((_KEY_ACCESS, _KEY_SECRET), (_KEY_SECRET, _KEY_ACCESS)):
            if missing not in key_values:
                raise CredentialsError(f"{path} has {have} but no {missing}")
        return key_values[_KEY_ACCESS], key_values[_KEY_SECRET]
    if bucket in entries:
        return entries[bucket]
    if "" in entries:
        return entries[""]
    raise CredentialsError(f"no access key for bucket {bucket} in {path}")


def _invalid_line(path: str, number: int, reason: str) -> CredentialsError:
    return CredentialsError(f"invalid line {number} in {path}: {reason}")
