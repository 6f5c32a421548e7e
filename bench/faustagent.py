"""The bare Faust agent of `python -m bench worker`, run in its own process (one per row).

    python -m bench.faustagent BOOTSTRAP APP_ID SOURCE SINK MODE GUARANTEE DATADIR

MODE `forward`: every record of SOURCE is sent unchanged to SINK. MODE `table`: the same, and one table
row per record (key: the record's key, value: a small dict), so the row is the only difference.
GUARANTEE is Faust's processing_guarantee (at_least_once | exactly_once). The App is configured like
leadrelay's (RocksDB store, 5 ms linger, 2.8 s commit interval, 4,096-event stream buffer) and nothing
else: no sensors, no web server, no validation. Writes the wall time (epoch seconds) and its CPU seconds
so far at the first record it handles to DATADIR.first; the harness measures from there to the moment it
has read the last output record (read_committed).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import faust


def first_mark(datadir: str) -> Path:
    return Path(f"{datadir}.first")


def build(bootstrap: str, app_id: str, source: str, sink: str, mode: str, guarantee: str, datadir: str) -> faust.App:
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="rocksdb://",
        datadir=datadir,
        processing_guarantee=guarantee,
        topic_partitions=4,
        topic_replication_factor=1,
        web_enabled=False,
        producer_linger=0.005,
        broker_commit_interval=2.8,
        stream_buffer_maxsize=4096,
        autodiscover=False,
        loghandlers=[],
    )
    src = app.topic(source, key_serializer="raw", value_serializer="raw")
    out = app.topic(sink, key_serializer="raw", value_serializer="raw")
    table = app.Table("rows", default=None, partitions=4, key_type=str) if mode == "table" else None
    seen = [0]

    @app.agent(src)
    async def copy(stream: Any) -> None:
        async for event in stream.events():
            if not seen[0]:  # wall time and this process's CPU seconds so far (all threads)
                first_mark(datadir).write_text(f"{time.time()!r} {time.process_time()!r}")
            seen[0] += 1
            if table is not None:
                msg = event.message
                table[event.key.decode()] = {"partition": msg.partition, "offset": msg.offset}
            await out.send(key=event.key, value=event.value)

    return app


def main(argv: list[str]) -> None:
    if len(argv) != 7 or argv[4] not in ("forward", "table"):
        raise SystemExit(__doc__)
    app = build(*argv)
    sys.argv = sys.argv[:1]  # the Worker must not read our arguments as its own
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1:])
