"""The ``s3mount`` command: parses the command line and calls mount.run().

Errors are one line on stderr: "s3mount: <what is wrong and how to fix it>".
Exit status 2 for bad usage, 1 for anything else that stops the mount.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import sys
import traceback
from importlib.metadata import PackageNotFoundError, version

import click

from . import __version__
from .config import build_config
from .errors import S3mountError
from .options import GROUPS, help_rows, not_available

SYNOPSIS = "BUCKET[:/PREFIX] MOUNTPOINT"


def _libfuse_version() -> str:
    name = ctypes.util.find_library("fuse")
    if not name:
        return "not found"
    try:
        number = ctypes.CDLL(name).fuse_version()
    except (OSError, AttributeError):
        return "unknown"
    return f"{number // 10}.{number % 10}"


def version_text() -> str:
    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    return (f"s3mount {__version__} (Python {platform.python_version()}, "
            f"llfuse {installed('llfuse')}, botocore {installed('botocore')}, "
            f"libfuse {_libfuse_version()})")


class _Command(click.Command):
    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        for group in GROUPS:
            rows = help_rows(group)
            if rows:
                with formatter.section(f"Mount options (-o): {group}"):
                    formatter.write_dl(rows)
        refused = ", ".join(option.name for option in not_available())
        with formatter.section("Recognised but refused (not yet supported or not supported)"):
            formatter.write_text(refused)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(version_text())
        ctx.exit()


@click.command(cls=_Command, context_settings={"help_option_names": ["-h", "--help"]},
               help="Mount an S3 bucket (or a prefix in it) as a local filesystem.")
@click.argument("arguments", nargs=-1, metavar=SYNOPSIS)
@click.option("-o", "option_strings", multiple=True, metavar="OPT[,OPT=VALUE...]",
              help="Mount options, listed below; may be repeated.")
@click.option("-f", "--foreground", is_flag=True, help="Stay in the foreground.")
@click.option("-d", "--debug", is_flag=True, help="Debug logging to stderr; implies -f.")
@click.option("-s", "single_threaded", is_flag=True, help="Serve one request at a time.")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Show the versions of s3mount and its parts.")
def command(arguments: tuple[str, ...], option_strings: tuple[str, ...], foreground: bool,
            debug: bool, single_threaded: bool) -> int:
    config = build_config(list(arguments), list(option_strings), foreground=foreground,
                          debug=debug, single_threaded=single_threaded)
    from .mount import run  # the heavy imports (llfuse, botocore) only when mounting

    return run(config)


def main(argv: list[str] | None = None) -> None:
    debug = any(arg in ("-d", "--debug") for arg in (argv if argv is not None else sys.argv[1:]))
    try:
        status = command.main(args=argv, prog_name="s3mount", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        print(f"s3mount: {exc.format_message()} (see s3mount --help)", file=sys.stderr)
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(1)
    except S3mountError as exc:
        print(f"s3mount: {exc.message}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if debug:
            traceback.print_exc()
        print(f"s3mount: unexpected error: {type(exc).__name__}: {exc} (run with -d for "
              "details)", file=sys.stderr)
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)
