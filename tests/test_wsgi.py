"""relayer.wsgi.RelayerMiddleware with plain WSGI applications."""

import pytest
from werkzeug.test import Client

from relayer import Relayer
from relayer._encoding import FIELD_LIMIT
from relayer.wsgi import RelayerMiddleware, request_fields


def plain_app(relayer):
    """A WSGI app answering a list body, that logs to ``relayer``."""

    def app(environ, start_response):
        relayer.log("info", "plain")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    return app


def streaming_app(relayer):
    """A WSGI app answering a generator body, that logs to ``relayer`` as it streams."""

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            for i in range(3):
                relayer.log("info", f"part {i}")
                yield b"ab"

        return body()

    return app


def wrap(make_app, **kwargs):
    """A RelayerMiddleware made from settings around ``make_app(its relayer)``."""

    def app(environ, start_response):
        return inner(environ, start_response)

    middleware = RelayerMiddleware(app, "logs", "k:1", **kwargs)
    inner = make_app(middleware.relayer)
    return middleware


def test_list_body_is_recorded_at_once(relayer_patch):
    client = Client(wrap(plain_app))
    response = client.get("/a/b?x=1")
    [record] = relayer_patch.messages("logs")
    assert record["path"] == "/a/b" and record["query_string"] == "x=1"
    assert record["content_length"] is None  # no header, list body
    assert record["lines"][0]["payload"] == "plain"
    assert response.get_data() == b"hello"


def test_generator_body_is_passed_through_and_counted(relayer_patch):
    middleware = wrap(streaming_app)
    sent = []
    body = middleware(
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/s"}, lambda s, h, e=None: sent.append(s)
    )
    assert relayer_patch.messages("logs") == []
    assert sent == ["200 OK"]
    assert list(body) == [b"ab"] * 3
    body.close()
    body.close()
    [record] = relayer_patch.messages("logs")
    assert record["content_length"] == 6
    assert [line["payload"] for line in record["lines"]] == ["part 0", "part 1", "part 2"]


def test_stream_closed_early_still_recorded(relayer_patch):
    middleware = wrap(streaming_app)
    body = middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/s"}, lambda s, h, e=None: None)
    next(body)
    body.close()
    [record] = relayer_patch.messages("logs")
    assert record["content_length"] == 2


def test_existing_relayer_can_be_passed(relayer_patch):
    relayer = Relayer("shared", "k:1")
    middleware = RelayerMiddleware(plain_app(relayer), relayer=relayer)
    assert middleware.relayer is relayer
    Client(middleware).get("/")
    assert relayer_patch.messages("shared")[0]["lines"][0]["payload"] == "plain"


def test_request_fields_decode_utf8_path():
    environ = {"PATH_INFO": "/caf\u00c3\u00a9", "SCRIPT_NAME": "/app", "REQUEST_METHOD": "GET"}
    assert request_fields(environ)["path"] == "/app/café"


def test_request_fields_real_ip_first():
    environ = {"REMOTE_ADDR": "1.1.1.1", "HTTP_X_REAL_IP": "2.2.2.2"}
    assert request_fields(environ)["remote_addr"] == "2.2.2.2"
    assert request_fields({"REMOTE_ADDR": "1.1.1.1"})["remote_addr"] == "1.1.1.1"


def test_a_stream_that_raises_is_kept_when_sampling(relayer_patch):
    def failing_stream(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            yield b"a"
            raise RuntimeError("broken stream")

        return body()

    middleware = RelayerMiddleware(failing_stream, "logs", "k:1", sample_rate=0.0)
    body = middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, lambda s, h, e=None: None)
    with pytest.raises(RuntimeError):
        list(body)
    [record] = relayer_patch.messages("logs")
    assert record["status"] == 200 and record["content_length"] == 1


def test_request_fields_replace_invalid_utf8():
    environ = {
        "PATH_INFO": "/a\xffb",  # the raw path /a%ffb, percent-decoded, as latin-1 (PEP 3333)
        "QUERY_STRING": "q=caf\xc3\xa9&r=\xff",
        "HTTP_USER_AGENT": "agent \xe2\x82",
        "HTTP_X_REAL_IP": "\xff\xfe",
        "HTTP_X_FORWARDED_FOR": "caf\xc3\xa9",
    }
    fields = request_fields(environ)
    assert fields["path"] == "/a\ufffdb"
    assert fields["query_string"] == "q=café&r=\ufffd"
    assert fields["user_agent"] == "agent \ufffd"
    assert fields["remote_addr"] == "\ufffd\ufffd"
    assert fields["x_forwarded_for"] == "café"


def test_request_fields_of_a_server_that_gives_text_not_latin1():
    environ = {"PATH_INFO": "/€", "HTTP_USER_AGENT": "€ \udcff"}  # not PEP 3333 strs
    fields = request_fields(environ)
    assert fields["path"] == "/€"
    assert fields["user_agent"] == "€ \ufffd\ufffd\ufffd"  # a lone surrogate cannot go in JSON


MEGABYTE = 1 << 20


@pytest.mark.parametrize(
    ("key", "field", "value"),
    [
        ("QUERY_STRING", "query_string", "q=" + "x" * MEGABYTE),
        ("QUERY_STRING", "query_string", "q=" + "\xc3\xa9" * MEGABYTE),  # é, as PEP 3333 gives it
        ("HTTP_X_FORWARDED_FOR", "x_forwarded_for", "10.0.0.1, " * (MEGABYTE // 10)),
        ("PATH_INFO", "path", "/" + "p" * MEGABYTE),
        ("HTTP_USER_AGENT", "user_agent", "a" * MEGABYTE),
        ("HTTP_X_REAL_IP", "remote_addr", "1" * MEGABYTE),
    ],
)
def test_an_oversized_field_is_clipped_and_the_record_kept(relayer_patch, key, field, value):
    middleware = wrap(plain_app)
    middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/", key: value}, lambda s, h, e=None: None)
    [(raw, _)] = relayer_patch.produced_messages["logs"]
    assert len(raw) < 1_000_000  # Kafka's default message.max.bytes
    [record] = relayer_patch.messages("logs")
    text = value.encode("latin-1").decode()
    assert record[field] == text[:FIELD_LIMIT] + f"...[{len(text)} characters, clipped]"
