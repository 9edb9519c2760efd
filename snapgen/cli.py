"""What every command line shares: range-checked argparse types and one error handler.

    p.add_argument("--steps", type=positive_int)             # 0, -1, "x" -> "argument --steps: must be >= 1, got 0"
    p.add_argument("--guidance", type=finite_float)          # nan / inf refused
    raise SystemExit(run_cli(main))                          # usage errors exit 2 naming the flag or file, no traceback

``run_cli`` turns the project's expected errors (bad values, missing files, malformed records, missing weights)
into one line ``error: ...`` on stderr and exit code 2; ``--debug`` anywhere on the command line (or
``SNAPGEN_DEBUG=1``) shows the traceback instead.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Callable


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value + 0.0          # -0 -> 0.0: "-0.0" would be another protocol value and image cache key than "0.0"


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value:g}")
    return value


def nonnegative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value:g}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def refuse_repeated_keys(items: list[tuple[str, str]]) -> None:
    """``(flag, "key=value")`` pairs of one command line (``--set`` items and the flags that are shortcuts for a
    config field): a key given twice is an error naming both, since the later one would silently win."""
    seen: dict[str, tuple[str, str]] = {}
    for flag, item in items:
        key = item.split("=", 1)[0].strip()
        if not key or "=" not in item:
            continue                              # the config parser names these
        if key in seen:
            first = seen[key]
            shown = [f"{f} {i}" if f == "--set" else f"{f} {i.split('=', 1)[1]}" for f, i in (first, (flag, item))]
            raise ValueError(f"{key} is given twice ({shown[0]!r} and {shown[1]!r}); the later one would silently "
                             "win: give it once")
        seen[key] = (flag, item)


def debug_requested(argv: list[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get("SNAPGEN_DEBUG", "") not in ("", "0")


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's input, not a bug: reported in one line with exit code 2."""
    from snapgen.io import MissingWeightsError

    errors: list[type[BaseException]] = [MissingWeightsError, OSError, ValueError, KeyError, ImportError]
    try:
        from snapgen.records import RecordError

        errors.append(RecordError)
    except ImportError:
        pass
    return tuple(errors)


def describe(e: BaseException) -> str:
    """One line for an error: its message; a bare ``KeyError('tag')`` or ``OSError`` gets its type and file."""
    if isinstance(e, KeyError) and e.args:
        msg = str(e.args[0])
        return msg if " " in msg else f"missing key {msg!r} (KeyError)"
    if isinstance(e, IsADirectoryError) and e.filename is not None:
        return f"'{e.filename}' is a folder where a file is expected; pass a file (not the folder holding it)"
    if isinstance(e, NotADirectoryError) and e.filename is not None:
        return (f"'{e.filename}' is a file (or a path through a file) where a folder is expected; pass a folder, "
                "or another path for a new one")
    if isinstance(e, FileExistsError) and e.filename is not None and os.path.isfile(e.filename):
        return (f"'{e.filename}' is a file where a folder is expected (a path through it was given); pass a folder, "
                "or another path for a new one")
    if isinstance(e, OSError) and e.filename is not None and str(e.filename) not in str(e):
        return f"{e.filename}: {e.strerror or e}"
    if isinstance(e, ModuleNotFoundError):
        return f"{e}; install it (see README.md, optional dependencies) or choose another option"
    return str(e) or type(e).__name__


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Call ``main(argv)``: the one error handler of every command line.

    Expected errors (bad values, missing or corrupt files, malformed records, missing weights) -> one line
    ``error: ...`` on stderr and exit code 2; anything else is a bug -> ``internal error`` and exit code 1;
    Ctrl-C -> exit 130. ``--debug`` anywhere (or ``SNAPGEN_DEBUG=1``) re-raises, with the traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    try:
        return main(argv)
    except expected_errors() as e:
        if debug:
            raise
        print(f"error: {describe(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not the user's input: say so, still one line unless --debug
        if debug:
            raise
        print(f"error: internal error ({type(e).__name__}: {e}); rerun with --debug for the traceback and "
              "report it", file=sys.stderr)
        return 1
