"""How replayer authenticates to a Kafka cluster, as its event source mapping does (MSK IAM, SASL/SCRAM
and SASL/PLAIN with the mapping's Secrets Manager secret, mutual TLS, plaintext), checked on the client
configuration built: the test broker (Tansu, memory-only) offers none of these (docs/kafka.md)."""

from __future__ import annotations

import base64
import datetime
import ssl
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from replayer.aws import Clients
from replayer.parse import parse_message
from replayer.readers.kafka import (
    KafkaAuth,
    KafkaReader,
    MskTokens,
    auth_of_mapping,
    client_options,
    msk_brokers,
)
from tests.support.kafka import invocation_record
from tests.support.tls import Authority

SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:AmazonMSK_reader-AbCdEf"
CA = "arn:aws:secretsmanager:us-east-1:123456789012:secret:root-ca-AbCdEf"


def mapping(*configs: tuple[str, str]) -> dict[str, object]:
    return {"SourceAccessConfigurations": [{"Type": kind, "URI": uri} for kind, uri in configs]}


@pytest.mark.parametrize(
    ("configs", "msk_region", "expected"),
    [
        ((), "us-east-1", KafkaAuth("iam", region="us-east-1")),
        ((("SASL_SCRAM_512_AUTH", SECRET),), "us-east-1", KafkaAuth("scram-512", SECRET, region="us-east-1")),
        (
            (("SASL_SCRAM_256_AUTH", SECRET), ("SERVER_ROOT_CA_CERTIFICATE", CA)),
            None,
            KafkaAuth("scram-256", SECRET, CA),
        ),
        ((("BASIC_AUTH", SECRET),), None, KafkaAuth("plain", SECRET)),
        (
            (("CLIENT_CERTIFICATE_TLS_AUTH", SECRET),),
            "us-east-1",
            KafkaAuth("tls", SECRET, region="us-east-1"),
        ),
        (
            (("VPC_SUBNET", "subnet:subnet-1"), ("VPC_SECURITY_GROUP", "security_group:sg-1")),
            None,
            KafkaAuth("plaintext"),
        ),
        ((("SERVER_ROOT_CA_CERTIFICATE", CA),), None, KafkaAuth("tls", None, CA)),
    ],
)
def test_the_mappings_authentication(
    configs: tuple[tuple[str, str], ...], msk_region: str | None, expected: KafkaAuth
) -> None:
    assert auth_of_mapping(mapping(*configs), msk_region=msk_region) == expected


def test_plaintext_is_plaintext_only() -> None:
    assert client_options(KafkaAuth("plaintext")) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize(
    ("mechanism", "sasl"),
    [("scram-512", "SCRAM-SHA-512"), ("scram-256", "SCRAM-SHA-256"), ("plain", "PLAIN")],
)
def test_sasl_with_the_secrets_credentials_over_tls(mechanism: str, sasl: str) -> None:
    options = client_options(
        KafkaAuth(mechanism, SECRET), secret={"username": "reader", "password": "s3cret"}
    )
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == sasl
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("reader", "s3cret")
    context = options["ssl_context"]
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    with pytest.raises(ValueError, match="no username and password"):
        client_options(KafkaAuth(mechanism, SECRET), secret={"username": "reader"})


def test_msk_iam_is_oauthbearer_with_signed_tokens() -> None:
    tokens = MskTokens("us-east-1")
    options = client_options(KafkaAuth("iam", region="us-east-1"), token_provider=tokens)
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "OAUTHBEARER"
    assert options["sasl_oauth_token_provider"] is tokens
    with pytest.raises(ValueError):
        client_options(KafkaAuth("iam", region="us-east-1"))


def _query(token: str) -> tuple[str | None, dict[str, list[str]]]:
    url = urlparse(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode())
    return url.hostname, parse_qs(url.query)


async def test_an_msk_iam_token_is_a_presigned_connect_request_as_aws_signs_it() -> None:
    from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

    ours = await MskTokens("us-east-1").token()  # signed locally with the test credentials
    theirs, _ = MSKAuthTokenProvider.generate_auth_token("us-east-1")
    (host, query), (their_host, their_query) = _query(ours), _query(theirs)
    assert host == their_host == "kafka.us-east-1.amazonaws.com"
    assert query["Action"] == ["kafka-cluster:Connect"] and "X-Amz-Signature" in query
    assert set(query) == set(their_query)
    same = ("Action", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Expires", "X-Amz-SignedHeaders")
    for name in same:
        assert query[name] == their_query[name], name


def client_certificate() -> tuple[str, str]:
    """A client certificate and its key, PEM (self-signed: loading it is what is checked here)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "replayer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), pem_key.decode()


def test_mutual_tls_loads_the_client_certificate_and_the_clusters_ca(tmp_path: Path) -> None:
    authority = Authority.make(tmp_path, "kafka")
    certificate, key = client_certificate()
    ca_pem = authority.bundle.read_text()
    options = client_options(
        KafkaAuth("tls", SECRET, CA), secret={"certificate": certificate, "privateKey": key}, ca_pem=ca_pem
    )
    assert options["security_protocol"] == "SSL"
    context: ssl.SSLContext = options["ssl_context"]
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "kafka"),),)]
    with pytest.raises(ValueError, match="certificate and privateKey"):
        client_options(KafkaAuth("tls", SECRET), secret={"certificate": certificate})
    assert not list(Path("/tmp").glob("replayer-tls-*"))  # the key's temporary copy is gone


def test_msk_brokers_match_the_authentication() -> None:
    answer = {
        "BootstrapBrokerString": "b-1.c.kafka.us-east-1.amazonaws.com:9092",
        "BootstrapBrokerStringTls": "b-1.c.kafka.us-east-1.amazonaws.com:9094",
        "BootstrapBrokerStringSaslScram": "b-1.c.kafka.us-east-1.amazonaws.com:9096",
        "BootstrapBrokerStringSaslIam": "b-2.c.kafka.us-east-1.amazonaws.com:9098,b-1.c.kafka.us-east-1.amazonaws.com:9098",
    }
    assert msk_brokers(answer, KafkaAuth("iam")) == (
        "b-1.c.kafka.us-east-1.amazonaws.com:9098",
        "b-2.c.kafka.us-east-1.amazonaws.com:9098",
    )
    assert msk_brokers(answer, KafkaAuth("scram-512")) == ("b-1.c.kafka.us-east-1.amazonaws.com:9096",)
    assert msk_brokers(answer, KafkaAuth("tls")) == ("b-1.c.kafka.us-east-1.amazonaws.com:9094",)
    assert msk_brokers({}, KafkaAuth("iam")) is None


async def test_without_configured_brokers_the_mapping_is_asked_and_its_absence_said() -> None:
    # The emulator's Lambda has no Kafka mapping of this function: nothing is read, the range is retried.
    [failure] = parse_message(invocation_record({("orders", 0): (0, 1)}))
    async with Clients() as clients:
        result = await KafkaReader(clients).read(failure)
    assert not result.complete and len(result.records) == 0
    assert "cannot reach the cluster" in result.notes[0] or "looking up the cluster failed" in result.notes[0]


def test_kafka_brokers_from_the_flag_or_the_environment() -> None:
    from replayer import config
    from replayer.errors import ConfigError

    text = "arn:aws:kafka:*:cluster/orders/*=b-2.x:9098,b-1.x:9098 kafka://*=127.0.0.1:9092"
    expected = (
        ("arn:aws:kafka:*:cluster/orders/*", ("b-1.x:9098", "b-2.x:9098")),
        ("kafka://*", ("127.0.0.1:9092",)),
    )
    assert config.load("replay", {"to": ["-"], "kafka_brokers": text}, env={}).kafka_brokers == expected
    assert (
        config.load(
            "run",
            {
                "to": ["-"],
                "queue": "https://sqs.us-east-1.amazonaws.com/123456789012/q",
                "allow_streams": ["*"],
            },
            env={"REPLAYER_KAFKA_BROKERS": text},
        ).kafka_brokers
        == expected
    )
    for bad in ("nonsense", "kafka://*=", "=127.0.0.1:9092", "kafka://*=host:99999"):
        with pytest.raises(ConfigError, match="SOURCE_GLOB=HOST:PORT"):
            config.load("replay", {"to": ["-"], "kafka_brokers": bad}, env={})


def test_a_mapping_reads_a_self_managed_cluster_by_its_servers_and_msk_by_its_arn() -> None:
    from replayer.mappings import reads_source

    self_managed = {
        "SelfManagedEventSource": {
            "Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["B.example:9092", "a.example:9092"]}
        }
    }
    assert reads_source(self_managed, "kafka://a.example:9092,b.example:9092")
    assert not reads_source(self_managed, "kafka://a.example:9092")
    msk = {"EventSourceArn": "arn:aws:kafka:us-east-1:123456789012:cluster/c/u"}
    assert reads_source(msk, "arn:aws:kafka:us-east-1:123456789012:cluster/c/u")
    assert not reads_source(msk, "kafka://a.example:9092,b.example:9092")


async def test_a_self_managed_range_without_a_function_arn_has_no_mapping_to_find() -> None:
    from replayer.mappings import MappingFinder

    record = invocation_record({("orders", 0): (0, 1)}, source=None)
    record["requestContext"]["functionArn"] = "arn:aws:iam::123456789012:role/not-a-function"
    [failure] = parse_message(record)
    async with Clients() as clients:
        found = await MappingFinder(clients).find(failure)
    assert found is not None and not found.found and "not a function ARN" in found.note
