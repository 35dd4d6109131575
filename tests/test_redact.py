import pytest

from relayer._redact import Redactor, redacted_config


class TestRedactedConfig:
    def test_secrets_masked_others_kept(self):
        config = {
            "bootstrap.servers": "k:9093",
            "sasl.username": "alice",
            "sasl.password": "s3cret",
            "ssl.key.password": "kp",
            "ssl.keystore.password": "ksp",
            "ssl.key.pem": "-----BEGIN PRIVATE KEY-----",
            "sasl.oauthbearer.client.secret": "cs",
            "sasl.oauthbearer.config": "clientSecret=x",
            "sasl.jaas.config": "x",
        }
        shown = redacted_config(config)
        assert shown == {
            **dict.fromkeys(config, "***"),
            "bootstrap.servers": "k:9093",
            "sasl.username": "alice",
        }
        assert config["sasl.password"] == "s3cret", "the original is untouched"


class TestRedactor:
    @pytest.mark.parametrize(
        "name",
        ["password", "user_password", "X-Api-Key", "api_key", "refresh_token", "client_secret"],
    )
    def test_secret_names(self, name):
        assert Redactor().is_secret(name)

    @pytest.mark.parametrize("name", ["user", "page", "q", "id"])
    def test_plain_names(self, name):
        assert not Redactor().is_secret(name)

    def test_query_string(self):
        redactor = Redactor()
        assert redactor.query_string("q=shoes&page=2") == "q=shoes&page=2"
        assert (
            redactor.query_string("user=ada&password=hunter2&access_token=abc&flag")
            == "user=ada&password=***&access_token=***&flag"
        )
        assert redactor.query_string("api%5Fkey=zzz") == "api%5Fkey=***"
        assert redactor.query_string("password=") == "password="
        assert redactor.query_string("") == ""

    def test_configurable_and_off(self):
        assert Redactor(["ssn"]).query_string("ssn=1&password=2") == "ssn=***&password=2"
        assert Redactor(()).query_string("password=2") == "password=2"
        assert Redactor("pin").is_secret("PIN")

    def test_payload_masks_at_any_depth_without_mutating(self):
        message = {"user": "ada", "auth": {"Password": "x", "items": [{"token": "t", "n": 1}]}}
        masked = Redactor().payload(message)
        assert masked == {
            "user": "ada",
            "auth": {"Password": "***", "items": [{"token": "***", "n": 1}]},
        }
        assert message["auth"]["Password"] == "x"

    def test_payload_without_secrets_is_returned_as_is(self):
        message = {"a": [1, {"b": 2}]}
        assert Redactor().payload(message) is message

    @pytest.mark.parametrize("name", ["password", "token", "secret", "api_key"])
    def test_default_keys(self, name):
        assert Redactor().query_string(f"{name}=v&{name.upper()}_2=w&q=1") == (
            f"{name}=***&{name.upper()}_2=***&q=1"
        )
        assert Redactor().payload({name: "v", "n": 1}) == {name: "***", "n": 1}
