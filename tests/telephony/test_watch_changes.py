"""Watching extensions added and removed while the endpoint runs (sans-I/O).

Staff are added, moved and deactivated while callpop runs, so the endpoint's watch list
changes after start-up: ``watch(extension, now)`` subscribes at once (or with the
others after the registration), ``unwatch(extension, now)`` ends the subscription with
``Expires: 0`` (RFC 6665 §4.1.2.3) and answers what the PBX still sends for it, and the
list is bounded by ``max_watched``. The PBX is played with the project's own message
builder, as in ``test_subscription.py``.
"""

from __future__ import annotations

import pytest

from telephony.endpoint import EndpointConfig, SipEndpoint
from telephony.events import DialogNotified, SubscriptionState
from telephony.timers import TIMER_F

from .test_subscription import (
    active,
    answer,
    changes,
    drain,
    make_endpoint,
    notify,
    registered,
    responses,
    sent,
    subscribe,
)


def test_watch_after_registration_subscribes_at_once() -> None:
    endpoint = make_endpoint()
    active(endpoint)
    drain(endpoint)
    assert endpoint.watch("205", 10.0) is True
    request = subscribe(endpoint)
    assert request.uri == "sip:205@pbx.example"
    assert request.headers.get("Event") == "dialog"
    answer(endpoint, request, 200, 10.1, [("Expires", "600")])
    assert ("205", SubscriptionState.ACTIVE, "active for 600 s") in changes(endpoint)
    assert endpoint.watched == ("201", "205")
    stats = endpoint.stats
    assert stats["subscriptions_watched"] == 2 and stats["subscriptions_active"] == 2
    assert stats["watches_added"] == 1
    # Its NOTIFYs are handed up like those of the extensions watched from the start.
    notify(endpoint, request, 11.0)
    (answered,) = responses(endpoint)
    assert answered.status == 200
    assert [e.extension for e in drain(endpoint) if isinstance(e, DialogNotified)] == ["205"]


def test_watch_before_registration_waits_for_it() -> None:
    endpoint = make_endpoint(watch_extensions=())
    assert endpoint.watch("205", 0.0) is True
    endpoint.start(0.0)
    assert sent(endpoint, "SUBSCRIBE") == []  # nothing to subscribe through yet
    endpoint = make_endpoint(watch_extensions=())
    assert endpoint.watch("205", 0.0) is True
    registered(endpoint, 1.0)
    assert subscribe(endpoint).uri == "sip:205@pbx.example"


def test_first_watch_on_an_endpoint_registered_with_none_subscribes() -> None:
    # Registered while nothing was watched (no staff with extensions yet): the first
    # watch() must not wait for a registration change that may never come.
    endpoint = make_endpoint(watch_extensions=())
    registered(endpoint, 0.0)
    assert sent(endpoint, "SUBSCRIBE") == []
    endpoint.watch("205", 30.0)
    assert subscribe(endpoint).uri == "sip:205@pbx.example"


def test_watch_is_idempotent_and_checked() -> None:
    endpoint = make_endpoint()
    active(endpoint)
    assert endpoint.watch("201", 1.0) is True
    assert sent(endpoint, "SUBSCRIBE") == []  # already watched: no second subscription
    with pytest.raises(ValueError, match="extension"):
        endpoint.watch("201>\r\nX-Evil: 1", 1.0)
    assert endpoint.watched == ("201",)


def test_unwatch_sends_expires_zero_and_answers_the_final_notify() -> None:
    endpoint = make_endpoint()
    request = active(endpoint)
    drain(endpoint)
    assert endpoint.unwatch("201", 20.0) is True
    unsubscribe = subscribe(endpoint)
    assert unsubscribe.headers.get("Expires") == "0"  # RFC 6665 §4.1.2.3
    assert unsubscribe.call_id == request.call_id  # in the same dialog
    assert changes(endpoint) == [("201", SubscriptionState.TERMINATED, "no longer watched")]
    assert endpoint.watched == ()
    assert endpoint.stats["subscriptions_watched"] == 0
    assert endpoint.stats["watches_removed"] == 1
    answer(endpoint, unsubscribe, 200, 20.1)
    assert endpoint.stats["unsubscribes_confirmed"] == 1
    # The notifier's final NOTIFY (terminated) is answered 200, not 481, and not handed up.
    notify(endpoint, request, 20.2, state="terminated;reason=timeout", cseq=2)
    (final,) = responses(endpoint)
    assert final.status == 200
    assert drain(endpoint) == []
    # The leaving client is gone once done: a later NOTIFY in that dialog gets 481.
    notify(endpoint, request, 25.0, cseq=3, branch="z9hG4bKlate")
    (late,) = responses(endpoint)
    assert late.status == 481
    # Counters of a client gone for good stay in the totals.
    assert endpoint.stats["subscribes_sent"] >= 2


def test_unwatch_without_an_answer_gives_up_after_timer_f() -> None:
    endpoint = make_endpoint()
    active(endpoint)
    drain(endpoint)
    endpoint.unwatch("201", 20.0)
    first = subscribe(endpoint)
    assert first.headers.get("Expires") == "0"
    assert changes(endpoint) == [("201", SubscriptionState.TERMINATED, "no longer watched")]
    timer = endpoint.get_timer()
    assert timer is not None and timer < 20.0 + TIMER_F
    endpoint.handle_timer(timer)
    retransmitted = subscribe(endpoint)  # Timer E: the same request again
    assert retransmitted.headers.get("Expires") == "0"
    endpoint.handle_timer(20.0 + TIMER_F + 1)
    endpoint.datagrams_to_send()
    # Given up: no timer left for it, nothing more sent, nothing handed up.
    later = endpoint.get_timer()
    assert later is None or later > 20.0 + TIMER_F + 100
    assert drain(endpoint) == []
    assert endpoint.stats["unsubscribes_confirmed"] == 0


def test_unwatch_of_a_subscription_not_yet_made_sends_nothing() -> None:
    endpoint = make_endpoint()
    endpoint.start(0.0)
    endpoint.datagrams_to_send()
    assert endpoint.unwatch("201", 1.0) is True
    assert endpoint.datagrams_to_send() == []
    assert endpoint.unwatch("201", 1.0) is False  # not watched any more
    assert endpoint.unwatch("999", 1.0) is False


def test_rewatch_while_leaving_is_a_new_subscription() -> None:
    endpoint = make_endpoint()
    old = active(endpoint)
    endpoint.unwatch("201", 10.0)
    unsubscribe = subscribe(endpoint)
    endpoint.watch("201", 10.5)
    fresh = subscribe(endpoint)
    assert fresh.call_id != old.call_id  # RFC 6665 §4.1.2.1: a new dialog
    assert fresh.headers.get("Expires") == "600"
    drain(endpoint)
    # The answers reach the right client each: the old one ends, the new one is active.
    answer(endpoint, unsubscribe, 200, 10.6)
    answer(endpoint, fresh, 200, 10.7, [("Expires", "600")])
    assert changes(endpoint) == [("201", SubscriptionState.ACTIVE, "active for 600 s")]
    assert endpoint.subscription_states == {"201": SubscriptionState.ACTIVE}
    notify(endpoint, fresh, 11.0)
    responses(endpoint)
    assert [e.extension for e in drain(endpoint) if isinstance(e, DialogNotified)] == ["201"]


def test_watch_list_bound_refuses_and_counts() -> None:
    endpoint = make_endpoint(watch_extensions=("201", "202"), max_watched=3)
    registered(endpoint, 0.0)
    assert endpoint.watch("203", 1.0) is True
    assert endpoint.watch("204", 1.0) is False
    assert endpoint.stats["watches_refused"] == 1
    assert endpoint.watched == ("201", "202", "203")
    endpoint.unwatch("201", 2.0)
    assert endpoint.watch("204", 2.0) is True  # room again
    with pytest.raises(ValueError, match="at most 3"):
        make_endpoint(watch_extensions=("201", "202", "203", "204"), max_watched=3)


def test_trunk_mode_watches_nothing() -> None:
    trunk = SipEndpoint(EndpointConfig(mode="trunk", local_host="192.0.2.1", local_port=5070))
    trunk.start(0.0)
    assert trunk.watch("201", 0.0) is False
    assert trunk.stats["watches_refused"] == 1
    assert trunk.datagrams_to_send() == []


def test_registration_re_established_restarts_added_ones_too() -> None:
    endpoint = make_endpoint(expires=300)
    active(endpoint)
    endpoint.watch("205", 1.0)
    added = subscribe(endpoint)
    answer(endpoint, added, 200, 1.1, [("Expires", "600")])
    drain(endpoint)
    endpoint.handle_timer(240.0)  # REGISTER refresh ...
    (register,) = sent(endpoint, "REGISTER")
    answer(endpoint, register, 503, 240.1, to_tag="reg1")  # ... the PBX is restarting
    endpoint.handle_timer(242.1)
    (register,) = sent(endpoint, "REGISTER")
    answer(endpoint, register, 200, 242.2, [("Expires", "300")], to_tag="reg2")
    endpoint.handle_timer(243.0)  # past the stagger
    fresh = {r.uri: r for r in sent(endpoint, "SUBSCRIBE")}
    assert set(fresh) == {"sip:201@pbx.example", "sip:205@pbx.example"}
    assert fresh["sip:205@pbx.example"].call_id != added.call_id


def test_final_notify_before_the_answer_to_expires_zero_is_answered_200() -> None:
    endpoint = make_endpoint()
    request = active(endpoint)
    drain(endpoint)
    endpoint.unwatch("201", 20.0)
    unsubscribe = subscribe(endpoint)
    drain(endpoint)
    # Some notifiers send the terminated NOTIFY before their 200 (RFC 6665 §4.1.2.3).
    notify(endpoint, request, 20.05, state="terminated;reason=timeout", cseq=2)
    (final,) = responses(endpoint)
    assert final.status == 200
    assert drain(endpoint) == []  # not handed up: 201 is no longer watched
    answer(endpoint, unsubscribe, 200, 20.1)
    assert endpoint.stats["unsubscribes_confirmed"] == 1
