"""A DynamoDB stream consumer for the end-to-end test: it fails every batch that holds a poison item.

Standard library only (it runs in a ministack whose interpreter has nothing else). Before
answering, each invocation writes what it received and whether it failed to
``CALLS_DIR/<time>-<pid>.json`` (ministack runs functions on this machine), so the test knows
exactly which records Lambda's event source mapping gave up on. An item is poison when its
new image has a ``poison`` attribute.
"""

import json
import os
import time


def handler(event, context):
    records = event["Records"]
    failed = any("poison" in (r["dynamodb"].get("NewImage") or {}) for r in records)
    name = os.path.join(os.environ["CALLS_DIR"], f"{time.time_ns()}-{os.getpid()}.json")
    with open(name + ".part", "w") as out:
        json.dump({"records": records, "failed": failed}, out)
    os.replace(name + ".part", name)
    if failed:
        raise RuntimeError("a poison item in the batch")
    return {"processed": len(records)}
