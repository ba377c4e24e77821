"""moto's server, with a lean JSON answer for DynamoDB Streams GetRecords.

moto 5.2 serializes every GetRecords answer attribute by attribute through its service
model: about 0.5 ms of emulator CPU per record, which AWS does not cost. With that in
the way, the benchmark measures moto, not the client. This entry point serves the very
same records as plain JSON (what the wire carries: epoch-second timestamps) and changes
nothing else. `--emulator moto` in bench/run.py runs moto as shipped, for comparison.

    python bench/lean_moto.py -H 127.0.0.1 -p PORT
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
from moto.server import main


def _epoch(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()
    raise TypeError(type(value))


def _get_records(self: DynamoDBStreamsHandler) -> str:
    limit = self._get_param("Limit") or 1000
    result = self.backend.get_records(self._get_param("ShardIterator"), limit)
    return json.dumps(result, default=_epoch)


DynamoDBStreamsHandler.get_records = _get_records  # type: ignore[assignment,method-assign]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
