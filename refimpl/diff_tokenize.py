"""Does another tokenizer give the token ids refimpl's (upstream's slow tokenizers') give, line by line?

    from refimpl.diff_tokenize import diff_tokenize, read_ids, read_lines
    report = diff_tokenize(tokenizer, read_lines("LINES.txt"), read_ids("IDS.jsonl"))
    report.differing, report.lines[0]    # how many lines differ; the first few, with where they part

Lines are separated by "\\n" only: "\\r", form feeds, U+2028 and every other character is part of a line (a
tokenizer must see them), and a final "\\n" ends the last line rather than starting an empty one. The other
tokenizer's ids come one JSON object {"input_ids": [...]} per line, in the same order. Each text is encoded
with the special tokens the tokenizer adds (`add_special_tokens=True`, as `tokenizer(text)` does) unless
asked otherwise.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Sequence

SHOWN = 5  # differing lines reported in full


@dataclass
class LineDiff:
    line: int                 # 1-based, in the input file
    text: str
    ours: List[int]           # refimpl's ids
    theirs: List[int]         # the other tokenizer's ids
    position: int             # the first index where they differ (the shorter length when one is a prefix)
    ours_tokens: List[str]    # the tokens around `position` (three either side), to read
    theirs_tokens: List[str]


@dataclass
class TokenizeDiff:
    total: int
    differing: int
    lines: List[LineDiff]     # the first `shown` differing lines

    @property
    def exit_code(self) -> int:
        return 0 if self.differing == 0 else 1

    def to_json(self) -> dict:
        return {"total": self.total, "differing": self.differing, "lines": [asdict(d) for d in self.lines]}

    def text(self) -> str:
        out = [f"{self.differing} of {self.total} lines tokenize differently"]
        for d in self.lines:
            out += [f"line {d.line}: {d.text!r}", f"  first difference at position {d.position}",
                    f"  refimpl: {d.ours}", f"           {d.ours_tokens}",
                    f"  other:   {d.theirs}", f"           {d.theirs_tokens}"]
        if self.differing > len(self.lines):
            out.append(f"... and {self.differing - len(self.lines)} more")
        return "\n".join(out)


def read_lines(path) -> List[str]:
    """A UTF-8 text file -> its lines, split on "\\n" only (see the module's docstring)."""
    if not Path(path).is_file():
        raise ValueError(f"{path} is not a file")
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ValueError(f"{path} line {line}: not UTF-8 ({err.reason} at byte {err.start})") from None
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte order mark is not text
    lines = text.split("\n")
    if lines and lines[-1] == "":  # the final newline ends the last line
        lines.pop()
    return lines


def read_ids(path) -> List[List[int]]:
    """IDS.jsonl -> one list of token ids per line, with errors naming the line."""
    lines = read_lines(path)
    out = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as err:
            raise ValueError(f"{path} line {number}: not valid JSON ({str(err)[:120]})") from None
        ids = record.get("input_ids") if isinstance(record, dict) else None
        if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            raise ValueError(f'{path} line {number}: expected {{"input_ids": [token ids (integers)]}}, '
                             f"got {line[:120]!r}")
        out.append(ids)
    return out


def first_difference(a: Sequence[int], b: Sequence[int]) -> Optional[int]:  # None when equal
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def diff_tokenize(tokenizer, texts: Sequence[str], against: Sequence[Sequence[int]], add_special_tokens=True,
                  shown: int = SHOWN) -> TokenizeDiff:
    """refimpl's ids of each text against the other tokenizer's ids of the same line."""
    if len(texts) != len(against):
        raise ValueError(f"the input has {len(texts)} lines but the ids have {len(against)}: one "
                         '{"input_ids": [...]} per input line is expected')
    differing, lines = 0, []
    for number, (text, theirs) in enumerate(zip(texts, against), 1):
        ours = tokenizer.encode(text, add_special_tokens=add_special_tokens)
        position = first_difference(ours, list(theirs))
        if position is None:
            continue
        differing += 1
        if len(lines) < shown:
            lines.append(LineDiff(number, text, ours, list(theirs), position, _around(tokenizer, ours, position),
                                  _around(tokenizer, theirs, position)))
    return TokenizeDiff(len(texts), differing, lines)


def _around(tokenizer, ids, position, context=3) -> List[str]:  # the token strings near the difference
    out = []
    for t in ids[max(0, position - context):position + context + 1]:
        try:
            out.append(tokenizer.convert_ids_to_tokens(int(t)))
        except (KeyError, IndexError, ValueError, OverflowError):
            out.append(f"<id {t}?>")
    return out
