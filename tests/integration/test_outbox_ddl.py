"""The README's DDL for the outbox table, on a real PostgreSQL: the table it makes is
the one the outbox creates itself, and the outbox works on it."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from sqlalchemy import inspect, text, update
from sqlalchemy.orm import Session

from relayer import Relayer
from relayer.outbox import Outbox

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_ddl() -> list[str]:
    [block] = re.findall(r"^```sql\n(.*?)^```", README.read_text(), re.S | re.M)
    return [statement.strip() for statement in block.split(";") if statement.strip()]


def columns(engine, table):
    found = inspect(engine)
    described = {c["name"]: (str(c["type"]), c["nullable"]) for c in found.get_columns(table)}
    indexes = sorted((i["name"], tuple(i["column_names"])) for i in found.get_indexes(table))
    unique = sorted(tuple(u["column_names"]) for u in found.get_unique_constraints(table))
    return described, indexes, unique


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_readme_ddl_makes_the_outbox_table(engine_factory, relayer_patch):
    by_hand, by_outbox = engine_factory(), engine_factory()
    with by_hand.begin() as connection:
        for statement in readme_ddl():
            connection.execute(text(statement))
        connection.execute(text("CREATE SCHEMA other"))
    other = engine_factory(by_outbox.url, connect_args={"options": "-csearch_path=other"})
    made = Outbox(Relayer("logs", "k:1"), other)  # creates its own, in schema "other"
    assert columns(by_hand, "relayer_outbox") == columns(other, "relayer_outbox")
    made.close(1)

    outbox = Outbox(Relayer("logs", "k:1"), by_hand, relay_after=0)  # uses the README's
    with Session(by_hand) as session:
        outbox.emit(session, "orders", "created", {"id": 1})
        session.commit()
    outbox.flush(5)
    assert outbox.pending() == 0
    with Session(by_hand) as session:
        outbox.emit(session, "orders", "created", {"id": 2})
        session.info.clear()  # as if the process had died before producing
        session.commit()
    with by_hand.begin() as connection:
        connection.execute(update(outbox.table).values(created_at=time.time() - 60))
    assert outbox.relay_once() == 1
    assert [e["payload"] for e in relayer_patch.messages("orders")] == [{"id": 1}, {"id": 2}]
    outbox.close(1)
