"""Validate messages against relayer's JSON Schemas (``relayer/schemas/``)."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parents[1] / "relayer" / "schemas"
BASE = "https://github.com/relayer/schemas/1/"
KINDS = ("event", "request_record", "call_record", "log_record")


def _registry() -> Registry:
    resources = []
    for path in SCHEMAS.glob("*.json"):
        schema = json.loads(path.read_text())
        assert schema["$id"] == BASE + path.name, path
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


REGISTRY = _registry()
VALIDATORS = MappingProxyType(
    {
        kind: Draft202012Validator(
            json.loads((SCHEMAS / f"{kind}.json").read_text()), registry=REGISTRY
        )
        for kind in KINDS
    }
)


def kind_of(message: Any) -> str:
    """Which schema a relayer message should match."""
    if "lines" not in message:
        return "event"
    if "method" in message:
        return "request_record"
    if "service" in message:
        return "call_record"
    return "log_record"


def validate(message: Any, kind: str | None = None) -> str:
    """Raise ``jsonschema.ValidationError`` unless ``message`` matches; return the kind."""
    kind = kind or kind_of(message)
    VALIDATORS[kind].validate(message)
    return kind
