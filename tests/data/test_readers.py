"""tartan.data.readers: rows with their true line numbers, and one TartanError naming the file and the
line for anything malformed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tartan.data.readers import decoded_lines, read_rows, readers
from tartan.errors import TartanError


def rows_of(path: Path) -> list[tuple[int, dict]]:
    return list(read_rows(path))


def error_of(path: Path) -> TartanError:
    with pytest.raises(TartanError) as caught:
        rows_of(path)
    return caught.value


def test_every_labelled_format_has_a_reader():
    assert {"jsonl", "csv", "tsv", "txt"} <= set(readers.names())


# --- jsonl -------------------------------------------------------------------------------------------

def test_jsonl_line_numbers_count_skipped_blank_lines(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n\n   \n{"text": "b", "label": "y"}\n\n{"text": "c", "label": "x"}\n')
    rows = rows_of(path)
    assert [line for line, _ in rows] == [1, 4, 6]
    assert [row["text"] for _, row in rows] == ["a", "b", "c"]


def test_jsonl_without_final_newline_and_with_crlf(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"text": "a"}\r\n{"text": "b"}')
    assert rows_of(path) == [(1, {"text": "a"}), (2, {"text": "b"})]


def test_jsonl_malformed_json_names_the_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n\n{"text": "b", "label": \n{"text": "c", "label": "x"}\n')
    error = error_of(path)
    assert error.path == str(path) and error.line == 3
    assert "malformed JSON" in error.message
    assert str(error).startswith(f"{path}:3: ")
    assert "\n" not in str(error)


@pytest.mark.parametrize("line, message", [
    ('{"text": "a", "label": ' + "9" * 5000 + "}", "unreadable JSON (Exceeds the limit"),
    ("[" * 100_000 + "]" * 100_000, "unreadable JSON"),
    ('{"text": "cut off \\ud83d", "label": "x"}', "half of a UTF-16 surrogate pair")])
def test_jsonl_that_json_reads_but_no_tokenizer_could_names_the_line(tmp_path, line, message):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "whole \\ud83d\\ude00 emoji", "label": "x"}\n' + line + "\n")
    error = error_of(path)
    assert (error.path, error.line) == (str(path), 2) and message in error.message and "\n" not in str(error)
    whole = tmp_path / "whole.jsonl"  # a surrogate pair escaped whole is one character, and reads
    whole.write_text('{"text": "whole \\ud83d\\ude00 emoji"}\n')
    assert rows_of(whole) == [(1, {"text": "whole \U0001f600 emoji"})]


@pytest.mark.parametrize("line, kind", [("[1, 2]", "list"), ('"text"', "str"), ("5", "int"), ("null", "NoneType")])
def test_jsonl_non_object_line_is_an_error(tmp_path, line, kind):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a"}\n' + line + "\n")
    error = error_of(path)
    assert (error.path, error.line) == (str(path), 2)
    assert "JSON object" in error.message and kind in error.message


def test_jsonl_undecodable_bytes_name_their_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"text": "a", "label": "x"}\n{"text": "\xff\xfe", "label": "x"}\n{"text": "c"}\n')
    error = error_of(path)
    assert (error.path, error.line) == (str(path), 2)
    assert "UTF-8" in error.message
    assert str(error).startswith(f"{path}:2: ")


def test_valid_utf8_beyond_ascii_reads(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"text": "naïve café — 東京"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert rows_of(path) == [(1, {"text": "naïve café — 東京"})]


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
@pytest.mark.parametrize("suffix", ["jsonl", "txt"])
def test_empty_file_is_an_error_naming_it(tmp_path, content, suffix):
    path = tmp_path / f"train.{suffix}"
    path.write_bytes(content)
    error = error_of(path)
    assert error.path == str(path) and error.line is None
    assert "empty" in error.message


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "tsv", "txt"])
def test_missing_file_is_an_error_naming_it(tmp_path, suffix):
    path = tmp_path / f"absent.{suffix}"
    error = error_of(path)
    assert error.path == str(path)
    assert "not found" in error.message


def test_a_directory_is_not_a_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.mkdir()
    error = error_of(path)
    assert error.path == str(path) and "not a file" in error.message


def test_unknown_extension_error_names_the_file(tmp_path):
    path = tmp_path / "inputs.json"
    path.write_text('{"text": "a"}\n')
    error = error_of(path)
    assert error.path == str(path)


# --- csv / tsv -----------------------------------------------------------------------------------------

def test_csv_with_header_and_quoted_commas(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('text,label\n"hello, world",a\n\nplain,b\n"she said ""hi"", then left",a\n')
    rows = rows_of(path)
    assert rows == [(2, {"text": "hello, world", "label": "a"}),
                    (4, {"text": "plain", "label": "b"}),
                    (5, {"text": 'she said "hi", then left', "label": "a"})]


@pytest.mark.parametrize("suffix, delimiter", [(".csv", ","), (".tsv", "\t")])
def test_a_field_longer_than_the_csv_modules_default_limit_reads(tmp_path, suffix, delimiter):
    path = tmp_path / f"train{suffix}"
    long_text = "word " * 40_000  # 200,000 characters: csv's default limit is 131,072
    path.write_text(f"text{delimiter}label\n{long_text}{delimiter}pos\nshort{delimiter}neg\n")
    assert rows_of(path) == [(2, {"text": long_text, "label": "pos"}), (3, {"text": "short", "label": "neg"})]


def test_csv_header_names_are_stripped(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(" text , label \nhello,a\n")
    assert rows_of(path) == [(2, {"text": "hello", "label": "a"})]


def test_csv_crlf_line_endings(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"text,label\r\nhello,a\r\nworld,b\r\n")
    assert rows_of(path) == [(2, {"text": "hello", "label": "a"}), (3, {"text": "world", "label": "b"})]


def test_csv_quoted_field_keeps_its_line_break_and_the_record_is_named_by_its_first_line(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('text,label\n"line one\nline two",x\nplain,y\n')
    assert rows_of(path) == [(2, {"text": "line one\nline two", "label": "x"}), (4, {"text": "plain", "label": "y"})]


def test_csv_unclosed_quote_is_reported_where_its_record_starts(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('text,label\na,x\n"never closed,y\nb,x\n')
    error = error_of(path)
    assert (error.path, error.line) == (str(path), 3)


def test_tsv_without_quoting_keeps_its_quotation_marks_as_text(tmp_path):
    path = tmp_path / "train.tsv"  # GLUE-style: a field may begin with a quotation mark that is text
    path.write_text('text\tlabel\n"Hello" she said\tx\nan "open quote\ty\n')
    assert [row["text"] for _, row in rows_of(path)] == ['"Hello" she said', 'an "open quote']


def test_tsv_quoted_by_a_csv_writer_is_unquoted(tmp_path):
    path = tmp_path / "train.tsv"  # as csv.writer and pandas write a field with a tab, newline or quote
    path.write_text('text\tlabel\n"a\ttab, a ""quote"" and\na line break"\tx\nplain\ty\n')
    assert rows_of(path) == [(2, {"text": 'a\ttab, a "quote" and\na line break', "label": "x"}),
                             (4, {"text": "plain", "label": "y"})]


def test_tsv_quoted_by_a_csv_writer_with_a_bad_row_names_the_bad_row(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text('text\tlabel\n"a\tb"\tx\nc\ty\tz\n')
    error = error_of(path)
    assert error.line == 3 and "3 fields where the header has 2" in error.message


def test_tsv_reads_tabs_and_keeps_commas(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("text\ttext_pair\tlabel\nhello, world\tsecond\ta\n\nmore text\tpair\tb\n")
    assert rows_of(path) == [(2, {"text": "hello, world", "text_pair": "second", "label": "a"}),
                             (4, {"text": "more text", "text_pair": "pair", "label": "b"})]


@pytest.mark.parametrize("suffix, sep", [("csv", ","), ("tsv", "\t")])
@pytest.mark.parametrize("bad", ["too,many,fields", "lonely"])
def test_delimited_row_with_wrong_field_count_names_the_line(tmp_path, suffix, sep, bad):
    path = tmp_path / f"train.{suffix}"
    path.write_text(f"text{sep}label\nok{sep}a\n\n{bad.replace(',', sep)}\nok{sep}b\n")
    error = error_of(path)
    assert (error.path, error.line) == (str(path), 4)
    assert ("1 field where" if bad == "lonely" else "3 fields where") in error.message and "header has 2" in error.message


def test_csv_undecodable_bytes_name_their_line(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"text,label\nhello,a\nbad \xff\xfe bytes,b\n")
    error = error_of(path)
    assert (error.path, error.line) == (str(path), 3)
    assert "UTF-8" in error.message


@pytest.mark.parametrize("content", ["", "text,label\n", "text,label\n\n   \n\n"])
def test_csv_without_data_rows_is_empty(tmp_path, content):
    path = tmp_path / "train.csv"
    path.write_text(content)
    error = error_of(path)
    assert error.path == str(path) and "empty" in error.message


def test_csv_empty_header_names_line_1(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(",\nhello,a\n")
    error = error_of(path)
    assert (error.path, error.line) == (str(path), 1)
    assert "header" in error.message


def test_csv_header_naming_a_column_twice_names_line_1(tmp_path):
    # each row would keep only the last of the two columns
    path = tmp_path / "train.csv"
    path.write_text("text,label,text\nhello,a,other\n")
    error = error_of(path)
    assert (error.path, error.line) == (str(path), 1)
    assert "'text' more than once" in error.message


def test_csv_with_utf8_byte_order_mark(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\nhello,a\n")
    assert rows_of(path) == [(2, {"text": "hello", "label": "a"})]


# --- txt -----------------------------------------------------------------------------------------------

def test_txt_one_passage_per_line_blank_lines_skipped_but_counted(tmp_path):
    path = tmp_path / "inputs.txt"
    path.write_text("first passage\n\n  \nsecond, with comma\t and tab\n")
    assert rows_of(path) == [(1, {"text": "first passage"}), (4, {"text": "second, with comma\t and tab"})]


def test_txt_undecodable_bytes_name_their_line(tmp_path):
    path = tmp_path / "inputs.txt"
    path.write_bytes(b"fine\n\xff\xfe\n")
    error = error_of(path)
    assert (error.path, error.line) == (str(path), 2)


@pytest.mark.parametrize("suffix, content", [
    ("txt", b"first passage\rsecond passage\rthird\r"),
    ("csv", b"text,label\rhello,a\r"),
    ("jsonl", b'{"text": "a", "label": "x"}\r{"text": "b", "label": "y"}')])
def test_a_file_whose_line_breaks_are_carriage_returns_only_is_one_line(tmp_path, suffix, content):
    # a .txt read as one line would be one passage, without a word
    path = tmp_path / f"inputs.{suffix}"
    path.write_bytes(content)
    error = error_of(path)
    assert (error.path, error.line) == (str(path), 1)
    assert "carriage returns only" in error.message


def test_a_stray_carriage_return_inside_a_line_of_a_file_with_line_feeds_is_text(tmp_path):
    path = tmp_path / "inputs.txt"
    path.write_bytes(b"scraped\rtext\nsecond\r\n")
    assert rows_of(path) == [(1, {"text": "scraped\rtext"}), (2, {"text": "second"})]


def test_decoded_lines_numbers_from_one_and_strips_newlines(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes(b"a\r\n\nb")
    assert list(decoded_lines(path)) == [(1, "a"), (2, ""), (3, "b")]


def test_a_record_of_empty_fields_is_a_row_and_a_blank_line_between_rows_is_said(tmp_path, capsys):
    path = tmp_path / "x.csv"
    path.write_text('text,label\nzeta,a\n,\n\nkappa,b\n\n')
    assert list(read_rows(path)) == [(2, {"text": "zeta", "label": "a"}), (3, {"text": "", "label": ""}),
                                      (5, {"text": "kappa", "label": "b"})]
    assert f"warning: {path}: skipped 1 blank line(s) between rows (line 4)" in capsys.readouterr().err  # not 6


def test_a_tsv_whose_quotation_marks_may_be_text_is_read_quoted_and_said(tmp_path, capsys):
    # a GLUE-style file: one text begins with a quotation mark, a later one ends with one; read as
    # quoted (a csv writer makes the same bytes), the first example swallows the second
    path = tmp_path / "train.tsv"
    path.write_text('text\tlabel\n"I am tired.\tneg\nLet us go home."\tpos\nA quiet evening.\tpos\n')
    assert [row["label"] for _, row in read_rows(path)] == ["pos", "pos"]
    assert f"warning: {path}:2: read as quoted, 2 rows; with its quotation marks as text it reads as 3" in capsys.readouterr().err
    # a quoted field with a line break but no tab reads one way only: nothing said
    path.write_text('text\tlabel\n"two\nlines"\tpos\nA quiet evening.\tpos\n')
    assert len(list(read_rows(path))) == 2 and "warning" not in capsys.readouterr().err


def test_a_passage_file_with_a_blank_first_line_is_named_at_that_line(tmp_path):
    from tartan.data.unlabelled import read_texts

    path = tmp_path / "domain.csv"
    path.write_text("\ntext\nsome domain text\n")
    with pytest.raises(TartanError, match="empty header line") as error:
        read_texts(path)
    assert error.value.line == 1
    path.write_text("")
    with pytest.raises(TartanError, match="no text in file"):
        read_texts(path)
