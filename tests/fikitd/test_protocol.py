"""The NDJSON protocol, checked without a daemon: every message is untrusted."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fikitd import protocol
from fikitd.protocol import ProtocolError


def req(**kw: object) -> bytes:
    return json.dumps({"v": 1, **kw}).encode()


def code_of(line: bytes) -> str:
    with pytest.raises(ProtocolError) as err:
        protocol.decode(line)
    return err.value.code


def test_valid_requests() -> None:
    r = protocol.decode(req(op="submit", argv=["x"], prio="low", id=7))
    assert (r.op, r.args["prio"], r.id) == ("submit", 2, 7)
    r = protocol.decode(req(op="register", pid=5, slot=3, prio=2, gpu=0, prog="train.py", job="17"))
    assert r.args["job"] == 17
    assert protocol.decode(req(op="show", job="4")).args["job"] == 4


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"not json", "bad_request"),
        (b"[1, 2]", "bad_request"),
        (b'{"op": "hello"}', "bad_request"),
        (b'{"v": 2, "op": "hello"}', "unsupported_version"),
        (b'{"v": true, "op": "hello"}', "unsupported_version"),
        (req(op="nope"), "bad_request"),
        (req(op="hello", extra=1), "bad_request"),
        (req(op="submit"), "bad_request"),
        (req(op="submit", argv=["a"], script="/b"), "bad_request"),
        (req(op="submit", argv=[]), "bad_request"),
        (req(op="submit", argv=["a\u0000"]), "bad_request"),
        (req(op="submit", argv=["a"], env={"A=B": "x"}), "bad_request"),
        (req(op="submit", argv=["a"], cwd="relative"), "bad_request"),
        (req(op="submit", argv=["a"], prio="urgent"), "bad_request"),
        (req(op="submit", argv=["a"], prio=8), "bad_request"),
        (req(op="show", job=-1), "bad_request"),
        (req(op="show", job=True), "bad_request"),
        (req(op="register", pid=1, slot=64, prio=0, gpu=0, prog="x"), "bad_request"),
        (req(op="logs", job=1, max=10**9), "bad_request"),
        (req(op="profiles", action="show"), "bad_request"),
        (req(op="hello", id={"a": 1}), "bad_request"),
        (b"[" * 100000, "too_large"),
        (b"[" * 5000 + b"]" * 5000, "bad_request"),
    ],
)
def test_bad_requests(line: bytes, code: str) -> None:
    assert code_of(line) == code


def test_every_op_has_a_schema_and_replies_are_one_line() -> None:
    assert set(protocol.OPS) == {"hello", "register", "submit", "jobs", "show", "cancel", "logs", "status",
                                 "snapshot", "profiles", "set_mode", "set_prio"}
    line = protocol.encode(protocol.ok({"data": "a\nb\u00e9"}, 3))
    assert line.count(b"\n") == 1 and json.loads(line)["id"] == 3
    assert json.loads(protocol.encode(protocol.error("not_found", "x")))["error"]["code"] == "not_found"


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.dictionaries(st.text(max_size=8), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
    max_leaves=20)).map(lambda d: json.dumps({"v": 1, "op": "submit", **d}).encode())))
def test_decode_never_raises_anything_but_protocol_error(line: bytes) -> None:
    try:
        protocol.decode(line)
    except ProtocolError as exc:
        assert exc.code in protocol.ERROR_CODES
