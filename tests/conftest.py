"""Shared fixtures: a moto server over HTTP, started by the suite itself, and a fault proxy.

Every test that touches AWS talks HTTP to these; nothing of replayer's is stubbed.
The helpers test modules share live in tests/support/ (test modules never import each other).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
import structlog
from moto.server import ThreadedMotoServer

from replayer import lambda_handler
from tests.support.aws import REGION, DynamoTable, KinesisStream, client, unique
from tests.support.faultproxy import FaultProxy
from tests.support.kafka import Tansu
from tests.support.kafka import running as tansu_running
from tests.support.ministack import lambda_endpoint, ministack, repair  # noqa: F401  (shared fixtures)


@pytest.fixture(autouse=True)
def fresh_logging_and_runtime() -> Iterator[None]:
    """Each test starts with structlog's defaults and no warm Lambda runtime left by another."""
    structlog.reset_defaults()
    yield
    lambda_handler.reset()
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the emulator's access log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[Tansu]:
    """Tansu, a Kafka-compatible broker, on 127.0.0.1 behind the suite's shim (tests/support/kafka.py)."""
    with tansu_running() as broker:
        yield broker


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> str:
    """Point the standard AWS environment at the emulator for every test."""
    for key in list(os.environ):
        if key.startswith(("AWS_", "REPLAYER_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    # Deny by default: tests allow every stream and failure bucket unless they say otherwise.
    monkeypatch.setenv("REPLAYER_ALLOW_STREAMS", "*")
    monkeypatch.setenv("REPLAYER_FAILURE_BUCKETS", "*")
    return moto_endpoint


@pytest.fixture
def proxy(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A fault proxy in front of the emulator; replayer's clients go through it."""
    fp = FaultProxy(moto_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", fp.url)
    yield fp
    fp.close()


@pytest.fixture
def table(moto_endpoint: str) -> DynamoTable:
    return DynamoTable(moto_endpoint)


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    name = unique("archive")
    client("s3", moto_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def kinesis_stream(moto_endpoint: str) -> KinesisStream:
    """A one-shard Kinesis stream in moto (short decimal sequence numbers: "9" then "10")."""
    return KinesisStream(moto_endpoint)
