"""``mount.s3mount``: the helper mount(8) runs for fstab entries of type s3mount.

mount(8) calls ``mount.s3mount SOURCE MOUNTPOINT [-o OPTIONS] [-n] [-s] [-f] [-v]``.
The options reach the same parser as ``s3mount -o``, which already drops the
mount-table options (_netdev, nofail, auto, noauto, user, x-*, ...).
"""

from __future__ import annotations

import sys

from .cli import main as cli_main

# mount(8) helper flags: -n (no mtab), -s (sloppy), -v (verbose) have no meaning
# for a FUSE mount; -f (fake) means check everything but do not mount.
_IGNORED_FLAGS = {"-n", "-s", "-v"}


def helper_arguments(argv: list[str]) -> tuple[list[str], bool]:
    """mount(8) helper argv → (s3mount argv, fake)."""
    arguments: list[str] = []
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
        elif word in _IGNORED_FLAGS:
            continue
        else:
            arguments.append(word)
    if arguments and arguments[0].startswith("s3mount#"):
        arguments[0] = arguments[0][len("s3mount#"):]
    result = arguments + [item for text in options for item in ("-o", text)]
    return result, fake


def main(argv: list[str] | None = None) -> None:
    arguments, fake = helper_arguments(sys.argv[1:] if argv is None else argv)
    if fake:
        from .config import build_config
        from .errors import S3mountError

        positional = [a for a in arguments if a != "-o"]
        options = [arguments[i + 1] for i, a in enumerate(arguments) if a == "-o"]
        positional = [a for a in positional if a not in options]
        try:
            build_config(positional, options, foreground=False, debug=False,
                         single_threaded=False)
        except S3mountError as exc:
            print(f"mount.s3mount: {exc.message}", file=sys.stderr)
            sys.exit(exc.exit_code)
        sys.exit(0)
    cli_main(arguments)
