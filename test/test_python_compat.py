"""JetPack 5 robots run Python 3.8: the code must parse as 3.8 and defer its annotations."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for folder in ('human_detector_ros', 'launch', 'tools', 'test', 'bench')
                 for p in (ROOT / folder).rglob('*.py'))


@pytest.mark.parametrize('path', SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_parses_as_python_3_8(path):
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 8))


@pytest.mark.parametrize('path', [p for p in SOURCES if 'human_detector_ros' in p.parts],
                         ids=lambda p: p.name)
def test_package_modules_with_annotations_defer_them(path):
    tree = ast.parse(path.read_text())
    annotated = any(isinstance(node, (ast.AnnAssign, ast.arg)) and node.annotation is not None
                    or isinstance(node, ast.FunctionDef) and node.returns is not None
                    for node in ast.walk(tree))
    future = any(isinstance(node, ast.ImportFrom) and node.module == '__future__'
                 and any(alias.name == 'annotations' for alias in node.names)
                 for node in tree.body)
    assert future or not annotated
