"""The `refimpl` command (and `python -m refimpl`): the process settings first, then the commands.

refimpl/runtime.py's settings must precede NumPy's import (OpenBLAS reads its thread timeout when it
loads), so this entry point imports nothing else before applying them.
"""
from . import runtime


def main(argv=None):
    runtime.configure_process()
    from .cli import main as run_command

    return run_command(argv)


if __name__ == "__main__":
    raise SystemExit(main())
