"""replayer.aws's process-wide sharing: botocore's data read once (with orjson) and TLS contexts
made once per trust set-up, without changing what the SDK loads or whom it trusts."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import SSLError, UnknownServiceError
from botocore.loaders import Loader

from replayer.aws import Clients, sdk_loader, without_unread_context_params
from tests.support.aws import unique
from tests.support.tls import Authority, TLSFront

# What replayer's clients load: the services it calls, and the data every client reads.
SERVICES = ("dynamodbstreams", "kinesis", "s3", "lambda", "sqs", "sts", "pipes")


def _ordered(data: Any) -> str:
    return json.dumps(data)  # key order kept: botocore serializes members in the model's order


def _fresh(tmp_path: Path) -> tuple[Any, Any]:
    """A shared loader nothing read through yet (its own data path), and botocore's for the same path:
    botocore's endpoint resolution completes the endpoint data it was handed, in place (once per
    process now, as it always was once per session)."""
    return sdk_loader(str(tmp_path)), Loader(extra_search_paths=[str(tmp_path)])


@pytest.mark.parametrize("service", SERVICES)
def test_the_shared_loader_yields_botocores_own_models(service: str, tmp_path: Path) -> None:
    """The same models, less the endpoint context parameters no endpoint rule reads."""
    ours, theirs = _fresh(tmp_path)
    rules = theirs.load_service_model(service, "endpoint-rule-set-1")
    assert _ordered(ours.load_service_model(service, "service-2")) == _ordered(
        without_unread_context_params(theirs.load_service_model(service, "service-2"), rules)
    )
    for kind in ("endpoint-rule-set-1", "paginators-1"):
        assert _ordered(ours.load_service_model(service, kind)) == _ordered(
            theirs.load_service_model(service, kind)
        )


def context_params(model: dict[str, Any], shape: str) -> dict[str, str]:
    members = model["shapes"][shape]["members"]
    return {name: m["contextParam"]["name"] for name, m in members.items() if "contextParam" in m}


def test_object_keys_no_longer_reach_s3_endpoint_resolution_and_buckets_still_do(tmp_path: Path) -> None:
    """S3's rule set declares Key, Prefix and CopySource and reads none of them: passed, they made
    botocore's endpoint cache miss on every object call. Bucket, which rules read, is kept."""
    ours, theirs = _fresh(tmp_path)
    assert context_params(theirs.load_service_model("s3", "service-2"), "PutObjectRequest") == {
        "Bucket": "Bucket",
        "Key": "Key",
    }
    model = ours.load_service_model("s3", "service-2")
    assert context_params(model, "PutObjectRequest") == {"Bucket": "Bucket"}
    assert context_params(model, "ListObjectsV2Request") == {"Bucket": "Bucket"}
    assert context_params(model, "CopyObjectRequest") == {"Bucket": "Bucket"}


@pytest.mark.parametrize(
    "rule",
    [
        {"conditions": [{"fn": "isSet", "argv": [{"ref": "Key"}]}], "type": "error", "error": "x"},
        {"conditions": [], "type": "endpoint", "endpoint": {"url": "https://{Bucket}.example/{Key}"}},
        {"conditions": [], "type": "endpoint", "endpoint": {"url": "https://example/{Key#path}"}},
    ],
    ids=["ref", "template", "template-path"],
)
def test_a_context_parameter_a_rule_reads_is_kept(rule: dict[str, Any]) -> None:
    model = {"shapes": {"Put": {"members": {"Key": {"contextParam": {"name": "Key"}}}}}}
    rules = {"parameters": {"Key": {"type": "String"}, "Bucket": {"type": "String"}}, "rules": [rule]}
    assert context_params(without_unread_context_params(model, rules), "Put") == {"Key": "Key"}
    unread = {"parameters": rules["parameters"], "rules": [{"conditions": [], "type": "error", "error": "x"}]}
    assert context_params(without_unread_context_params(model, unread), "Put") == {}


def test_a_service_botocore_lacks_is_refused_as_botocore_refuses_it() -> None:
    with pytest.raises(UnknownServiceError) as theirs:
        Loader().load_service_model("no-such-service", "service-2")
    with pytest.raises(UnknownServiceError) as ours:
        sdk_loader().load_service_model("no-such-service", "service-2")
    assert str(ours.value) == str(theirs.value) and "dynamodbstreams" in str(ours.value)


def test_the_shared_loader_yields_botocores_own_data_files(tmp_path: Path) -> None:
    ours, theirs = _fresh(tmp_path)
    for name in ("endpoints", "partitions", "sdk-default-configuration", "_retry"):
        assert _ordered(ours.load_data(name)) == _ordered(theirs.load_data(name))


def test_one_loader_per_data_path_and_aws_data_path_models_are_found_plain_or_gzipped(tmp_path: Path) -> None:
    model = {"version": "2.0", "metadata": {"apiVersion": "2020-01-01"}, "big": 2**70, "shapes": {}}
    (tmp_path / "plain" / "2020-01-01").mkdir(parents=True)
    (tmp_path / "plain" / "2020-01-01" / "service-2.json").write_text(json.dumps(model))
    (tmp_path / "zipped" / "2020-01-01").mkdir(parents=True)
    (tmp_path / "zipped" / "2020-01-01" / "service-2.json.gz").write_bytes(
        gzip.compress(json.dumps(model).encode())
    )
    loader = sdk_loader(str(tmp_path))
    assert loader is sdk_loader(str(tmp_path)) and loader is not sdk_loader()
    assert loader.load_service_model("plain", "service-2") == model  # 2**70: past what orjson reads
    assert loader.load_service_model("zipped", "service-2") == model
    assert "s3" in loader.list_available_services("service-2")  # botocore's own data is searched too


def test_sessions_share_the_loader_of_their_data_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Clients()._sdk().get_component("data_loader") is sdk_loader()
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))
    assert Clients()._sdk().get_component("data_loader") is sdk_loader(str(tmp_path))


@pytest.fixture
def authorities(tmp_path: Path) -> tuple[Authority, Authority]:
    return Authority.make(tmp_path, "ours"), Authority.make(tmp_path, "other")


@pytest.fixture
def front(authorities: tuple[Authority, Authority], moto_endpoint: str) -> Iterator[TLSFront]:
    front = TLSFront(authorities[0], moto_endpoint)
    yield front
    front.close()


def _context(client: Any) -> Any:
    """The TLS context the client's connections use (aiohttp's connector of its HTTP session)."""
    return client._client._endpoint.http_session._sessions[None].connector._ssl


async def test_clients_share_one_tls_context_and_verify_with_the_configured_ca_bundle(
    authorities: tuple[Authority, Authority], front: TLSFront, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", front.url)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(authorities[0].bundle))
    async with Clients() as clients:
        s3, sqs = await clients.get("s3"), await clients.get("sqs")
        bucket = unique("tls")
        await s3.create_bucket(Bucket=bucket)
        await sqs.list_queues()
        shared = _context(s3)
        assert shared is _context(sqs)
    assert front.handshakes >= 2  # both spoke TLS to the front, trusting only our authority
    async with Clients() as clients:  # a new set of clients, the same trust: the same context
        again = await clients.get("s3")
        await again.head_bucket(Bucket=bucket)
        assert _context(again) is shared


@pytest.mark.parametrize("trust", ["another CA bundle", "the default bundle"])
async def test_a_server_the_configured_bundle_does_not_vouch_for_is_refused(
    trust: str, authorities: tuple[Authority, Authority], front: TLSFront, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", front.url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_CA_BUNDLE", str(authorities[0].bundle))
    async with Clients() as clients:  # a shared context trusting our authority exists before
        await (await clients.get("sqs")).list_queues()
    if trust == "another CA bundle":
        monkeypatch.setenv("AWS_CA_BUNDLE", str(authorities[1].bundle))
    else:
        monkeypatch.delenv("AWS_CA_BUNDLE")
    async with Clients() as clients:
        with pytest.raises(SSLError):
            await (await clients.get("sqs")).list_queues()
    assert front.handshakes == 1
