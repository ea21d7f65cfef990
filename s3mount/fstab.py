"""``mount.s3mount``: the helper mount(8) runs for fstab entries of type s3mount.

mount(8) calls ``mount.s3mount SOURCE MOUNTPOINT [-o OPTIONS] [-n] [-s] [-f] [-v]``.
The options reach the same parser as ``s3mount -o``, which already drops the
mount-table options (_netdev, nofail, auto, noauto, user, x-*, ...).
"""

from __future__ import annotations

import sys

from .cli import main as cli_main

# mount(8) helper flags: -n (no mtab), -s (sloppy), -v (verbose) have no meaning
# for a FUSE mount; -f (fake) means check everything but do not mount; -N takes a
# mount namespace, which a FUSE daemon cannot enter after the fact.
_IGNORED_FLAGS = {"-n", "-s", "-v"}
_IGNORED_WITH_VALUE = {"-N", "-t"}


def _split(argv: list[str]) -> tuple[list[str], list[str], bool]:
    """mount(8) helper argv → (positional arguments, -o strings, fake)."""
    positional: list[str] = []
    options: list[str] = []
    fake = False
    words = iter(argv)
    for word in words:
        if word == "-o":
            options.append(next(words, ""))
        elif word.startswith("-o") and len(word) > 2:
            options.append(word[2:])
        elif word == "-f":
            fake = True
        elif word in _IGNORED_WITH_VALUE:
            next(words, None)
        elif word in _IGNORED_FLAGS:
            continue
        else:
            positional.append(word)
    if positional and positional[0].startswith("s3mount#"):
        positional[0] = positional[0][len("s3mount#"):]
    return positional, options, fake


def helper_arguments(argv: list[str]) -> tuple[list[str], bool]:
    """mount(8) helper argv → (s3mount argv, fake)."""
    positional, options, fake = _split(argv)
    return positional + [item for text in options for item in ("-o", text)], fake


def main(argv: list[str] | None = None) -> None:
    positional, options, fake = _split(sys.argv[1:] if argv is None else argv)
    if fake:
        from .config import build_config
        from .errors import S3mountError

        try:
            build_config(positional, options, foreground=False, debug=False,
                         single_threaded=False)
        except S3mountError as exc:
            print(f"mount.s3mount: {exc.message}", file=sys.stderr)
            sys.exit(exc.exit_code)
        sys.exit(0)
    cli_main(positional + [item for text in options for item in ("-o", text)])
