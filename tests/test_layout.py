"""The package's shape: small modules, sorted exports, distinct names, aliases."""

import ast
from pathlib import Path

import pytest

import relayer
import relayer.asgi
import relayer.test
import relayer.testing
import relayer.wsgi

PACKAGE = Path(relayer.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_over_500_lines(path):
    assert len(path.read_text().splitlines()) <= 500


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_all_is_sorted(path):
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            names = [element.value for element in node.value.elts]
            assert names == sorted(names, key=_isort_style)


def _isort_style(name):
    """Constants first, then classes, then the rest, each alphabetically (ruff's RUF022)."""
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


def test_nothing_in_relayer_patches_its_own_internals():
    for path in MODULES:
        text = path.read_text()
        assert "unittest" not in text and "mock.patch" not in text, path


def test_the_middlewares_have_distinct_names_and_keep_their_import_paths():
    assert relayer.wsgi.RelayerMiddleware is relayer.wsgi.WSGIMiddleware
    assert relayer.asgi.RelayerMiddleware is relayer.asgi.ASGIMiddleware
    assert relayer.wsgi.WSGIMiddleware.__name__ == "WSGIMiddleware"
    assert relayer.asgi.ASGIMiddleware.__name__ == "ASGIMiddleware"


def test_relayer_test_is_the_original_name_of_relayer_testing():
    assert relayer.test.RelayerPatch is relayer.testing.RelayerPatch
    assert relayer.test.MockedProducer is relayer.testing.MockedProducer
