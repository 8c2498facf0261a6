"""refimpl.diff_tokenize and `refimpl diff-tokenize`, without upstream: upstream's slow ids recorded in the golden
tokenizer captures (golden/capture_tokenizers.py) agree; planted changes are reported at their line and position;
the file rules (lines split on "\\n" only) and bad files give clear errors naming the line."""
import json
from pathlib import Path

import pytest

import refimpl
from golden import GOLDEN
from refimpl.cli import main
from refimpl.diff_tokenize import diff_tokenize, first_difference, read_lines

SHIPPED = Path(refimpl.__file__).parent / "data" / "opt-tiny"
TOKENIZERS = GOLDEN / "tokenizers"


def golden_calls(name):  # -> [(text, upstream's slow input_ids)] for the plain one-text calls of a capture
    capture = json.loads((TOKENIZERS / f"{name}.json").read_text())
    return [(c["text"], c["slow"]["input_ids"]) for c in capture["cases"]
            if c["op"] == "call" and isinstance(c["text"], str) and "\n" not in c["text"]
            and c.get("kwargs") == {"return_special_tokens_mask": True} and isinstance(c.get("slow"), dict)]


def write(tmp_path, texts, ids, name="x"):
    lines = tmp_path / f"{name}.txt"
    lines.write_bytes("".join(t + "\n" for t in texts).encode("utf-8"))
    against = tmp_path / f"{name}.jsonl"
    against.write_text("".join(json.dumps({"input_ids": i}) + "\n" for i in ids), encoding="utf-8")
    return lines, against


def run_cli(capsys, *argv):
    code = main(list(map(str, argv)))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("name", ["opt", "led", "xglm-bpe", "xglm-unigram", "bert-uncased", "bert-cased"])
def test_upstream_slow_ids_agree(tmp_path, capsys, name):
    cases = golden_calls(name)
    assert len(cases) >= 5, f"{name}: too few plain calls in the capture"
    lines, against = write(tmp_path, *zip(*cases))
    code, out, _ = run_cli(capsys, "diff-tokenize", "--tokenizer", TOKENIZERS / name, "--input", lines,
                           "--against", against, "--json")
    assert (code, json.loads(out)["differing"], json.loads(out)["total"]) == (0, 0, len(cases)), out


def test_planted_changes_are_reported_where_they_are(tmp_path, capsys):
    cases = golden_calls("opt")
    texts, ids = [t for t, _ in cases], [list(i) for _, i in cases]
    planted = {2: 1, 4: len(ids[4]), 5: 0}  # line index -> position changed (len: one id appended)
    for index, position in planted.items():
        if position == len(ids[index]):
            ids[index] = ids[index] + [7]
        else:
            ids[index][position] += 1
    lines, against = write(tmp_path, texts, ids)
    code, out, _ = run_cli(capsys, "diff-tokenize", "--tokenizer", TOKENIZERS / "opt", "--input", lines,
                           "--against", against, "--json", "--show", 2)
    report = json.loads(out)
    assert code == 1 and report["differing"] == 3 and len(report["lines"]) == 2
    for shown, index in zip(report["lines"], sorted(planted)):
        assert (shown["line"], shown["position"], shown["text"]) == (index + 1, planted[index], texts[index])
        assert shown["theirs"] == ids[index] and shown["ours"] == cases[index][1]
    code, out, _ = run_cli(capsys, "diff-tokenize", "--tokenizer", TOKENIZERS / "opt", "--input", lines,
                           "--against", against)
    assert code == 1 and out.startswith(f"3 of {len(texts)} lines tokenize differently")
    assert f"line {sorted(planted)[0] + 1}: {texts[sorted(planted)[0]]!r}" in out


def test_first_difference():
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2 and first_difference([1, 2, 3], [1, 2]) == 2
    assert first_difference([], []) is None and first_difference([], [4]) == 0


def test_lines_split_on_newline_only(tmp_path):
    texts = ["a\rb", "c\u2028d\u2029e", "f\x0cg\x0bh\x1c\x1d\x1e\x85i", "", "  trailing  ", "\t"]
    file = tmp_path / "lines.txt"
    file.write_bytes(("\n".join(texts) + "\n").encode("utf-8"))
    assert read_lines(file) == texts
    file.write_bytes("\ufeffone\ntwo".encode("utf-8"))  # a byte order mark; no final newline
    assert read_lines(file) == ["one", "two"]
    file.write_bytes(b"")
    assert read_lines(file) == []
    file.write_bytes(b"\n")
    assert read_lines(file) == [""]


def test_specials_and_no_special_tokens(tmp_path, capsys):
    tokenizer = refimpl.load_tokenizer(SHIPPED)
    texts = ["Hello world", "</s> inside", ""]
    without = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    assert all(tokenizer.encode(t)[1:] == w for t, w in zip(texts, without))  # OPT adds one leading </s>
    lines, against = write(tmp_path, texts, without)
    argv = ["diff-tokenize", "--tokenizer", SHIPPED, "--input", lines, "--against", against, "--json"]
    code, out, _ = run_cli(capsys, *argv)
    assert code == 1 and json.loads(out)["differing"] == 3 and json.loads(out)["lines"][0]["position"] == 0
    code, out, _ = run_cli(capsys, *argv, "--no-special-tokens")
    assert code == 0 and json.loads(out)["differing"] == 0
    report = diff_tokenize(tokenizer, texts, without, add_special_tokens=False)
    assert (report.total, report.differing, report.exit_code) == (3, 0, 0)


@pytest.mark.parametrize("content, message", [
    ('{"input_ids": [1, 2]}\n{"input_ids": [3]\n', "line 2: not valid JSON"),
    ('{"input_ids": [1, 2]}\n[1, 2]\n', 'line 2: expected {"input_ids"'),
    ('{"input_ids": [1, 2]}\n{"ids": [1]}\n', "line 2: expected"),
    ('{"input_ids": [1, 2.5]}\n{"input_ids": [1]}\n', "line 1: expected"),
    ('{"input_ids": [true]}\n{"input_ids": [1]}\n', "line 1: expected"),
    ('{"input_ids": [1]}\n', "the input has 2 lines but the ids have 1"),
    ('{"input_ids": [1]}\n{"input_ids": [1]}\n{"input_ids": [1]}\n', "the input has 2 lines but the ids have 3"),
    ("[" * 100000 + "\n" + "{}\n", "line 1: not valid JSON"),
])
def test_bad_ids_files(tmp_path, capsys, content, message):
    lines = tmp_path / "lines.txt"
    lines.write_text("one\ntwo\n", encoding="utf-8")
    against = tmp_path / "ids.jsonl"
    against.write_text(content, encoding="utf-8")
    code, _, err = run_cli(capsys, "diff-tokenize", "--tokenizer", SHIPPED, "--input", lines, "--against", against)
    assert code == 2 and message in err, err


def test_bad_input_files(tmp_path, capsys):
    against = tmp_path / "ids.jsonl"
    against.write_text('{"input_ids": [1]}\n' * 3, encoding="utf-8")
    lines = tmp_path / "lines.txt"
    lines.write_bytes(b"fine\nstill fine\nbad \xff byte\n")
    code, _, err = run_cli(capsys, "diff-tokenize", "--tokenizer", SHIPPED, "--input", lines, "--against", against)
    assert code == 2 and "line 3: not UTF-8" in err
    code, _, err = run_cli(capsys, "diff-tokenize", "--tokenizer", SHIPPED, "--input", tmp_path / "missing.txt",
                           "--against", against)
    assert code == 2 and "missing.txt is not a file" in err
    code, _, err = run_cli(capsys, "diff-tokenize", "--tokenizer", tmp_path / "nowhere", "--input", lines,
                           "--against", against)
    assert code == 2 and "nowhere" in err
    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error, before any file is read
        run_cli(capsys, "diff-tokenize", "--tokenizer", SHIPPED, "--input", lines, "--against", against, "--show", -1)
    assert exit_info.value.code == 2 and "--show: expected an integer >= 0, got '-1'" in capsys.readouterr().err
