"""The ``megacluster`` command line (typer + rich). Only argument parsing and printing live here.

Each subcommand's function lives beside the code it drives (``runtime/cli.py``, ``reliability/cli.py``,
``campaign/cli.py``, ``report/cli.py``); this module registers them and turns :class:`UserError`
(and pydantic validation errors) into one line on stderr with exit code 2.
"""

from __future__ import annotations

import math
import sys

import typer
from pydantic import ValidationError

from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Plan, simulate and run LLM training on GPU supercomputers.")


_registered = False
INTERRUPTED = "error: interrupted (Ctrl-C)"


def _register() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    from .report import cli as core_cli

    core_cli.register(app)
    for mod in ("reliability", "campaign", "runtime", "calibrate"):
        module = __import__(f"megacluster.{mod}.cli", fromlist=["register"])
        module.register(app)
    __import__("megacluster.size_cli", fromlist=["register"]).register(app)


def refuse_non_finite(argv: list[str]) -> None:
    """Refuse an option value that reads as a number but is not finite (``nan``, ``inf``, ``1e999``): no
    quantity megacluster takes can be one, and NaN passes every ``<=`` check unnoticed."""
    for i, arg in enumerate(argv):
        if arg.startswith("--") and "=" in arg:
            flag, value = arg.split("=", 1)
        elif i and argv[i - 1].startswith("-") and not arg.startswith("--"):
            flag, value = argv[i - 1], arg
        else:
            continue
        try:
            x = float(value)
        except ValueError:
            continue
        if not math.isfinite(x):
            raise UserError(f"{flag} must be a finite number, got {value[:40]}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, mapping bad input to one line and exit code 2."""
    _register()
    try:
        refuse_non_finite(list(sys.argv[1:] if argv is None else argv))
        code = app(args=argv, standalone_mode=False)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    except (typer.Abort, KeyboardInterrupt):
        print(INTERRUPTED, file=sys.stderr)
        raise SystemExit(130)
    except SystemExit:
        raise
    except ValidationError as e:
        from .catalog import validation_message

        print(f"error: {validation_message(e, 'input')}", file=sys.stderr)
        raise SystemExit(2)
    except typer.TyperException as e:  # usage errors (typer ships its own click)
        msg = " ".join(str(e.format_message()).split())
        if msg:
            print(f"error: {msg}", file=sys.stderr)
        raise SystemExit(2)
    # without standalone mode typer returns the exit code of an Exit it caught instead of exiting: Ctrl-C
    # (KeyboardInterrupt) arrives here as 130, `--help` as 0
    if isinstance(code, int) and code:
        if code == 130:
            print(INTERRUPTED, file=sys.stderr)
        raise SystemExit(code)


if __name__ == "__main__":
    main()
