"""The output file: records in input order, each written whole and flushed; and what --resume keeps.

Crash consistency: every record is one `os.write` of one complete line ending in "\n", issued only
after the previous line was fully written. A kill at any moment therefore leaves complete lines,
except possibly a last partial one (a write cut short), which `resume_file` drops.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Iterable, Optional, Set, Tuple


def encode_record(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


class OrderedWriter:
    """Takes records in any order; writes them in index order as soon as every earlier one is written.

    `skip`: indices already in the file (--resume). Records wait in `pending` only while an earlier
    index is still being scored: at most one read-ahead window (or the in-flight chunks of --workers).
    """

    def __init__(self, path: str, append: bool, skip: Iterable[int] = ()):
        if path == "-":
            self.fd = sys.stdout.fileno()
            sys.stdout.flush()
        else:
            flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
            self.fd = os.open(path, flags, 0o644)
        self.path, self.skip = path, set(skip)
        self.next, self.pending = 0, {}  # type: int, Dict[int, bytes]
        self.written = self.errors = 0
        self._advance()

    def _advance(self) -> None:
        while self.next in self.skip:
            self.skip.discard(self.next)
            self.next += 1

    def put(self, records: Iterable[dict]) -> None:
        for record in records:
            self.pending[record["index"]] = encode_record(record)
            self.errors += "error" in record
        while self.next in self.pending:
            write_all(self.fd, self.pending.pop(self.next))
            self.written += 1
            self.next += 1
            self._advance()

    def close(self) -> None:
        if self.path != "-":
            os.close(self.fd)


def write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def resume_file(path: str) -> Tuple[Set[int], int]:
    """Keep the complete records of an interrupted run's output: -> (their indices, their error count).

    A trailing line without "\n" (a write cut short) is cut off the file. A complete line that is not a
    record of ours means OUT is not this job's output: ValueError, the file is left alone."""
    done, errors = set(), 0
    if not os.path.exists(path):
        return done, errors
    keep = 0  # bytes of complete lines
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                break
            index, is_error = parse_record(line)
            if index is None:
                raise ValueError(f"--resume: line {number} of {path} is not a record of refimpl score "
                                 "(expected a JSON object with an integer \"index\"); refusing to append to it")
            if index in done:
                raise ValueError(f"--resume: {path} holds index {index} twice (line {number}); refusing to append")
            done.add(index)
            errors += is_error
            keep += len(line)
    if keep != os.path.getsize(path):
        os.truncate(path, keep)
    return done, errors


def parse_record(line: bytes) -> Tuple[Optional[int], bool]:  # -> (its index or None, is it an error record)
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, False
    index = record.get("index") if isinstance(record, dict) else None
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        return None, False
    return index, "error" in record
