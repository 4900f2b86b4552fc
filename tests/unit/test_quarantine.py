"""The poison-request quarantine: a request running at two engine deaths is refused for a while, nothing else."""

from serve_app.server.quarantine import Quarantine, request_fingerprint

BODY = {"model": "m", "prompt": "hi", "top_k": 5, "temperature": 1.0}


def test_fingerprint_ignores_request_ids_and_streaming_but_not_sampling():
    assert request_fingerprint("completion", BODY) == request_fingerprint(
        "completion", {**BODY, "request_id": "x", "stream": True, "user": "u"})
    assert request_fingerprint("completion", BODY) != request_fingerprint("completion", {**BODY, "top_k": 6})
    assert request_fingerprint("completion", BODY) != request_fingerprint("chat", BODY)


def test_fingerprint_of_a_lone_surrogate_does_not_raise():
    assert request_fingerprint("completion", {"prompt": "\ud800"})


def test_one_death_does_not_quarantine():
    quarantine = Quarantine(max_deaths=2, quarantine_s=60)
    assert quarantine.record_death({"a", "b"}, now_s=0.0) == []
    assert quarantine.remaining_s("a", 1.0) is None


def test_a_request_at_two_deaths_is_refused_until_its_quarantine_ends():
    quarantine = Quarantine(max_deaths=2, quarantine_s=60)
    quarantine.record_death({"poison", "bystander"}, now_s=0.0)
    assert quarantine.record_death({"poison", "other"}, now_s=30.0) == ["poison"]
    assert quarantine.remaining_s("poison", 40.0) == 50.0
    assert quarantine.remaining_s("bystander", 40.0) is None
    assert quarantine.remaining_s("other", 40.0) is None
    assert quarantine.remaining_s("poison", 91.0) is None


def test_deaths_far_apart_are_forgotten():
    quarantine = Quarantine(max_deaths=2, quarantine_s=60, memory_s=100)
    quarantine.record_death({"a"}, now_s=0.0)
    assert quarantine.record_death({"a"}, now_s=500.0) == []
    assert quarantine.remaining_s("a", 501.0) is None
