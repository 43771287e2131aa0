"""The Bayeux messages and replies of the Salesforce subscriber (app/salesforce_cdc/bayeux.py)."""

from __future__ import annotations

import pytest

from app.salesforce_cdc import bayeux
from app.salesforce_cdc.resume import parse_replay_header, replay_header

EVENT = {
    "channel": "/data/ChangeEvents",
    "clientId": "abc",
    "data": {"schema": "s", "payload": {"ChangeEventHeader": {}}, "event": {"replayId": 41}},
}


def test_messages_carry_the_client_id_and_the_replay_extension() -> None:
    ids = bayeux.MessageIds()
    hand = bayeux.handshake(ids)[0]
    assert hand["channel"] == "/meta/handshake" and hand["ext"] == {"replay": True}
    assert "long-polling" in hand["supportedConnectionTypes"]
    sub = bayeux.subscribe(ids, "c1", "/data/AccountChangeEvent", 41)[0]
    assert sub["clientId"] == "c1" and sub["ext"] == {"replay": {"/data/AccountChangeEvent": 41}}
    conn = bayeux.connect(ids, "c1")[0]
    assert conn["connectionType"] == "long-polling"
    assert [hand["id"], sub["id"], conn["id"]] == ["1", "2", "3"]


def test_a_connect_answer_is_split_into_events_and_the_connect_reply() -> None:
    answer = [
        EVENT,
        {"channel": "/data/ChangeEvents"},  # no data: not an event
        {"channel": "/meta/connect", "successful": True, "advice": {"reconnect": "retry", "interval": 0}},
    ]
    reply = bayeux.read_reply(answer, bayeux.META_CONNECT)
    assert reply.events == [EVENT]
    assert reply.ok and reply.reconnect == "retry" and reply.interval_ms == 0


def test_an_unknown_client_asks_for_a_new_handshake() -> None:
    answer = [
        {
            "advice": {"interval": 0, "reconnect": "handshake"},
            "channel": "/meta/connect",
            "id": "304",
            "error": "403::Unknown client",
            "successful": False,
        }
    ]
    reply = bayeux.read_reply(answer, bayeux.META_CONNECT)
    assert not reply.ok and reply.error_code == 403 and reply.reconnect == "handshake" and not reply.events


def test_an_expired_replay_id_is_recognised() -> None:
    answer = [
        {
            "channel": "/meta/subscribe",
            "successful": False,
            "subscription": "/data/ChangeEvents",
            "error": "400::The replayId {1500} you provided was invalid.  Please provide a valid ID, -2 to "
            "replay all events, or -1 to replay only new events.",
        }
    ]
    reply = bayeux.read_reply(answer, bayeux.META_SUBSCRIBE)
    assert bayeux.is_invalid_replay(reply)
    other = bayeux.read_reply(
        [{"channel": "/meta/subscribe", "successful": False, "error": "403::Unknown channel /data/Nope"}],
        bayeux.META_SUBSCRIBE,
    )
    assert not bayeux.is_invalid_replay(other) and other.error_code == 403


def test_salesforce_failure_reason_is_read_from_ext_sfdc() -> None:
    reply = bayeux.read_reply(
        [
            {
                "channel": "/meta/handshake",
                "successful": False,
                "error": "403::Handshake denied",
                "ext": {"sfdc": {"failureReason": "401::Authentication invalid"}},
            }
        ],
        bayeux.META_HANDSHAKE,
    )
    assert bayeux.failure_reason(reply).startswith("401")


@pytest.mark.parametrize(
    "value,expected", [(41, 41), ("41", 41), ("-2", -2), (True, None), (None, None), ("x", None)]
)
def test_replay_id_of_an_event(value: object, expected: int | None) -> None:
    assert bayeux.replay_id({"data": {"event": {"replayId": value}}}) == expected
    assert bayeux.replay_id({"data": "text"}) is None


def test_an_answer_that_is_not_bayeux_is_a_protocol_error() -> None:
    with pytest.raises(bayeux.ProtocolError):
        bayeux.read_reply("<html>", bayeux.META_CONNECT)
    with pytest.raises(bayeux.ProtocolError):
        bayeux.read_reply([1, 2], bayeux.META_CONNECT)


def test_replay_headers_round_trip_and_reject_garbage() -> None:
    name, value = replay_header("/data/ChangeEvents", 41)
    assert parse_replay_header(value) == ("/data/ChangeEvents", 41)
    assert parse_replay_header(b"no-number") is None
    assert parse_replay_header(b"\xff\xfe 1") is None
    assert parse_replay_header(b" 12") is None
