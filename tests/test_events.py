"""Timeline lines are one line, whatever text reaches them."""

import pytest

from provisiond.events import MESSAGE_LIMIT, has_control, one_line


@pytest.mark.parametrize(("text", "line"), [
    ("plain text", "plain text"),
    ("a\nb", "a\\nb"),
    ("a\r\nb", "a\\r\\nb"),
    ("tab\there", "tab\\there"),
    ("\x1b[2Jcleared", "\\x1b[2Jcleared"),
    ("next\u2028line", "next\\u2028line"),
    ("c1\x85control", "c1\\x85control"),
    ("ünïcode ✓", "ünïcode ✓"),
])
def test_control_characters_become_visible_escapes(text, line):
    assert one_line(text) == line
    assert len(one_line(text).splitlines()) == 1
    assert has_control(text) == (text != line)


def test_a_long_message_is_cut_and_marked():
    assert one_line("x" * (MESSAGE_LIMIT + 10)) == "x" * MESSAGE_LIMIT + "…"
