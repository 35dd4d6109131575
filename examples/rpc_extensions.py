"""The README's ``extensions.py`` for an RPC service: the decorator is built
by ``init_relayer`` before the handler module is imported."""

from __future__ import annotations

from typing import Any, Optional

from relayer.rpc import RPCRelayer, make_rpc_relayer

rpc_relayer: Optional[RPCRelayer] = None


def init_relayer(
    logging_topic: str, kafka_hosts: Optional[str] = None, **kwargs: Any
) -> RPCRelayer:
    global rpc_relayer
    rpc_relayer = make_rpc_relayer(logging_topic, kafka_hosts=kafka_hosts, **kwargs)
    return rpc_relayer
