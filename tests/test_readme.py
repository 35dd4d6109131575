"""Every example in README.md runs as written (with Kafka swapped out).

A ``python`` block that starts with ``# file: PATH`` must be that file of the
repository, word for word (the demo runs those files against a real broker);
every other ``python`` block is executed, and the ``unittest.TestCase``
classes it defines are run. ``json`` blocks must parse.
"""

from __future__ import annotations

import io
import logging
import re
import unittest
from pathlib import Path

import orjson
import pytest

from relayer.testing import RelayerPatch

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
JSON = [code for lang, code in BLOCKS if lang == "json"]


def test_the_readme_has_examples():
    assert len(PYTHON) >= 8 and JSON


@pytest.mark.parametrize("code", PYTHON, ids=[f"python-{i}" for i in range(len(PYTHON))])
def test_python_example(code, monkeypatch):
    first = code.splitlines()[0]
    if first.startswith("# file: "):
        path = ROOT / first[len("# file: ") :]
        assert code.split("\n", 1)[1] == path.read_text()
        return
    namespace = {"__name__": "readme_example"}
    for name in ("relayer", None):  # the logging examples change these loggers: undo it
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "handlers", list(logger.handlers))
        monkeypatch.setattr(logger, "setLevel", lambda level: None)
    with RelayerPatch():
        exec(compile(code, "README.md", "exec"), namespace)
        cases = [
            value
            for value in namespace.values()
            if isinstance(value, type) and issubclass(value, unittest.TestCase)
        ]
        for case in cases:
            result = unittest.TextTestRunner(stream=io.StringIO()).run(
                unittest.defaultTestLoader.loadTestsFromTestCase(case)
            )
            assert result.wasSuccessful(), result.failures + result.errors


@pytest.mark.parametrize("code", JSON, ids=[f"json-{i}" for i in range(len(JSON))])
def test_json_example_parses(code):
    assert isinstance(orjson.loads(code), dict)


def test_the_configuration_table_lists_every_setting_and_its_flask_key():
    from relayer._settings import flask_key, names_of_settings

    section = (ROOT / "README.md").read_text().split("## Configuration", 1)[1]
    rows = {
        cells[0]: cells[1]
        for line in section.split("\n## ", 1)[0].splitlines()
        if line.startswith("| `")
        for cells in [[cell.strip().strip("`") for cell in line.strip("|").split("|")]]
    }
    for name in names_of_settings():
        assert rows.get(name) == flask_key(name), f"README's configuration table: {name}"
