"""Progress output: a live bar on a terminal, plain lines (step, fields, rate, ETA) elsewhere."""

from __future__ import annotations

import io

from vltseg_core.progress import Progress, image_progress


def test_plain_lines_at_fixed_interval_and_at_the_end() -> None:
    out = io.StringIO()
    progress = Progress("train", 10, every=3, live=False, stream=out)
    for step in range(1, 11):
        progress.update(step, loss=f"{1 / step:.2f}")
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["3/10", "6/10", "9/10", "10/10"]
    assert lines[0].startswith("train 3/10  loss 0.33  ") and " it/s  eta " in lines[0]


def test_rate_and_eta_count_from_the_resume_point() -> None:
    progress = Progress("train", 600, start=100, live=False, stream=io.StringIO())
    assert progress.line(120, 10.0, {"lr": "1.00e-03"}) == (
        "train 120/600  lr 1.00e-03  2.00 it/s  eta 0:04:00")
    assert progress.line(100, 0.0, {}).endswith("0.00 it/s  eta ?")


def test_live_bar_draws_instead_of_lines(capsys) -> None:
    progress = Progress("eval", 4, live=True)
    progress.update(2, loss="1.0")
    assert progress.bar.n == 2
    progress.close()
    assert capsys.readouterr().out == ""


def test_images_print_each_quarter() -> None:
    progress = image_progress("eval fog", 8)
    progress.stream = out = io.StringIO()
    for step in range(1, 9):
        progress.update(step)
    assert [line.split()[2] for line in out.getvalue().splitlines()] == ["2/8", "4/8", "6/8", "8/8"]
    assert " img/s " in out.getvalue()
