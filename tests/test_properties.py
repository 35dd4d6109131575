"""Property-based tests: whatever the input, every call either produces or
raises a RelayerError, and the surrounding request still gets its record."""

from __future__ import annotations

import string
import uuid
from datetime import datetime, timezone

import orjson
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relayer import RelayerError
from relayer.flask import FlaskRelayer
from relayer.rpc import make_rpc_relayer
from relayer.testing import RelayerPatch

from .helpers import RaisingStr, Str, Unprintable, UnprintableError

#: Text that may hold lone surrogates (Hypothesis leaves them out by default).
texts = st.text(alphabet=st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr)))
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # beyond 64 bits orjson refuses
    st.floats(),  # NaN and infinities become null
    texts,  # may hold lone surrogates
    st.binary(),  # not JSON
    st.uuids(),
    st.datetimes(timezones=st.just(timezone.utc)),
    st.builds(object),
    st.frozensets(st.integers(), max_size=2),
)
payloads = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(texts, st.integers(), st.none()), inner, max_size=4),
        st.tuples(inner, inner),
    ),
    max_leaves=12,
)
keys = st.one_of(
    st.none(), texts, st.binary(), st.uuids(), st.integers(), st.floats(), st.lists(texts)
)
topic_chars = string.ascii_letters + string.digits + "._-"
event_types = st.one_of(
    st.text(alphabet=topic_chars, min_size=1, max_size=30),
    st.text(
        alphabet=st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr)), max_size=300
    ),
    st.integers(),
    st.none(),
)
levels = st.one_of(st.sampled_from(["info", "error"]), texts, st.integers(), st.none())
messages = st.one_of(texts, st.dictionaries(texts, payloads, max_size=4), payloads)

calls = st.lists(
    st.one_of(
        st.tuples(st.just("emit"), event_types, texts, payloads, keys),
        st.tuples(st.just("emit_raw"), event_types, payloads, keys),
        st.tuples(st.just("log"), levels, messages),
    ),
    max_size=8,
)


def run_request(ops):
    """Serve one Flask request that makes ``ops``; return what happened."""
    app = Flask(__name__)
    relayer = FlaskRelayer(app, "logs", "k:1")
    outcomes = []

    @app.get("/")
    def view():
        for op in ops:
            method = getattr(relayer, op[0])
            try:
                method(*op[1:])
            except RelayerError:
                outcomes.append(False)
            else:
                outcomes.append(True)
        return "ok"

    with RelayerPatch() as patch:
        response = app.test_client().get("/")
    return response, outcomes, patch


@SETTINGS
@given(calls)
def test_every_call_produces_or_raises_a_relayer_error_and_the_record_survives(ops):
    response, outcomes, patch = run_request(ops)
    assert response.status_code == 200  # nothing but RelayerError escaped into the view
    [record] = patch.messages("logs")
    assert len(record["lines"]) == sum(outcomes), "one line per accepted call, none for refused"
    produced = sum(len(v) for t, v in patch.produced_messages.items() if t != "logs")
    accepted_emits = sum(ok for op, ok in zip(ops, outcomes) if op[0] != "log")
    assert produced == accepted_emits
    for op, ok in zip(ops, outcomes):
        if op[0] == "emit" and ok:
            assert isinstance(op[1], str) and op[1]


@SETTINGS
@given(
    st.dictionaries(
        st.text(),
        st.recursive(
            st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text()),
            lambda inner: (
                st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3)
            ),
            max_leaves=10,
        ),
        max_size=5,
    ),
    st.one_of(st.text(min_size=1).filter(lambda k: k.isprintable()), st.binary(), st.uuids()),
)
def test_json_safe_payloads_round_trip_exactly(payload, key):
    # st.text() yields no lone surrogates: every payload and key here is valid,
    # and emit() must take it (hostile input is the tests' above and below).
    payload_bytes = orjson.dumps(payload)
    app = Flask(__name__)
    relayer = FlaskRelayer(app, "logs", "k:1")
    with RelayerPatch() as patch, app.app_context():
        relayer.emit("orders", "created", payload, partition_key=key)
    [(value, sent_key)] = patch.produced_messages["orders"]
    message = orjson.loads(value)
    assert orjson.dumps(message["payload"]) == payload_bytes
    assert sent_key == (
        key.bytes if isinstance(key, uuid.UUID) else key.encode() if isinstance(key, str) else key
    )
    assert datetime.fromisoformat(message["timestamp"]).tzinfo is not None


hostile_texts = st.one_of(
    texts,
    texts.map(Str),
    texts.map(RaisingStr),
    # long enough to be clipped, and escaped up to 6 times in JSON
    st.tuples(st.sampled_from('ab"\\\n\x01'), st.integers(65_000, 70_000)).map(
        lambda c: c[0] * c[1]
    ),
)
hostile_values = st.one_of(payloads, st.builds(Unprintable), hostile_texts)
errors = st.one_of(
    st.none(),
    st.builds(ValueError, texts),
    st.builds(UnprintableError),
    st.builds(KeyError, payloads),
)
unit_calls = st.lists(
    st.one_of(
        st.tuples(st.just("emit"), event_types, hostile_values, payloads, keys | hostile_texts),
        st.tuples(st.just("emit_raw"), event_types, payloads, keys),
        st.tuples(st.just("log"), levels | hostile_texts | st.builds(Unprintable), messages),
        st.tuples(st.just("set"), hostile_texts | st.integers(), hostile_values),
        st.tuples(st.just("timer"), hostile_texts | st.none()),
    ),
    max_size=8,
)


@settings(SETTINGS, max_examples=100)
@given(
    st.lists(st.tuples(unit_calls, errors), min_size=1, max_size=4),
    st.sampled_from([1.0, 0.5, 0.0]),
    st.booleans(),
)
def test_every_unit_of_work_yields_its_record_or_a_counted_drop(units, sample_rate, headers):
    with RelayerPatch() as patch:
        rpc = make_rpc_relayer("logs", "k:1", sample_rate=sample_rate, kafka_headers=headers)
        instance = rpc.instance
        sampled_out = 0
        keep = instance.records.keep

        def counted_keep(scope, failed):
            nonlocal sampled_out
            kept = keep(scope, failed)
            sampled_out += not kept
            return kept

        instance.records.keep = counted_keep

        @rpc
        def call(ops, error, relayer=None):
            for op in ops:
                try:
                    if op[0] == "timer":
                        with relayer.timer(op[1]):
                            pass
                    else:
                        getattr(relayer, op[0])(*op[1:])
                except RelayerError:
                    pass
            if error is not None:
                raise error

        for ops, error in units:
            try:
                call(ops, error)
            except BaseException as raised:  # the service's own exception, unchanged
                assert raised is error
            else:
                assert error is None
        records = len(patch.produced_messages["logs"])
        stats = rpc.stats()
        assert len(units) == records + stats["dropped"] + sampled_out
        for value, _ in patch.produced_messages["logs"]:
            assert len(value) <= 1_000_000
            orjson.loads(value)
