"""The archive: where a range's records, manifest and loss report live, written and read back.

`layout` names the objects (from the range only), `store` creates them (S3 or a local
directory, create-only), `manifest` holds the documents' shape (writes and reads them),
`write` stores one range so that it is consistent as a whole, `read` finds complete ranges
and hands their records back verified.
"""

from replayer.archive.layout import LOSS_REPORT, MANIFEST, RECORDS, REDRIVEN, range_path, stream_path
from replayer.archive.manifest import ArchivedRange, archived_range
from replayer.archive.store import FileStore, S3Store, Store, StoreError, parse_location, store_from_uri

__all__ = [
    "LOSS_REPORT",
    "MANIFEST",
    "RECORDS",
    "REDRIVEN",
    "ArchivedRange",
    "FileStore",
    "S3Store",
    "Store",
    "StoreError",
    "archived_range",
    "parse_location",
    "range_path",
    "store_from_uri",
    "stream_path",
]
