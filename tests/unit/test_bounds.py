"""The one id rule and the bound on error messages (aragog.common.bounds)."""

import pytest
from aragog.common.bounds import MAX_MESSAGE, clip, id_error, is_id


@pytest.mark.parametrize("value", ["a", "r-1", "A.b_c-9", "0" * 64, "chain3", "text-to-sql"])
def test_ids_the_rule_accepts(value):
    assert is_id(value) and id_error("request_id", value) is None


@pytest.mark.parametrize(
    "value",
    ["", "abc\n", "abc:chosen", "abc:stages", "a\tb", "a\x00b", "a\x7f", "bad id!", "0" * 65,
     "-lead", ".hidden", "..", "a/b", "é", None, 42],
    ids=repr,
)
def test_ids_the_rule_refuses(value):
    assert not is_id(value)
    message = id_error("request_id", value)
    assert message and message.startswith("request_id must be 1-64 characters")


def test_optional_ids_may_be_empty():
    assert id_error("tenant", "", optional=True) is None
    assert id_error("tenant", "a:b", optional=True)


def test_a_refused_id_is_quoted_briefly():
    message = id_error("request_id", "x" * 100_000 + ":")
    assert message is not None and len(message) < 200


def test_clip_bounds_and_marks_the_cut():
    assert clip("short") == "short"
    cut = clip("y" * 10_000)
    assert len(cut) == MAX_MESSAGE and cut.endswith("…")
    assert clip("abcdef", 4) == "abc…"
