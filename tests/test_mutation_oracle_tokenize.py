"""refimpl.diff_tokenize's report on a stand-in tokenizer whose ids are known by construction (each character's
code point; token strings "t<id>"), and its file readers' rules: where two id lists part, the tokens shown
around it (three either side), how many differing lines are shown, the text and JSON; and torch_vml's calls."""
import json

import numpy as np
import pytest

from refimpl import torch_vml
from refimpl.diff_tokenize import SHOWN, _around, diff_tokenize, first_difference, read_ids, read_lines


class CodePoints:
    """encode: one id per character, 1 before and 2 after with add_special_tokens; id 999 has no token."""

    def __init__(self):
        self.calls = []

    def encode(self, text, add_special_tokens=True):
        self.calls.append(add_special_tokens)
        ids = [ord(c) for c in text]
        return [1] + ids + [2] if add_special_tokens else ids

    def convert_ids_to_tokens(self, i):
        if i == 999:
            raise KeyError(i)
        return f"t{i}"


@pytest.mark.parametrize("a, b, expected", [
    ([1, 2, 3], [1, 2, 3], None), ([1, 2, 3], [1, 5, 3], 1), ([1, 2, 3], [1, 2], 2), ([1], [1, 2, 3], 1),
    ([], [], None), ([], [4], 0), ([4, 2], [5, 2], 0), ([1, 2, 3], [1, 2, 4], 2)])
def test_first_difference(a, b, expected):
    assert first_difference(a, b) == expected


def test_tokens_around_the_difference_three_either_side():
    tok = CodePoints()
    ids = list(range(10, 20))
    assert _around(tok, ids, 5) == [f"t{i}" for i in range(12, 19)]   # positions 2..8
    assert _around(tok, ids, 1) == [f"t{i}" for i in range(10, 15)]   # clipped at the start: 0..4
    assert _around(tok, ids, 9) == [f"t{i}" for i in range(16, 20)]   # clipped at the end: 6..9
    assert _around(tok, ids, 10) == [f"t{i}" for i in range(17, 20)]  # one list a prefix of the other
    assert _around(tok, [5, 999, 6], 1) == ["t5", "<id 999?>", "t6"]  # an id without a token is shown as such
    assert _around(tok, [5, 2 ** 70], 0) == ["t5", f"t{2 ** 70}"]


def test_report_of_differing_lines():
    tok = CodePoints()
    texts = ["ab", "cd", "ef"]
    theirs = [[1, 97, 98, 2], [1, 99, 101, 2], [1, 101]]
    report = diff_tokenize(tok, texts, theirs)
    assert (report.total, report.differing, report.exit_code) == (3, 2, 1)
    first, second = report.lines
    assert (first.line, first.text, first.ours, first.theirs, first.position) == (2, "cd", [1, 99, 100, 2],
                                                                                  [1, 99, 101, 2], 2)
    assert first.ours_tokens == ["t1", "t99", "t100", "t2"] and first.theirs_tokens == ["t1", "t99", "t101", "t2"]
    assert (second.line, second.position) == (3, 2)
    assert report.to_json() == json.loads(json.dumps(report.to_json()))
    assert report.to_json()["lines"][0]["position"] == 2 and report.to_json()["differing"] == 2
    text = report.text().splitlines()
    assert text[0] == "2 of 3 lines tokenize differently"
    assert text[1:7] == ["line 2: 'cd'", "  first difference at position 2", "  refimpl: [1, 99, 100, 2]",
                         "           ['t1', 't99', 't100', 't2']", "  other:   [1, 99, 101, 2]",
                         "           ['t1', 't99', 't101', 't2']"]
    assert not any(line.startswith("...") for line in text)
    agree = diff_tokenize(tok, ["ab"], [[1, 97, 98, 2]])
    assert (agree.differing, agree.exit_code, agree.lines) == (0, 0, [])
    assert agree.text() == "0 of 1 lines tokenize differently"


def test_only_the_first_shown_lines_are_reported_in_full():
    tok = CodePoints()
    texts = [chr(97 + i) for i in range(SHOWN + 3)]
    report = diff_tokenize(tok, texts, [[0]] * len(texts))
    assert SHOWN == 5 and report.differing == SHOWN + 3 and [d.line for d in report.lines] == [1, 2, 3, 4, 5]
    assert report.text().splitlines()[-1] == "... and 3 more"
    two = diff_tokenize(tok, texts, [[0]] * len(texts), shown=2)
    assert len(two.lines) == 2 and two.text().splitlines()[-1] == f"... and {SHOWN + 1} more"


def test_special_tokens_are_asked_for_unless_told_not_to():
    tok = CodePoints()
    assert diff_tokenize(tok, ["a"], [[97]], add_special_tokens=False).differing == 0 and tok.calls == [False]
    assert diff_tokenize(tok, ["a"], [[97]]).differing == 1 and tok.calls[-1] is True
    with pytest.raises(ValueError, match=r"the input has 1 lines but the ids have 2: one \{\"input_ids\""):
        diff_tokenize(tok, ["a"], [[97], [98]])


def write(tmp_path, lines):
    path = tmp_path / "w.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_read_lines_and_ids(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes("\ufeffa\r\nb\u2028c\n\nd".encode("utf-8"))
    assert read_lines(path) == ["a\r", "b\u2028c", "", "d"]
    path.write_bytes(b"a\n\n")
    assert read_lines(path) == ["a", ""]
    path.write_bytes(b"")
    assert read_lines(path) == []
    path.write_bytes(b"ok\nok\n\xc3 bad\n")
    with pytest.raises(ValueError, match=r"x.txt line 3: not UTF-8 \(invalid continuation byte at byte 6\)"):
        read_lines(path)
    with pytest.raises(ValueError, match="is not a file"):
        read_lines(tmp_path)
    ids = tmp_path / "ids.jsonl"
    ids.write_text('{"input_ids": [1, 2]}\n{"input_ids": []}\n')
    assert read_ids(ids) == [[1, 2], []]
    ids.write_text('{"input_ids": [1]}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r'ids.jsonl line 2: expected \{"input_ids": \[token ids \(integers\)\]\}, '
                                         r"got '\[1, 2\]'"):
        read_ids(ids)
    long = '{"ids": [' + ", ".join(["1"] * 100) + "]}"  # a long line is shown by its first 120 characters
    ids.write_text(long + "\n")
    with pytest.raises(ValueError) as info:
        read_ids(ids)
    assert str(info.value).endswith(f"got {long[:120]!r}")
    assert read_ids(write(tmp_path, ['{"input_ids": [' + ", ".join(["7"] * 100) + "]}"])) == [[7] * 100]
    ids.write_text('{"input_ids": "12"}\n')
    with pytest.raises(ValueError, match="line 1: expected"):
        read_ids(ids)
    ids.write_text('{"input_ids": [1]}\n{"input_ids": [1}\n')
    with pytest.raises(ValueError, match="ids.jsonl line 2: not valid JSON"):
        read_ids(ids)


# ------------------------------------------------------------------ torch_vml's calls to MKL

needs_mkl = pytest.mark.skipif(not torch_vml.available(), reason="MKL's runtime is not installed")


@needs_mkl
def test_vml_mode_is_high_accuracy():
    """VML_HA (0x2), not VML_LA (0x1) or VML_EP (0x3), FTZ/DAZ off (0x140000), errors ignored (0x100)."""
    assert torch_vml._MODE.value == 0x2 | 0x140000 | 0x100
    x = np.linspace(-80.0, 80.0, 20001, dtype=np.float32)
    exact = np.exp(x.astype(np.float64))
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(torch_vml.exp(x) - exact) / ulp) < 1.0  # high accuracy: under one ulp
    tiny = np.array([1e-40, -1e-40], np.float32)  # subnormal inputs are not flushed to zero
    assert torch_vml.sin(tiny).tolist() == tiny.tolist()
    assert torch_vml.cos(np.array([0.0], np.float32)).tolist() == [1.0]


@needs_mkl
@pytest.mark.parametrize("n", [1, 2, 7])
def test_every_element_is_computed(n):
    x = np.arange(1, n + 1, dtype=np.float32) / 4
    for name, exact in (("exp", np.exp), ("sin", np.sin), ("cos", np.cos)):
        ours = getattr(torch_vml, name)(x)
        assert ours.dtype == np.float32 and ours.shape == (n,)
        np.testing.assert_allclose(ours, exact(x.astype(np.float64)), rtol=2e-7, err_msg=name)


def test_pips_mkl_is_found_where_pip_puts_it():
    """With the `mkl` package installed (refimpl[islands]), the library it ships is the first place tried."""
    import importlib.metadata
    from pathlib import Path
    try:
        dist = importlib.metadata.distribution("mkl")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the mkl package is not installed")
    shipped = {Path(dist.locate_file(f)).resolve() for f in dist.files or []
               if Path(str(f)).name in ("libmkl_rt.so.2", "mkl_rt.2.dll")}
    assert shipped, "the mkl package lists no libmkl_rt"
    assert Path(next(torch_vml._candidates())).resolve() in shipped
    assert torch_vml.available() and torch_vml.mkl() is torch_vml.mkl()
