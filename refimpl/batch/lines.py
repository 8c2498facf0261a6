"""Input lines as bytes, read lazily, each decoded on its own.

A line that is not valid UTF-8, empty or too long is a `LineError` for that line alone: the run goes on.
Nothing here holds more than one line (plus the file buffer).
"""
from __future__ import annotations

import os
import sys
from typing import BinaryIO, Iterator, Tuple

MAX_LINE_BYTES = 1 << 20  # a longer line is an error record, not a 10 GB allocation


class LineError(ValueError):
    """A problem with one input line: reported in its output record, the run goes on."""


class InputError(Exception):
    """The input as a whole cannot be read (missing, a directory, no permission): a fatal error."""


def open_input(path: str) -> BinaryIO:
    """"-" -> stdin's bytes; a path -> the file opened for binary reading, or InputError saying why not."""
    if path == "-":
        return sys.stdin.buffer
    if os.path.isdir(path):
        raise InputError(f"input {path} is a directory, expected a file with one item per line")
    try:
        return open(path, "rb")
    except OSError as err:
        raise InputError(f"cannot read input {path}: {err.strerror}") from None


def read_lines(source: BinaryIO) -> Iterator[Tuple[int, bytes]]:  # -> (index, raw line without its newline)
    """Every line of `source` with its 0-based index; an over-long line is cut (and flagged by its length)."""
    index = 0
    while True:
        raw = source.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while True:  # skip the rest of the over-long line, without holding it
                rest = source.readline(MAX_LINE_BYTES)
                if not rest or rest.endswith(b"\n"):
                    break
            raw = raw[:MAX_LINE_BYTES + 1]  # still longer than the limit: decode_line refuses it
        yield index, raw.rstrip(b"\n").removesuffix(b"\r")
        index += 1


def count_lines(path: str) -> int:
    """Lines in a regular file (a last line without a newline counts), in 1 MiB blocks; -1 for stdin."""
    if path == "-":
        return -1
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def decode_line(raw: bytes) -> str:
    """A line's bytes -> its text, or LineError naming what is wrong (the byte column of bad UTF-8)."""
    if len(raw) > MAX_LINE_BYTES:
        raise LineError(f"line longer than {MAX_LINE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise LineError(f"not valid UTF-8: byte 0x{raw[err.start]:02x} at byte {err.start + 1} of the line "
                        f"({err.reason})") from None
    if not text.strip():
        raise LineError("empty line")
    return text
