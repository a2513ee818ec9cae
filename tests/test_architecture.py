"""The layout rules of the library, checked on its source: short files, imports at the top, no
import of the experiments, and configs read only at the config boundary."""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

from scoresde_jax import config

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "scoresde_jax"
FILES = sorted(PACKAGE.rglob("*.py"))
SECTIONS = {"training", "model", "data", "optim", "sampling", "eval"}
# Optional or heavy dependencies that are imported where they are used, on purpose.
LAZY_IMPORTS = {"torch", "tensorflow", "tensorflow_datasets", "torch_fidelity", "sklearn"}


def _rel(path: pathlib.Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def test_every_library_file_is_at_most_400_lines():
    long = {_rel(f): n for f in FILES if (n := len(f.read_text().splitlines())) > 400}
    assert not long, f"split these files: {long}"


def test_the_library_never_imports_the_experiments():
    bad = []
    for f in FILES:
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{_rel(f)}:{node.lineno}" for n in names if n.split(".")[0] == "experiments"]
    assert not bad


def test_imports_are_at_the_top_of_modules():
    bad = []
    for f in FILES:
        for fn in ast.walk(ast.parse(f.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    roots = {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom):
                    roots = {(node.module or "").split(".")[0]}
                else:
                    continue
                if roots - LAZY_IMPORTS:
                    bad.append(f"{_rel(f)}:{node.lineno} in {fn.name}()")
    assert not bad, f"move these imports to the top of their module: {bad}"


def test_config_sections_are_read_only_at_the_config_boundary():
    boundary = PACKAGE / "config"
    bad = []
    for f in FILES:
        if boundary in f.parents:
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr in SECTIONS
                    and isinstance(node.value, ast.Name) and node.value.id in {"config", "cfg"}):
                bad.append(f"{_rel(f)}:{node.lineno} reads config.{node.attr}")
    assert not bad, f"read configs in scoresde_jax/config/ only: {bad}"
