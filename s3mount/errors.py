"""Errors of s3mount and the one table that maps S3 errors to errno values."""

from __future__ import annotations

import errno


class S3mountError(Exception):
    """A user-facing error: printed as one line without traceback, then exit."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class UsageError(S3mountError):
    """Bad command line or option value (exit status 2, like click)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=2)


class CredentialsError(S3mountError):
    """Credentials missing, malformed or stored insecurely."""


class FsError(Exception):
    """A filesystem operation failed with an errno value."""

    def __init__(self, errno_value: int, detail: str = "") -> None:
        super().__init__(errno_value, detail)
        self.errno = errno_value
        self.detail = detail


# S3 error codes (and bare HTTP statuses, as strings, for HEAD responses that
# carry no body) → errno. Anything not listed is EIO.
S3_ERRNO: dict[str, int] = {
    "NoSuchKey": errno.ENOENT,
    "NotFound": errno.ENOENT,
    "404": errno.ENOENT,
    "NoSuchBucket": errno.ENOENT,
    "NoSuchUpload": errno.ENOENT,
    "AccessDenied": errno.EACCES,
    "AllAccessDisabled": errno.EACCES,
    "403": errno.EACCES,
    "InvalidAccessKeyId": errno.EACCES,
    "SignatureDoesNotMatch": errno.EACCES,
    "ExpiredToken": errno.EACCES,
    "InvalidToken": errno.EACCES,
    "PreconditionFailed": errno.ESTALE,
    "412": errno.ESTALE,
    "InvalidRange": errno.EINVAL,
    "416": errno.EINVAL,
    "KeyTooLongError": errno.ENAMETOOLONG,
    "EntityTooLarge": errno.EFBIG,
    "NotImplemented": errno.ENOTSUP,
    "501": errno.ENOTSUP,
    "InvalidObjectState": errno.EIO,
}


def errno_for_s3_code(code: str) -> int:
    return S3_ERRNO.get(code, errno.EIO)
