"""The README's ``rpc_handler.py``: import it after ``init_relayer``."""

from __future__ import annotations

from typing import Any

from .rpc_extensions import rpc_relayer

assert rpc_relayer is not None, "call rpc_extensions.init_relayer() before importing rpc_handler"


class InventoryService:
    @rpc_relayer
    def reserve(self, sku: str, quantity: int, relayer: Any = None) -> bool:
        relayer.log("info", f"reserving {quantity} x {sku}")
        relayer.emit("inventory", "reserved", {"sku": sku, "quantity": quantity}, partition_key=sku)
        return True
