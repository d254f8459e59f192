from __future__ import annotations

import pytest

from igcv_nas.units import parse_count, parse_duration


@pytest.mark.parametrize("text,value", [
    ("300M", 300_000_000), ("0.3G", 300_000_000), ("300000000", 300_000_000),
    ("3.5M", 3_500_000), ("15k", 15_000), ("1e3K", 1_000_000), (" 2G ", 2_000_000_000),
])
def test_parse_count(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize("text,msg", [
    ("abc", "is not a count"), ("-5M", "is not a count"), ("0", "must be positive"),
    ("1e400", "too large"), ("300X", "is not a count"), ("", "is not a count"),
])
def test_parse_count_rejects_with_the_value_named(text, msg):
    with pytest.raises(ValueError, match=msg) as e:
        parse_count(text, "--flops")
    assert f"--flops {text!r}" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text,seconds", [("15ms", 0.015), ("90s", 90.0), ("30m", 1800.0),
                                          ("2h", 7200.0), ("1d", 86400.0), ("12", 12.0)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["soon", "-1h", "0s", "5 weeks"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)
