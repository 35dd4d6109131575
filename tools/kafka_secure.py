"""A local KRaft broker with a TLS + SASL/SCRAM listener, for security tests and manual tries.

- :func:`make_certs` writes a throwaway CA and a broker certificate for ``127.0.0.1`` and
  ``localhost`` (``openssl`` CLI, EC P-256, valid 2 days). The broker reads them as a PEM
  keystore (``ssl.keystore.type=PEM``); clients trust ``ca.pem`` (librdkafka:
  ``ssl.ca.location``).
- :func:`sasl_ssl_config` is the ``extra_config`` of a :class:`~tools.kafka_local.KafkaBroker`
  that keeps its PLAINTEXT listener (readiness check, admin, test consumers) and adds a
  ``SASL_SSL`` one that accepts SCRAM-SHA-512 only.
- :func:`scram_format_args` are the ``format_args`` that create SCRAM users when the storage
  is formatted (KRaft has no ZooKeeper to hold them, and no broker to ask before it runs).
- :func:`make_secure_broker` puts the three together.

    python -m tools.kafka_secure run [--user alice --password alice-secret]

Standard library and ``openssl`` only (plus what ``tools.kafka_local`` needs).
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # python tools/kafka_secure.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.kafka_local import KafkaBroker, free_port, serve_until_interrupted

MECHANISM = "SCRAM-SHA-512"
LISTENER = "SASL_SSL"
HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class Certs:
    """Files written by :func:`make_certs` (all PEM)."""

    directory: Path
    ca: Path  # the CA certificate: librdkafka's ``ssl.ca.location``
    keystore: Path  # broker key (PKCS#8, unencrypted) + certificate + CA: Kafka's PEM keystore


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl not found: install it (apt-get install openssl)")
    res = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{res.stdout}{res.stderr}")


def make_certs(directory: Path, hosts: tuple[str, ...] = HOSTS, days: int = 2) -> Certs:
    """Write a self-signed CA and a broker certificate for ``hosts`` into ``directory``."""
    d = Path(directory).resolve()
    d.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", str(days),
        "-subj", "/CN=relayer test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "req", "-new", *ec, "-keyout", "broker.key", "-out", "broker.csr",
        "-subj", f"/CN={hosts[-1]}",
        cwd=d,
    )  # fmt: skip
    san = ",".join(f"{'IP' if h[0].isdigit() or ':' in h else 'DNS'}:{h}" for h in hosts)
    (d / "broker.ext").write_text(
        f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-set_serial", f"0x{secrets.token_hex(8)}", "-days", str(days),
        "-extfile", "broker.ext", "-out", "broker.pem",
        cwd=d,
    )  # fmt: skip
    keystore = d / "keystore.pem"
    keystore.write_text(
        "".join((d / f).read_text() for f in ("broker.key", "broker.pem", "ca.pem"))
    )
    return Certs(d, d / "ca.pem", keystore)


def sasl_ssl_config(
    port: int, controller_port: int, sasl_port: int, certs: Certs, mechanism: str = MECHANISM
) -> dict[str, str]:
    """``extra_config`` for a ``KafkaBroker(port, controller_port, ...)``: its PLAINTEXT
    listener plus a ``SASL_SSL`` listener on ``sasl_port`` accepting only ``mechanism``."""
    prefix = f"listener.name.{LISTENER.lower()}."
    return {
        "listeners": (
            f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port},"
            f"{LISTENER}://127.0.0.1:{sasl_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port},{LISTENER}://127.0.0.1:{sasl_port}",
        "listener.security.protocol.map": (
            f"CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,{LISTENER}:{LISTENER}"
        ),
        f"{prefix}sasl.enabled.mechanisms": mechanism,
        f"{prefix}{mechanism.lower()}.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        f"{prefix}ssl.keystore.type": "PEM",
        f"{prefix}ssl.keystore.location": str(certs.keystore),
        f"{prefix}ssl.client.auth": "none",
    }


def scram_format_args(users: Mapping[str, str], mechanism: str = MECHANISM) -> tuple[str, ...]:
    """``StorageTool format`` arguments that create the SCRAM ``users`` (name -> password)."""
    args: list[str] = []
    for name, password in users.items():
        if any(c in f"{name}{password}" for c in ",[]="):
            raise ValueError("SCRAM names and passwords for --add-scram cannot contain ,[]=")
        args += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
    return tuple(args)


def client_config(
    bootstrap: str, certs: Certs, username: str, password: str, mechanism: str = MECHANISM
) -> dict[str, str]:
    """librdkafka settings of a client of the ``SASL_SSL`` listener."""
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": mechanism,
        "sasl.username": username,
        "sasl.password": password,
        "ssl.ca.location": str(certs.ca),
    }


@dataclass
class SecureKafka:
    """A broker from :func:`make_secure_broker` (started or not) and how to reach it."""

    broker: KafkaBroker
    certs: Certs
    sasl_port: int

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    def client_config(self, username: str, password: str) -> dict[str, str]:
        """librdkafka settings for ``username`` on the ``SASL_SSL`` listener."""
        return client_config(self.sasl_bootstrap, self.certs, username, password)


def make_secure_broker(
    data_dir: Path,
    users: Mapping[str, str],
    factory: Callable[..., KafkaBroker] = KafkaBroker,
) -> SecureKafka:
    """An unstarted broker in ``data_dir`` with a SCRAM-SHA-512 ``SASL_SSL`` listener for
    ``users`` (name -> password), certificates in ``data_dir/certs``.

    ``factory`` builds the broker (``KafkaBroker``, or the ``broker_factory`` fixture).
    """
    data_dir = Path(data_dir)
    ports: list[int] = []
    while len(ports) < 3:  # three distinct free ports
        candidate = free_port()
        if candidate not in ports:
            ports.append(candidate)
    port, controller_port, sasl_port = ports
    certs = make_certs(data_dir / "certs")
    broker = factory(
        port=port,
        controller_port=controller_port,
        data_dir=data_dir,
        extra_config=sasl_ssl_config(port, controller_port, sasl_port, certs),
        format_args=scram_format_args(users),
    )
    return SecureKafka(broker, certs, sasl_port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.kafka_secure", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run a TLS + SCRAM broker in the foreground until Ctrl-C")
    run.add_argument("--user", default="alice")
    run.add_argument("--password", default="alice-secret")
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # like Ctrl-C
    with tempfile.TemporaryDirectory(prefix="relayer-kafka-secure-") as tmp:
        kafka = make_secure_broker(Path(tmp), {args.user: args.password})
        with kafka.broker as broker:
            settings: dict[str, Any] = kafka.client_config(args.user, args.password)
            print(
                f"Kafka ready in {broker.start_seconds:.1f} s: PLAINTEXT {broker.bootstrap}, "
                f"{LISTENER} {kafka.sasl_bootstrap}. Ctrl-C to stop. Client settings:",
                *(f"  {k}={v}" for k, v in settings.items()),
                sep="\n",
                flush=True,
            )
            return serve_until_interrupted(broker)


if __name__ == "__main__":
    sys.exit(main())
