"""A process that commits events through ``Outbox.emit`` while Kafka is unreachable, then
SIGKILLs itself right after its last commit (``test_outbox_kafka.py`` runs it).

``python outbox_writer.py DATABASE_URL TOPIC COUNT PER_COMMIT IDS_FILE``: COUNT events to
TOPIC, PER_COMMIT in each transaction; once each commit has returned, the event ids of that
transaction are appended to IDS_FILE (one write each, so that what the file holds at the
kill is exactly what was committed). The relayer points at 127.0.0.1:1, where nothing
listens: the produce after each commit can never be delivered, and every row stays.
"""

from __future__ import annotations

import os
import signal
import sys

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from relayer import Relayer
from relayer.outbox import Outbox


def main() -> None:
    url, topic, count, per_commit, ids_path = sys.argv[1:6]
    relayer = Relayer("logs", kafka_hosts="127.0.0.1:1", kafka_headers=True)
    engine = create_engine(url)
    outbox = Outbox(relayer, engine)
    fd = os.open(ids_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    total, per = int(count), int(per_commit)
    for start in range(0, total, per):
        with Session(engine) as session:
            ids = [
                outbox.emit(session, topic, "created", {"i": i}, partition_key=f"k{i}")
                for i in range(start, min(start + per, total))
            ]
            session.commit()
        os.write(fd, "".join(f"{event_id}\n" for event_id in ids).encode())
    os.kill(os.getpid(), signal.SIGKILL)  # right after the last commit: no close, no atexit


if __name__ == "__main__":
    main()
