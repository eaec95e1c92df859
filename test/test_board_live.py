"""A run's output on the board: following a running run (`read_output_tail`, what the live poll
sends): a redrawn progress line replaces the one shown, characters are never cut, a rewritten file
starts over; and the labels around it."""

from __future__ import annotations

from pathlib import Path

from conftest import write_run
from flask import render_template

from mlproj.board import create_app
from mlproj.board.context import MAX_COMPARED
from mlproj.runs.reader import read_output_tail


def poll(folder: Path, shown: str, offset: int, limit: int) -> tuple[str, int]:
    """One poll as board.js makes it: what it shows up to its last newline, then the answer (all
    of the answer when the offset went back: the file shrank)."""
    text, after = read_output_tail(str(folder), offset, limit)
    kept = "" if after < offset else shown[: shown.rfind("\n") + 1]
    return kept + text, after


def follow(folder: Path, shown: str, offset: int, limit: int) -> tuple[str, int]:
    """Poll until the answer's offset stops moving (all of the file read)."""
    for _ in range(1000):
        shown, after = poll(folder, shown, offset, limit)
        if after == offset:
            return shown, after
        offset = after
    raise AssertionError("the offset never settled")


def test_read_output_tail_rewritten_last_line_replaces_the_one_shown(tmp_path: Path) -> None:
    cout = tmp_path / "cout.txt"
    cout.write_text("epoch 1\ntrain  10%")
    shown, offset = read_output_tail(str(tmp_path), None, 1024)
    assert (shown, offset) == ("epoch 1\ntrain  10%", len("epoch 1\n"))  # the unfinished line comes again next time
    cout.write_text("epoch 1\ntrain 100%\nepoch 2\n")  # as RunFolderObserver.save_cout rewrites a redrawn line
    shown, offset = poll(tmp_path, shown, offset, 1024)
    assert shown == "epoch 1\ntrain 100%\nepoch 2\n" and offset == cout.stat().st_size


def test_read_output_tail_multibyte_characters_split_by_the_limit_come_whole(tmp_path: Path) -> None:
    text = "".join(f"epoch {i} █▌ loss é {i / 7:.3f} 🙂\n" for i in range(20)) + "train ███▍ 40%"
    (tmp_path / "cout.txt").write_text(text)
    for limit in (37, 40, 41, 42, 43):  # the reads end at every byte of a 2-, 3- and 4-byte character
        shown, offset = follow(tmp_path, "", 0, limit)
        assert shown == text and offset == len(text.encode()) - len("train ███▍ 40%".encode())
    tail, _ = read_output_tail(str(tmp_path), None, len("🙂\ntrain ███▍ 40%".encode()) - 1)  # begins inside the 🙂
    assert tail == "\ntrain ███▍ 40%"


def test_read_output_tail_shrunk_file_is_sent_again_to_replace_all(tmp_path: Path) -> None:
    cout = tmp_path / "cout.txt"
    cout.write_text("epoch 1\nepoch 2\nepoch 3\n")
    shown, offset = follow(tmp_path, "", 0, 1024)
    cout.write_text("epoch 1\nagain\n")  # written anew, shorter than what was read
    text, after = read_output_tail(str(tmp_path), offset, 1024)
    assert after < offset and text == "epoch 1\nagain\n"
    assert poll(tmp_path, shown, offset, 1024) == ("epoch 1\nagain\n", after)


def test_read_output_tail_line_longer_than_the_limit_comes_in_pieces(tmp_path: Path) -> None:
    (tmp_path / "cout.txt").write_text("0123456789\n")
    assert read_output_tail(str(tmp_path), 0, 4) == ("0123\n", 4)
    assert read_output_tail(str(tmp_path), 8, 4) == ("89\n", 11)
    assert read_output_tail(str(tmp_path / "none"), 0, 4) == ("", 0)


def test_board_run_page_output_label_counts_bytes(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "runs", 1, {}, {})
    (folder / "cout.txt").write_text("é" * 3000 + "\n")  # 3,001 characters, 6,001 bytes
    page = create_app(tmp_path / "runs").test_client().get("/runs/1").data.decode()
    assert "(cout.txt, its last 5.9 KiB)" in page


def test_trials_page_compare_limit_is_the_one_it_is_given(tmp_path: Path) -> None:
    write_run(tmp_path / "runs", 1, {}, {})
    app = create_app(tmp_path / "runs")
    with app.test_request_context():
        page = render_template("trials.html", kind="sweep", name="s", rows=[], columns=[], best={}, of=None, runs=[],
                               max_compared=MAX_COMPARED - 1)
    assert f'data-max="{MAX_COMPARED - 1}"' in page
