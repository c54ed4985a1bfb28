"""Label rules (service.labels) and how a log read from the store is cut into whole lines
(service.api.job_logs): pure functions, no database."""

from __future__ import annotations

import pytest

from counterweight.service.api.job_logs import attempt_log, parse_resume
from counterweight.service.labels import check_labels, parse_filter
from counterweight.service.logs import end_of_log


def test_a_filter_splits_at_the_first_colon() -> None:
    assert parse_filter("run:2026:11") == ("run", "2026:11")
    assert parse_filter("empty:") == ("empty", "")
    for bad in ("nocolon", ":v", "bad key:v", "k:" + "v" * 257, "k:a\tb"):
        with pytest.raises(ValueError):
            parse_filter(bad)


def test_bounds_of_a_label_set() -> None:
    assert check_labels({f"k{i}": "v" for i in range(32)})
    with pytest.raises(ValueError, match="at most 32"):
        check_labels({f"k{i}": "v" for i in range(33)})
    assert check_labels({"a" * 63: "v" * 256, "team/sub.x_y-z": ""})
    with pytest.raises(ValueError, match="label key"):
        check_labels({"a" * 64: "v"})
    with pytest.raises(ValueError, match="lone surrogate"):
        check_labels({"k": "\ud800"})


def test_a_log_keeps_whole_lines_and_knows_when_it_is_complete() -> None:
    end = end_of_log("j", 2)
    partial = attempt_log("one\ntwo\nthr", "j", 2)
    assert (partial.lines, partial.complete) == (["one", "two"], False)
    whole = attempt_log(f"one\n2026 INFO x {end}\n", "j", 2)
    assert (whole.lines, whole.complete) == (["one", f"2026 INFO x {end}"], True)
    # Another attempt's end line does not end this one.
    assert not attempt_log(f"{end_of_log('j', 1)}\n", "j", 2).complete
    assert attempt_log(None, "j", 1).lines == []


def test_resume_positions() -> None:
    assert parse_resume("2.17") == (2, 17)
    for bad in (None, "", "2", "a.b", "1.2.3", "9" * 12 + ".1"):
        assert parse_resume(bad) == (1, 0)
