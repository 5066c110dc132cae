"""Reads an Iceberg table with pyiceberg, a reader independent of export-events, for the tests.

    iceberg_table.py CATALOG_URI WAREHOUSE NAMESPACE.TABLE [SINCE]

CATALOG_URI is SQLAlchemy's (sqlite:////abs/lake.db, postgresql+psycopg2://...), for the SQL
catalog named "default", or a REST catalog's http:// URL (its token in ICEBERG_REST_TOKEN). A warehouse in S3 is reached with the AWS_* variables. Prints one JSON object: whether the table exists, its current
snapshot (id, summary), how many snapshots it has, its partition spec and sort order, how many
data files a full scan plans and how many a scan with `timestamp >= SINCE` plans (partition
pruning), and the rows that scan reads, as [id, epoch microseconds, rule, acknowledged,
telemetry id, device id] (and the version, in a table of incremental runs), newest first. A
table of changes gives "changes" instead: [lsn, position, op, id, epoch microseconds, rule,
acknowledged, telemetry id, device id], in the order the scan reads them.
"""
import json
import os
import sys

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import AlwaysTrue, GreaterThanOrEqual

uri, warehouse, name = sys.argv[1:4]
since = sys.argv[4] if len(sys.argv) > 4 else None
# A warehouse in S3: the AWS variables export-events was given, as pyiceberg's properties.
s3 = {}
if os.environ.get("AWS_ENDPOINT_URL"):
    s3 = {
        "s3.endpoint": os.environ["AWS_ENDPOINT_URL"],
        "s3.access-key-id": os.environ["AWS_ACCESS_KEY_ID"],
        "s3.secret-access-key": os.environ["AWS_SECRET_ACCESS_KEY"],
        "s3.region": os.environ.get("AWS_REGION", "us-east-1"),
        "s3.force-virtual-addressing": "false",
    }
if uri.startswith("http"):
    # A REST catalog: the table's location comes from the catalog, its secret from the
    # variable export-events reads.
    catalog = RestCatalog("default", uri=uri, token=os.environ["ICEBERG_REST_TOKEN"], **s3)
else:
    catalog = SqlCatalog("default", uri=uri, warehouse=warehouse, **s3)
try:
    table = catalog.load_table(name)
except NoSuchTableError:
    print(json.dumps({"exists": False}))
    sys.exit(0)

snapshot = table.current_snapshot()
out = {
    "exists": True,
    "metadata_location": table.metadata_location,
    "snapshots": len(table.metadata.snapshots),
    "snapshot": snapshot.snapshot_id if snapshot else None,
    "summary": dict(snapshot.summary.additional_properties) if snapshot else {},
    "summaries": [dict(s.summary.additional_properties) for s in table.metadata.snapshots],
    "spec": str(table.spec()),
    "sort": str(table.sort_order()),
    "files": 0,
    "planned": 0,
    "rows": [],
}
if snapshot and "op" in table.schema().column_names:
    out["files"] = sum(1 for _ in table.scan().plan_files())
    rows = table.scan().to_arrow()
    names = ["lsn", "position", "op", "id", "timestamp", "rule", "acknowledged",
             "trigger_telemetry_id", "trigger_device_id"]
    columns = [rows[n].to_pylist() for n in names]
    columns[4] = pc.cast(rows["timestamp"], pa.int64()).to_pylist()
    out["changes"] = [list(row) for row in zip(*columns)]
elif snapshot:
    out["files"] = sum(1 for _ in table.scan().plan_files())
    row_filter = GreaterThanOrEqual("timestamp", since) if since else AlwaysTrue()
    scan = table.scan(row_filter=row_filter)
    out["planned"] = sum(1 for _ in scan.plan_files())
    rows = scan.to_arrow().sort_by([("timestamp", "descending"), ("id", "descending")])
    micros = pc.cast(rows["timestamp"], pa.int64()).to_pylist()
    columns = [
        rows["id"].to_pylist(),
        micros,
        rows["rule"].to_pylist(),
        rows["acknowledged"].to_pylist(),
        rows["trigger_telemetry_id"].to_pylist(),
        rows["trigger_device_id"].to_pylist(),
    ]
    if "version" in rows.column_names:
        columns.append(rows["version"].to_pylist())
    out["rows"] = [list(row) for row in zip(*columns)]
print(json.dumps(out))
