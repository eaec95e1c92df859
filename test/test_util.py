"""mlproj.util: the one key=value parser and renderer, the URI redactor, the table renderer, the next id."""

from __future__ import annotations

import mongomock
import pytest

from mlproj.util.files import shown_python
from mlproj.util.mongo import next_run_id
from mlproj.util.table import render
from mlproj.util.uri import redact_uri
from mlproj.util.values import parse_value, render_value

# Values people write after `with`: numbers, literals, words, paths, devices, quoted strings, lists, dicts.
SACRED_SAMPLES = ["0.1", "1e-3", "-1", "1_000", "0x10", "None", "True", "true", "lenet", "cuda:0", "runs/1", "a,b",
                  "'1e-3'", '"x y"', "[1, (2, 3)]", "(1, 2)", "{1: 2}", '{"a": (1,)}', "inf", "", " 7 "]


@pytest.mark.parametrize("text", SACRED_SAMPLES)
def test_parse_value_agrees_with_sacreds_own_parser(text: str) -> None:
    from sacred.arg_parser import _convert_value

    assert parse_value(text) == _convert_value(text.strip())


@pytest.mark.parametrize("value", [0.1, 1e-5, 3, True, None, "mlp", "1e-3", "two words", "it's", [1, "a"], {"k": 2}])
def test_render_value_reads_back_as_the_same_value(value: object) -> None:
    assert parse_value(render_value(value)) == value


def test_render_value_plain_word_unquoted() -> None:
    assert render_value("lenet") == "lenet"
    assert render_value("1e-3") == "'1e-3'"  # a string that would read back as a number keeps its quotes
    assert render_value("None") == "'None'" and render_value("") == "''"


def test_redact_uri_multi_host_encoded_password_hidden_user_kept() -> None:
    assert redact_uri("mongodb://u:p%40ss@h1:27017,h2/db?authSource=admin") == "mongodb://u:***@h1:27017,h2/db?authSource=admin"
    assert redact_uri("mongodb://localhost:27017") == "mongodb://localhost:27017"


def test_render_table_numbers_right_strings_left_csv_keeps_numbers_whole() -> None:
    rows = [{"run": 1, "model": "mlp", "loss": 0.123456}, {"run": 12, "model": "lenet", "loss": None}]
    assert render(rows, "table") == "run  model    loss\n  1  mlp    0.1235\n 12  lenet\n"
    assert render(rows, "csv") == "run,model,loss\n1,mlp,0.123456\n12,lenet,\n"


def test_next_run_id_one_past_largest_integer_id() -> None:
    database = mongomock.MongoClient()["sacred"]
    assert next_run_id(database) == 1
    database["runs"].insert_many([{"_id": 3}, {"_id": 7}, {"_id": "not-a-number"}])
    assert next_run_id(database) == 8


def test_shown_python_python3_with_python_sibling_names_python(tmp_path, monkeypatch) -> None:
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python3").write_text("")
    (bin_dir / "python").symlink_to("python3")  # as a venv makes them
    (bin_dir / "python3.11").symlink_to("python3")
    monkeypatch.chdir(tmp_path)
    assert shown_python(str(bin_dir / "python3")) == ".venv/bin/python"
    assert shown_python(str(bin_dir / "python3.11")) == ".venv/bin/python"
    (bin_dir / "python").unlink()  # no such sibling: the interpreter as it is
    assert shown_python(str(bin_dir / "python3")) == ".venv/bin/python3"
