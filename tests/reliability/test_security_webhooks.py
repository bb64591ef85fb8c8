"""Webhook signature forgery and replay.

A real delivery (the dispatcher posting to a local receiver) is captured, then tampered with:
another secret, a changed body, a changed or stale timestamp (replay after the 300 s window),
a signature lifted from another delivery, missing or malformed headers.  ``verify`` (the check
docs/MODDER_HOOKS.md tells receivers to run) must accept only the untouched request.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfyvn.config import update_config
from comfyvn.hooks import emit
from comfyvn.hooks.webhooks import DEFAULT_TOLERANCE_S, WebhookDispatcher, WebhookManager, sign, verify
from comfyvn.store import open_store

from .fuzzkit import count, fuzz_settings

SECRET = "whsec-reliability-4d2f"


@pytest.fixture
def captured(ws):
    """Two real deliveries (headers, body) made by the dispatcher, and the time they were made."""
    from relkit import WebhookReceiver

    update_config({"hooks": {"allow_private_webhook_targets": True}}, ws)
    receiver = WebhookReceiver(SECRET)
    try:
        db = open_store(ws)
        WebhookManager(db).register("on_modder_test", receiver.url, SECRET)
        with db.transaction() as conn:
            emit(conn, "on_modder_test", {"message": "first", "amount": 10})
            emit(conn, "on_modder_test", {"message": "second", "amount": 99999})
        dispatcher = WebhookDispatcher(db)
        assert dispatcher.run_once() + dispatcher.run_once() == 2  # one in flight per webhook
        assert len(receiver.raw_requests) == 2 and all(d.signature_ok for d in receiver.snapshot())
        yield [({k.lower(): v for k, v in h.items()}, b) for h, b in receiver.raw_requests], time.time()
    finally:
        receiver.close()


def _check(headers: dict, body: bytes, *, secret: str = SECRET, now: float | None = None) -> bool:
    return verify(secret, headers.get("x-comfyvn-timestamp", ""), body, headers.get("x-comfyvn-signature"),
                  now=now)


def test_untouched_delivery_verifies(captured):
    (requests, _) = captured
    for headers, body in requests:
        assert _check(headers, body)
        assert headers["x-comfyvn-signature"].startswith("sha256=")
        assert headers["x-comfyvn-delivery"] and headers["x-comfyvn-event"] == "on_modder_test"
    assert requests[0][0]["x-comfyvn-delivery"] != requests[1][0]["x-comfyvn-delivery"]


FORGERIES = {
    "wrong-secret": lambda h, b, other: (h, b, "not-the-secret"),
    "empty-secret": lambda h, b, other: (h, b, ""),
    "body-changed": lambda h, b, other: (h, b.replace(b'"amount":10', b'"amount":1000'), SECRET),
    "body-appended": lambda h, b, other: (h, b + b" ", SECRET),
    "timestamp-changed": lambda h, b, other: ({**h, "x-comfyvn-timestamp": str(int(h["x-comfyvn-timestamp"]) + 1)},
                                              b, SECRET),
    "signature-from-other-delivery": lambda h, b, other: ({**h, "x-comfyvn-signature":
                                                           other[0]["x-comfyvn-signature"]}, b, SECRET),
    "body-from-other-delivery": lambda h, b, other: (h, other[1], SECRET),
    "no-signature": lambda h, b, other: ({k: v for k, v in h.items() if k != "x-comfyvn-signature"}, b, SECRET),
    "bare-prefix": lambda h, b, other: ({**h, "x-comfyvn-signature": "sha256="}, b, SECRET),
    "unsigned-hash": lambda h, b, other: ({**h, "x-comfyvn-signature": "sha256=" + __import__("hashlib").sha256(
        b).hexdigest()}, b, SECRET),
    "timestamp-not-a-number": lambda h, b, other: ({**h, "x-comfyvn-timestamp": "yesterday"}, b, SECRET),
    "no-timestamp": lambda h, b, other: ({k: v for k, v in h.items() if k != "x-comfyvn-timestamp"}, b, SECRET),
}


@pytest.mark.parametrize("kind", sorted(FORGERIES))
def test_forged_deliveries_are_rejected(captured, kind):
    count("attacks.webhook_forgery")
    (requests, _) = captured
    headers, body, secret = FORGERIES[kind](requests[0][0], requests[0][1], requests[1])
    assert not _check(headers, body, secret=secret)


@pytest.mark.parametrize("delay", [DEFAULT_TOLERANCE_S + 1, 3600, 86400 * 30])
def test_replayed_delivery_outside_the_window_is_rejected(captured, delay):
    count("attacks.webhook_replay")
    (requests, sent_at) = captured
    headers, body = requests[0]
    assert _check(headers, body, now=sent_at + 5)  # a prompt receiver accepts it ...
    assert not _check(headers, body, now=sent_at + delay)  # ... a replay later is refused


def test_timestamp_far_in_the_future_is_rejected(captured):
    count("attacks.webhook_replay")
    (requests, sent_at) = captured
    headers, body = requests[0]
    assert not _check(headers, body, now=sent_at - DEFAULT_TOLERANCE_S - 60)


def test_retries_keep_the_delivery_id_so_receivers_can_drop_replays_within_the_window(ws):
    """Inside the window a replay verifies; receivers dedupe on X-Comfyvn-Delivery, which every
    retry of one event repeats (and no other event reuses)."""
    from relkit import WebhookReceiver

    update_config({"hooks": {"allow_private_webhook_targets": True, "webhook_backoff_s": 0.0}}, ws)
    receiver = WebhookReceiver("other-secret")  # answers 401 to every delivery: forces retries
    try:
        db = open_store(ws)
        hook = WebhookManager(db).register("on_modder_test", receiver.url, SECRET)
        with db.transaction() as conn:
            emit(conn, "on_modder_test", {"message": "retry me"})
        dispatcher = WebhookDispatcher(db)
        for _ in range(3):
            dispatcher.run_once()
        attempts = WebhookManager(db).deliveries(hook["id"])
        assert len(attempts) == 3 and not any(a["ok"] for a in attempts)
        assert len({a["delivery_id"] for a in attempts}) == 1
        assert len({d.delivery_id for d in receiver.snapshot()}) == 1
    finally:
        receiver.close()


@fuzz_settings(200)
@given(secret=st.text(min_size=1, max_size=40), body=st.binary(max_size=300), ts=st.integers(0, 2**40),
       flip=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_any_single_bit_flip_of_the_body_breaks_the_signature(secret, body, ts, flip, bit):
    count("attacks.webhook_forgery")
    signature = sign(secret, ts, body)
    assert verify(secret, ts, body, signature, now=ts)
    if body:
        i = flip % len(body)
        tampered = body[:i] + bytes([body[i] ^ (1 << bit)]) + body[i + 1:]
        assert not verify(secret, ts, tampered, signature, now=ts)
    assert not verify(secret + "x", ts, body, signature, now=ts)
