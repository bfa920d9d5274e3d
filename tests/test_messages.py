"""The message: nine keys, ids, timestamps, addresses, one line per message."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from random import Random

import pytest

from taskpool.exceptions import InvalidMessage
from taskpool.messages import (
    MESSAGE_KEYS,
    Address,
    decode_line,
    encode_line,
    format_timestamp,
    new_message_id,
    parse_address,
    parse_timestamp,
)
from tests.conftest import post_json
from tests.support import message, read_day, today

ID_RE = re.compile(r"msg_[0-9a-f]{32}")
TS_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
LINE_BREAKS = "\u2028\u2029\u0085"
TRICKY_TEXT = f'line\nbreak\r\ttab {LINE_BREAKS} é 世界 🚀 "quoted" \\ end'


# The format on its own -------------------------------------------------------


def test_message_ids_are_msg_and_a_uuid4_in_32_hex_digits_and_unique():
    made = {new_message_id() for _ in range(1000)}
    assert len(made) == 1000
    assert all(ID_RE.fullmatch(item) for item in made)
    assert {uuid.UUID(hex=item[4:]).version for item in made} == {4}
    assert {uuid.UUID(hex=item[4:]).variant for item in made} == {uuid.RFC_4122}
    assert {item[4 + 12] for item in made} == {"4"}
    assert {item[4 + 16] for item in made} == set("89ab")
    # The other 122 bits are random: every other hex digit takes many values.
    for column in set(range(32)) - {12, 16}:
        assert len({item[4 + column] for item in made}) > 8, column


def test_timestamps_are_utc_seconds_with_z():
    assert format_timestamp(0) == "1970-01-01T00:00:00Z"
    assert format_timestamp(1780489496.999) == "2026-06-03T12:24:56Z"
    # Kept for the second just formatted, and not past it, nor before it.
    assert format_timestamp(1780489496.0) == "2026-06-03T12:24:56Z"
    assert format_timestamp(1780489497.0) == "2026-06-03T12:24:57Z"
    assert format_timestamp(1780489496.5) == "2026-06-03T12:24:56Z"
    assert format_timestamp(-0.5) == "1969-12-31T23:59:59Z"
    assert parse_timestamp("2026-06-03T12:24:56Z") == 1780489496
    for bad in ("2026-06-03T12:24:56", "2026-06-03T12:24:56.5Z", "2026-06-03 12:24:56Z", 5):
        with pytest.raises(ValueError):
            parse_timestamp(bad)


def _strict_timestamp(text: object) -> float | None:
    """What ``parse_timestamp`` must give, by the standard library: epoch seconds or ``None``."""
    if not isinstance(text, str) or not re.fullmatch(
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z", text
    ):
        return None
    try:
        moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC).timestamp()


def test_timestamps_parse_as_the_standard_library_reads_them_and_nothing_else():
    random = Random(20261128)
    valid = [format_timestamp(random.uniform(-1e10, 2.5e11)) for _ in range(300)]
    edges = [
        "2026-02-29T00:00:00Z",
        "2028-02-29T23:59:59Z",
        "2026-04-31T00:00:00Z",
        "2026-06-03T24:00:00Z",
        "2026-06-03T23:60:00Z",
        "2026-06-03T23:59:60Z",
        "0000-01-01T00:00:00Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "2026-06-03T12:24:5\u0665Z",  # an Arabic-Indic five
        "2026-06-03T12:24: 6Z",
        "2026-06-03T12:24:+6Z",
        "2026-06-03T12:2\uff14:56Z",
        "2026-06-03T12:24:56z",
        "2026-06-03t12:24:56Z",
        "2026-06-03T12:24:56Z ",
        "",
    ]
    alphabet = "0123456789-:TZ +.\u0661"
    mutated = []
    for text in valid:
        position = random.randrange(len(text))
        mutated.append(text[:position] + random.choice(alphabet) + text[position + 1 :])
    for text in valid + edges + mutated:
        expected = _strict_timestamp(text)
        if expected is None:
            with pytest.raises(ValueError):
                parse_timestamp(text)
        else:
            assert parse_timestamp(text) == expected, text
    for value in (None, 5, b"2026-06-03T12:24:56Z"):
        with pytest.raises(ValueError):
            parse_timestamp(value)  # type: ignore[arg-type]


def test_a_line_escapes_every_character_splitlines_breaks_on():
    item = message(ts="2026-06-03T12:00:00Z", title=TRICKY_TEXT, body=LINE_BREAKS * 3)
    item["meta"] = {LINE_BREAKS: [LINE_BREAKS, {"k": TRICKY_TEXT}]}
    line = encode_line(item)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    for character in LINE_BREAKS:
        assert character.encode() not in line
    assert len(line.decode().splitlines()) == 1
    assert decode_line(line[:-1]) == item


def test_a_line_keeps_non_ascii_text_as_utf8():
    item = message(ts="2026-06-03T12:00:00Z", title="héllo 世界 🚀")
    line = encode_line(item)
    assert "héllo 世界 🚀".encode() in line  # grep finds it as written
    assert decode_line(line[:-1]) == item


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"not json",
        b'{"id": "msg_1"',
        b"[]",
        b'"a string"',
    ],
)
def test_decode_refuses_what_is_not_json_object(line):
    with pytest.raises(InvalidMessage):
        decode_line(line)


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.pop("meta"),
        lambda m: m.update(extra=1),
        lambda m: m.update(title=5),
        lambda m: m.update(body=None),
        lambda m: m.update(meta="x"),
        lambda m: m.update(meta=[]),
        lambda m: m.update(parent_id=5),
        lambda m: m.update(to=["device:a"]),
        lambda m: (m.pop("meta"), m.update(other={})),
        lambda m: (m.pop("body"), m.update(other="", id=5)),
        lambda m: (m.pop("parent_id"), m.update(other=None, title=5)),
    ],
    ids=[
        "missing key",
        "extra key",
        "title 5",
        "body null",
        "meta x",
        "meta list",
        "parent 5",
        "to list",
        "nine keys, one not ours",
        "nine keys, one not ours, and an id 5",
        "nine keys, one not ours, and a title 5",
    ],
)
def test_decode_refuses_a_message_of_the_wrong_shape(change):
    import orjson

    item = message(ts="2026-06-03T12:00:00Z")
    change(item)
    with pytest.raises(InvalidMessage) as refused:
        decode_line(orjson.dumps(item))
    if set(item) != {"id", "ts", "from", "to", "type", "title", "body", "parent_id", "meta"}:
        assert str(refused.value) == "A message is a JSON object with exactly the nine keys."


# Addresses -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("device:pi-1", Address("device", device_ids=("pi-1",))),
        ("device:A.b_c-9", Address("device", device_ids=("A.b_c-9",))),
        ("device:" + "x" * 64, Address("device", device_ids=("x" * 64,))),
        ("device:*", Address("device", everyone=True)),
        ("device:[a,b]", Address("device", device_ids=("a", "b"), is_list=True)),
        ("device:[ a , b ]", Address("device", device_ids=("a", "b"), is_list=True)),
        ('device:["a", "b"]', Address("device", device_ids=("a", "b"), is_list=True)),
        ('device:[a, "b.c"]', Address("device", device_ids=("a", "b.c"), is_list=True)),
        ("device:[solo]", Address("device", device_ids=("solo",), is_list=True)),
        ("user:ops@example.com", Address("user", user="ops@example.com")),
        ("user:ops", Address("user", user="ops")),
        ("backend", Address("backend")),
    ],
)
def test_addresses_that_parse(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "device:",
        "device:[,]",
        "device:[]",
        "device:[a,]",
        "device:[a",
        "device:bad id!",
        "device: pi-1",
        "device:-pi",
        "device:" + "x" * 65,
        'device:["a]',
        'device:["bad id"]',
        "robot:1",
        "pi-1",
        "user:",
        "user:two words",
        5,
        None,
    ],
)
def test_addresses_that_do_not_parse(text):
    with pytest.raises(InvalidMessage):
        parse_address(text)


def test_a_list_address_names_its_devices_only():
    address = parse_address("device:[a, b]")
    assert address.includes("a") and address.includes("b")
    assert not address.includes("c")
    assert parse_address("device:*").includes("anything")
    assert not parse_address("user:a").includes("a")
    one = parse_address("device:a")
    assert one.includes("a") and not one.includes("b")


def test_a_list_naming_a_device_twice_keeps_its_first_place_and_names_it_once():
    address = parse_address("device:[c,a,c,b,a]")
    assert address.device_ids == ("c", "a", "b")
    assert str(address) == "device:[c,a,b]"
    assert [address.includes(device) for device in "abcd"] == [True, True, True, False]


# Through the API -------------------------------------------------------------


def client_meta(item):
    """A task's meta less what the server adds to every task (``expires_at``)."""
    return {key: value for key, value in item["meta"].items() if key != "expires_at"}


def test_every_stored_message_has_the_nine_keys_with_server_ids_and_times(
    master_client, device_client, pool_dir
):
    before = format_timestamp(time.time())
    task = post_json(master_client, "/pool/task", {"to": "device:pi-1", "title": "t"}).json()
    response = post_json(
        device_client, "/pool/response", {"parent_id": task["id"], "status": "done"}
    ).json()
    heartbeat = post_json(device_client, "/pool/heartbeat", {}).json()
    after = format_timestamp(time.time())

    stored = read_day(pool_dir, today())
    assert stored == [task, response, heartbeat]
    for item in stored:
        assert list(item) == list(MESSAGE_KEYS)
        assert ID_RE.fullmatch(item["id"])
        assert TS_RE.fullmatch(item["ts"])
        assert before <= item["ts"] <= after  # the server's clock, in UTC
    assert len({item["id"] for item in stored}) == 3
    assert task["from"] == "user:master" and task["type"] == "task"
    assert task["body"] == "" and task["parent_id"] is None
    assert response["from"] == "device:pi-1" and response["to"] == "user:master"
    assert response["meta"] == {"status": "done"} and response["parent_id"] == task["id"]
    assert heartbeat["to"] == "backend" and heartbeat["type"] == "heartbeat"


def test_the_server_assigns_id_and_ts_even_if_the_client_sends_them(master_client, snapshot):
    before = snapshot()
    answer = post_json(
        master_client,
        "/pool/task",
        {"to": "device:pi-1", "title": "t", "id": "msg_" + "0" * 32, "ts": "2000-01-01T00:00:00Z"},
    )
    assert answer.status_code == 400
    assert set(answer.json()["errors"]) == {"id", "ts"}
    assert snapshot() == before


def test_line_breaks_are_escaped_in_the_file_and_text_round_trips(
    master_client, device_client, admin_client_api, pool_dir
):
    meta = {"note": TRICKY_TEXT, "nested": {LINE_BREAKS: [1, TRICKY_TEXT]}}
    task = post_json(
        master_client,
        "/pool/task",
        {"to": "device:pi-1", "title": TRICKY_TEXT, "body": TRICKY_TEXT, "meta": meta},
    )
    assert task.status_code == 201
    answer = post_json(
        device_client,
        "/pool/response",
        {"parent_id": task.json()["id"], "status": "progress", "body": LINE_BREAKS},
    )
    assert answer.status_code == 201

    data = (pool_dir / f"{today().isoformat()}.jsonl").read_bytes()
    for character in LINE_BREAKS:
        assert character.encode() not in data
    assert data.count(b"\n") == 2
    assert len(data.decode().splitlines()) == 2

    (pending,) = device_client.get("/pool/pending").json()
    assert pending["title"] == pending["body"] == TRICKY_TEXT
    assert client_meta(pending) == meta
    log = admin_client_api.get("/pool/log").json()
    assert log[0]["title"] == TRICKY_TEXT and client_meta(log[0]) == meta
    assert log[1]["body"] == LINE_BREAKS


def test_non_ascii_round_trips_unchanged_through_the_api(master_client, device_client, pool_dir):
    text = "Grüße, 世界! Привет 🚀 ﬁ e\u0301"  # combining accent kept, not normalised
    meta = {"ключ": "値", "emoji": ["🙂", "👍🏽"]}
    sent = post_json(
        master_client,
        "/pool/task",
        {"to": "device:pi-1", "title": text, "body": text, "meta": meta},
    ).json()
    assert (sent["title"], sent["body"], client_meta(sent)) == (text, text, meta)
    (pending,) = device_client.get("/pool/pending").json()
    assert (pending["title"], pending["body"], client_meta(pending)) == (text, text, meta)
    assert text.encode() in (pool_dir / f"{today().isoformat()}.jsonl").read_bytes()
