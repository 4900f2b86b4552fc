import pytest

from serve_app.stop_strings import StopStringMatcher


def run(stops, pieces):
    matcher = StopStringMatcher(stops)
    out = [matcher.push(p) for p in pieces]
    out.append(matcher.flush())
    return out, matcher.stopped


def test_no_stop_strings_passes_text_through():
    out, stopped = run([], ["a", "b"])
    assert out == ["a", "b", ""] and not stopped


def test_stop_inside_one_piece_cuts_before_it():
    out, stopped = run(["END"], ["hello END world"])
    assert "".join(out) == "hello " and stopped


@pytest.mark.parametrize("split", [1, 2, 3, 4])
def test_stop_split_across_pieces_never_leaks(split):
    text = "abc STOP def"
    pieces = [text[i : i + split] for i in range(0, len(text), split)]
    out, stopped = run(["STOP"], pieces)
    assert "".join(out) == "abc " and stopped
    for prefix in ("S", "ST", "STO"):
        assert not any(p.endswith(prefix) for p in out[:-1] if p), f"partial stop {prefix!r} leaked"


def test_partial_match_that_turns_out_not_to_be_a_stop_is_released():
    out, stopped = run(["STOP"], ["abc ST", "ART here"])
    assert "".join(out) == "abc START here" and not stopped
    assert out[0] == "abc "


def test_held_text_is_released_at_end_of_generation():
    out, stopped = run(["STOP"], ["the end ST"])
    assert out == ["the end ", "ST"] and not stopped


def test_earliest_of_several_stops_wins():
    out, stopped = run(["world", "lo"], ["hello world"])
    assert "".join(out) == "hel" and stopped


def test_nothing_after_stop():
    matcher = StopStringMatcher(["x"])
    assert matcher.push("ax") == "a"
    assert matcher.push("more") == ""
    assert matcher.flush() == ""
