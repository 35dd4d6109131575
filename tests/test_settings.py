"""Relayer's settings are checked, all of them, before anything is built."""

import logging

import pytest

from relayer import ConfigurationError, Relayer
from relayer import _settings as settings
from relayer._logging import _handler as capture_handler
from relayer._producer import DeliveryProducer, live_producers

NAN = float("nan")
INF = float("inf")
INT_MAX = 2**31 - 1


def refused(match, **kwargs):
    """Build a relayer that must be refused; check that nothing was left registered."""
    before = set(live_producers())
    try:
        with pytest.raises(ConfigurationError, match=match):
            Relayer("logs", kwargs.pop("kafka_hosts", "a:1"), **kwargs)
        assert set(live_producers()) == before, "a refused relayer registered a producer"
    finally:
        for producer in set(live_producers()) - before:
            producer.close(0)


@pytest.mark.parametrize(
    "name, value",
    [
        ("shutdown_timeout", NAN),
        ("shutdown_timeout", INF),
        ("shutdown_timeout", -1),
        ("shutdown_timeout", "5"),
        ("shutdown_timeout", True),
        ("shutdown_timeout", None),
        ("block_timeout", NAN),
        ("block_timeout", INF),
        ("block_timeout", -0.5),
        ("block_timeout", "1"),
    ],
)
def test_timeouts_must_be_finite_seconds(name, value):
    refused(rf"{name} must be a finite number of seconds >= 0 .*not {value!r}", **{name: value})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"redact_keys": None}, r"redact_keys must be .* not None"),
        ({"redact_keys": ["password", 1]}, r"redact_keys must be .* not \['password', 1\]"),
        ({"redact_keys": 5}, r"redact_keys must be .* not 5"),
        ({"producer_opts": "linger.ms=5"}, r"producer_opts must be a dict .* not 'linger.ms=5'"),
        ({"producer_opts": [("linger.ms", 5)]}, r"producer_opts must be a dict"),
        ({"producer_opts": {5: 1}}, r"producer_opts keys must be str"),
        ({"capture_logging": "VERBOSE"}, r"capture_logging must be .*'INFO'.* not 'VERBOSE'"),
        ({"capture_logging": "info"}, r"capture_logging"),
        ({"capture_logging": -1}, r"capture_logging"),
        ({"capture_logging": 1.5}, r"capture_logging"),
        ({"capture_logging": None}, r"capture_logging"),
        ({"request_id_header": None}, r"request_id_header must be .* not None"),
        ({"request_id_header": ""}, r"request_id_header"),
        (
            {"request_id_header": "Bad\r\nX-Evil: 1"},
            r"request_id_header must be .*HTTP header name",
        ),
        ({"request_id_header": "X Request"}, r"request_id_header"),
        ({"request_id_header": "X-Request-ID\n"}, r"request_id_header"),
        ({"request_id_header": "X-Ré"}, r"request_id_header"),
        ({"when_full": 5}, r"when_full must be 'drop' or 'block', not 5"),
        ({"when_full": "wait"}, r"when_full"),
        ({"kafka_headers": "yes"}, r"kafka_headers must be True or False, not 'yes'"),
        ({"kafka_headers": 1}, r"kafka_headers"),
        ({"kafka_headers": None}, r"kafka_headers"),
        ({"service_name": "\udcff"}, r"service_name must be .*valid Unicode"),
        ({"service_version": "1.0\ud800"}, r"service_version must be .*valid Unicode"),
        ({"service_name": 5}, r"service_name must be None or a str"),
        ({"service_version": b"1.0"}, r"service_version"),
        ({"source": 5}, r"source must be None or a str"),
        ({"on_delivery_error": "log"}, r"on_delivery_error must be None or a callable"),
        ({"buffer_max_messages": True}, r"buffer_max_messages must be an int"),
        (
            {"buffer_max_messages": 2**32},
            r"buffer_max_messages must be an int from 1 to 2147483647",
        ),
        ({"buffer_max_kbytes": 2**32 + 1}, r"buffer_max_kbytes"),
        ({"kafka_hosts": ["a:1", 2]}, r"kafka_hosts"),
        ({"kafka_hosts": "a:1, b :2"}, r"kafka_hosts .*'b :2'"),
        ({"kafka_hosts": "a:1\udcff"}, r"kafka_hosts"),
        ({"sample_rate": True}, r"sample_rate must be a number between 0 and 1"),
        ({"sample_rate": float("nan")}, r"sample_rate"),
        ({"slow_threshold_ms": float("nan")}, r"slow_threshold_ms must be a finite number"),
        ({"slow_threshold_ms": float("inf")}, r"slow_threshold_ms"),
        ({"slow_threshold_ms": True}, r"slow_threshold_ms"),
    ],
)
def test_wrong_values_are_configuration_errors(kwargs, match):
    refused(match, **kwargs)


@pytest.mark.parametrize(
    "opts, match",
    [
        # 0 means "no limit" to librdkafka: the buffer would grow without bound.
        ({"queue.buffering.max.messages": 0}, r"queue.buffering.max.messages .*0 .*no limit"),
        ({"queue.buffering.max.messages": "0"}, r"queue.buffering.max.messages"),
        # librdkafka reads these as 0 (strtol: octal, stops at "_" or ".";
        # a C int wraps past 2**31): as unlimited as 0 itself.
        ({"queue.buffering.max.messages": "09"}, r"queue.buffering.max.messages .*'09'"),
        ({"queue.buffering.max.messages": "0_1"}, r"queue.buffering.max.messages"),
        ({"queue.buffering.max.messages": 0.5}, r"queue.buffering.max.messages"),
        ({"queue.buffering.max.messages": 2**32}, r"queue.buffering.max.messages"),
        ({"queue.buffering.max.messages": "4294967296"}, r"queue.buffering.max.messages"),
        ({"queue.buffering.max.messages": True}, r"queue.buffering.max.messages"),
        ({"queue.buffering.max.kbytes": 0}, r"queue.buffering.max.kbytes"),
        ({"queue.buffering.max.kbytes": 2**32 + 64}, r"queue.buffering.max.kbytes"),
        # 0 means "retry forever": an undeliverable message would never fail.
        ({"message.timeout.ms": 0}, r"message.timeout.ms .*0 .*forever"),
        ({"delivery.timeout.ms": "0"}, r"delivery.timeout.ms"),
        ({"topic.message.timeout.ms": 0}, r"topic.message.timeout.ms"),
        ({"message.timeout.ms": 0.4}, r"message.timeout.ms"),
        ({"default.topic.config": {"message.timeout.ms": 0}}, r"default.topic.config"),
    ],
)
def test_settings_that_unbound_the_buffer_are_refused(opts, match):
    refused(match, producer_opts=opts)
    before = set(live_producers())
    with pytest.raises(ConfigurationError, match=match):
        DeliveryProducer({"bootstrap.servers": "a:1", **opts})
    assert set(live_producers()) == before


@pytest.mark.parametrize(
    "opts, limit",
    [
        ({"queue.buffering.max.messages": 500}, 500),
        ({"queue.buffering.max.messages": "500"}, "500"),
        ({"queue.buffering.max.messages": 500.0}, 500.0),
        ({"queue.buffering.max.messages": INT_MAX}, INT_MAX),
        ({"message.timeout.ms": 1000, "queue.buffering.max.kbytes": 1}, 100_000),
    ],
)
def test_bounded_buffer_settings_are_taken(opts, limit):
    relayer = Relayer("logs", "a:1", producer_opts=opts)
    assert relayer._producer.config["queue.buffering.max.messages"] == limit
    relayer.close(0)


def test_producer_opts_bound_is_checked_after_merging_with_buffer_max_messages():
    # buffer_max_messages is fine, but producer_opts overrides it with "no limit".
    refused(
        "queue.buffering.max.messages",
        buffer_max_messages=10,
        producer_opts={"queue.buffering.max.messages": 0},
    )


def test_good_values_are_taken():
    keys = (k for k in ["ssn", "iban"])  # any iterable, even a one-shot one
    relayer = Relayer(
        "logs",
        "a:1",
        shutdown_timeout=0,
        block_timeout=2,
        when_full="block",
        redact_keys=keys,
        producer_opts={"linger.ms": 1},
        capture_logging="INFO",
        request_id_header="X-Correlation_ID.v2",
        service_name="billing",
        service_version="1.2.3",
        kafka_headers=False,
        on_delivery_error=print,
    )
    try:
        assert relayer.redactor.keys == ("ssn", "iban")
        assert relayer.request_id_header == "X-Correlation_ID.v2"
        assert relayer.kafka_headers is False
        assert relayer._producer.shutdown_timeout == 0
        assert relayer._producer.block_timeout == 2
    finally:
        relayer.close(0)
        logging.getLogger().removeHandler(capture_handler)


@pytest.mark.parametrize("value", [True, False, 0, logging.DEBUG, 10, "WARNING", "NOTSET"])
def test_capture_logging_values(value):
    assert settings.log_level("capture_logging", value) is value


def test_a_single_str_is_one_redact_key():
    assert settings.names("redact_keys", "ssn") == ("ssn",)
    assert settings.names("redact_keys", ()) == ()


def test_seconds_returns_a_float():
    assert settings.seconds("t", 3) == 3.0 and type(settings.seconds("t", 3)) is float
    with pytest.raises(ConfigurationError, match="t must be"):
        settings.seconds("t", 10**400)


@pytest.mark.parametrize("timeout", [-1, float("nan"), float("inf"), "5"])
def test_flush_and_close_refuse_timeouts_that_would_hang_even_under_a_patch(relayer_patch, timeout):
    relayer = Relayer("logs", "k:1")
    with pytest.raises(ConfigurationError, match="timeout"):
        relayer.flush(timeout)
    with pytest.raises(ConfigurationError, match="timeout"):
        relayer.close(timeout)
    assert relayer.close(0) == 0


class TestOneSettingsObject:
    def test_every_setting_has_a_flask_key_that_init_app_reads(self, relayer_patch):
        from flask import Flask

        from relayer import Settings
        from relayer._settings import flask_key, names_of_settings
        from relayer.flask import FlaskRelayer

        values = {
            "logging_topic": "from_config",
            "kafka_hosts": "k:1",
            "topic_prefix": "p_",
            "topic_suffix": "_s",
            "source": "src",
            "producer_opts": {"linger.ms": 7},
            "shutdown_timeout": 3.0,
            "on_delivery_error": print,
            "buffer_max_messages": 10,
            "buffer_max_kbytes": 20,
            "when_full": "block",
            "block_timeout": 0.25,
            "redact_keys": ("ssn",),
            "capture_logging": False,
            "request_id_header": "X-Corr",
            "sample_rate": 0.5,
            "slow_threshold_ms": 250.0,
            "service_name": "shop",
            "service_version": "1.2",
            "kafka_headers": False,
            "event_delivery": "on_success",
        }
        assert sorted(values) == sorted(names_of_settings())  # a new setting needs a line here
        app = Flask(__name__)
        app.config.update({flask_key(name): value for name, value in values.items()})
        extension = FlaskRelayer(app)
        with app.app_context():
            settings = extension.instance.settings
        assert isinstance(settings, Settings)
        for name, value in values.items():
            got = getattr(settings, name)
            assert (dict(got) if name == "producer_opts" else got) == value, name

    def test_the_original_kafka_hosts_key_comes_first(self, relayer_patch):
        from flask import Flask

        from relayer.flask import FlaskRelayer

        app = Flask(__name__)
        app.config.update(KAFKA_HOSTS="a:1", RELAYER_KAFKA_HOSTS="b:2")
        with app.app_context():
            assert FlaskRelayer(app, "logs").instance.settings.kafka_hosts == "a:1"

    def test_settings_are_frozen_and_unknown_names_are_refused(self):
        import dataclasses

        relayer = Relayer("logs", "k:1")
        with pytest.raises(dataclasses.FrozenInstanceError):
            relayer.settings.sample_rate = 0.1  # type: ignore[misc]
        with pytest.raises(ConfigurationError, match="unknown setting.*'sample_rat'"):
            Relayer("logs", "k:1", sample_rat=0.5)
