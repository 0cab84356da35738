"""Errors of the command-line tools: one clear line, not a traceback.

    from command_line import add_debug_option, run_tool
    ...
    if __name__ == "__main__":
        sys.exit(run_tool(main))

An error the project raises on bad input — a ValueError (ConfigError is one), a KeyError or
IndexError, an OSError about a file (not found, a folder, no permission), or a missing optional
package (MissingExtraError, naming the pip extra) — is printed as one line
``TOOL: error: MESSAGE`` on stderr and the tool exits with 2, as argparse does for bad arguments.
``--debug`` (or the environment variable SPARSEVOX_DEBUG=1) shows the traceback instead. Any other
exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import os
import sys
import traceback

from optional_dependencies import MissingExtraError

INPUT_ERRORS = (ValueError, LookupError, OSError, MissingExtraError)
EXIT_INPUT_ERROR = 2
EXIT_INTERRUPTED = 130


def _missing_extra_at_import(kind, error, trace) -> None:
    """sys.excepthook: a tool whose module-level imports need a missing extra stops with its one line too."""
    if issubclass(kind, MissingExtraError) and not debug_requested():
        program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "sparsevox"
        print(f"{program}: error: {error_line(error)} (--debug for the traceback)", file=sys.stderr, flush=True)
        os._exit(EXIT_INPUT_ERROR)  # the interpreter would exit with 1 after an uncaught exception
    sys.__excepthook__(kind, error, trace)


# Every tool imports this module first, so the hook is in place before their other imports run.
sys.excepthook = _missing_extra_at_import


def add_debug_option(parser) -> None:
    """Add --debug to an argparse parser (read by :func:`run_tool`)."""
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (also: environment SPARSEVOX_DEBUG=1)")


def debug_requested(argv=None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get("SPARSEVOX_DEBUG", "") not in ("", "0")


def error_line(error: BaseException) -> str:
    """One line describing ``error``: its message (an OSError: what happened and to which file)."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        message = f"{error.strerror}: {error.filename}"
    elif isinstance(error, KeyError):  # its message is often the key alone, and str() adds quotes
        message = f"KeyError: {error.args[0] if len(error.args) == 1 else error}"
    else:
        message = str(error) or type(error).__name__
    return " ".join(message.split())  # one line, whatever the message holds


def run_tool(main, argv=None) -> int:
    """``main()``'s exit code; an input error becomes one line on stderr and exit code 2."""
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "sparsevox"
    try:
        return main()
    except INPUT_ERRORS as error:
        if debug_requested(argv):
            raise
        print(f"{program}: error: {error_line(error)} (--debug for the traceback)", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        if debug_requested(argv):
            traceback.print_exc()
        print(f"{program}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
