"""The manifest key: a KMS HMAC key that authenticates every manifest replayer writes.

With ``--manifest-key KEY`` (`REPLAYER_MANIFEST_KEY`), each manifest carries a ``mac``:
``kms:GenerateMac`` (HMAC_SHA_256) over the SHA-256 of the manifest's canonical JSON (sorted
keys, no spaces, ASCII), the ``mac`` field itself left out. Reading a manifest back (`redrive`,
`status`, a retry adopting what an earlier attempt archived) calls ``kms:VerifyMac`` with the
configured key, never with a key the manifest names: a manifest without a valid MAC is refused,
so the archive vouches only for folders replayer wrote. Without a key the archive prefix is
trusted storage (the deploy templates let only replayer's role write there).

Only KMS holds the key: a writer to the bucket cannot forge a MAC, and a manifest copied from
another range fails `archived_range`'s own check that it describes its folder.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from replayer.aws import Clients, error_code
from replayer.wire import dumps

__all__ = ["ALGORITHM", "MAC_FIELD", "ManifestKey", "MacError", "MacUnavailable"]

ALGORITHM = "HMAC_SHA_256"
MAC_FIELD = "mac"
_CONTEXT = b"replayer-manifest-1\n"  # what the MAC is of: this format's manifests, nothing else


class MacError(ValueError):
    """A manifest without a valid MAC for the configured key: refused, never believed."""


class MacUnavailable(Exception):
    """KMS could not be asked just now (throttled, unreachable, not allowed): try again later."""


def _message(document: Mapping[str, Any]) -> bytes:
    """What is MACed: the canonical JSON of `document` without its ``mac``, as a SHA-256 (KMS takes
    at most 4 KiB; a manifest carries the whole invocation record)."""
    body = {k: v for k, v in document.items() if k != MAC_FIELD}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return _CONTEXT + hashlib.sha256(canonical.encode()).hexdigest().encode()


class ManifestKey:
    """`sign` a manifest document before it is written, `verify` one read back."""

    def __init__(self, clients: Clients, key_id: str) -> None:
        self.clients = clients
        self.key_id = key_id

    async def _kms(self) -> Any:
        region = self.key_id.split(":")[3] if self.key_id.startswith("arn:") else None
        return await self.clients.get("kms", region or None)

    async def sign(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """`document` with its ``mac`` (MacUnavailable when KMS cannot make one now)."""
        # The MAC is of the document as a reader will parse it: the bytes it is written as, parsed.
        parsed = json.loads(dumps(dict(document)))
        kms = await self._kms()
        try:
            answer = await kms.generate_mac(
                KeyId=self.key_id, MacAlgorithm=ALGORITHM, Message=_message(parsed)
            )
        except (ClientError, BotoCoreError) as exc:
            raise MacUnavailable(f"kms:GenerateMac with {self.key_id}: {_why(exc)}") from exc
        mac = {"key_id": answer.get("KeyId", self.key_id), "algorithm": ALGORITHM,
               "value": base64.b64encode(answer["Mac"]).decode()}  # fmt: skip
        return {**document, MAC_FIELD: mac}

    async def verify(self, document: Mapping[str, Any]) -> None:
        """Return when `document` carries a valid MAC of the configured key; MacError when it does not,
        MacUnavailable when KMS cannot say now."""
        mac = document.get(MAC_FIELD)
        if not isinstance(mac, Mapping) or not isinstance(mac.get("value"), str):
            raise MacError(f"it carries no MAC, and --manifest-key {self.key_id} is configured")
        try:
            value = base64.b64decode(mac["value"], validate=True)
        except ValueError:
            raise MacError("its MAC is not base64") from None
        kms = await self._kms()
        try:
            answer = await kms.verify_mac(
                KeyId=self.key_id, MacAlgorithm=ALGORITHM, Message=_message(document), Mac=value
            )
        except ClientError as exc:
            if error_code(exc) in (
                "KMSInvalidMacException",
                "InvalidCiphertextException",
                "ValidationException",
            ):
                raise MacError(f"its MAC is not valid for {self.key_id}") from None
            raise MacUnavailable(f"kms:VerifyMac with {self.key_id}: {_why(exc)}") from exc
        except BotoCoreError as exc:
            raise MacUnavailable(f"kms:VerifyMac with {self.key_id}: {_why(exc)}") from exc
        if not answer.get("MacValid"):
            raise MacError(f"its MAC is not valid for {self.key_id}")


def _why(exc: Exception) -> str:
    return error_code(exc) or str(exc) if isinstance(exc, ClientError) else str(exc)
