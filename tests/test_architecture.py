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
# The command line parses, answers --help and reports argument errors before it loads the library
# (JAX): cli.main imports the module that runs a job only once the arguments are good.
DEFERRED_IMPORTS = {("cli.py", "scoresde_jax.runner"), ("cli.py", "scoresde_jax.config_files")}


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
                    names = {a.name for a in node.names}
                elif isinstance(node, ast.ImportFrom):
                    names = {f"{node.module}.{a.name}" for a in node.names}
                else:
                    continue
                names = {n for n in names if (f.relative_to(PACKAGE).as_posix(), n)
                         not in DEFERRED_IMPORTS}
                if {n.split(".")[0] for n in names} - LAZY_IMPORTS:
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


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(f): f for f in FILES}


def _top_level_imports(f: pathlib.Path):
    """``(module imported, names taken from it, line)`` of the module-level imports of ``f``
    (a ``from pkg import sub`` of a submodule counts as an import of ``pkg.sub``)."""
    tree = ast.parse(f.read_text())
    me = _module_name(f)
    package = me if f.name == "__init__.py" else me.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, (), node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in MODULES:
                    yield sub, (), node.lineno
                else:
                    yield base, (a.name,), node.lineno


def test_no_module_getattr_anywhere():
    """Names live in one module; nothing is re-exported by a module-level ``__getattr__``."""
    bad = [_rel(f) for f in FILES
           if any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__"
                  for n in ast.parse(f.read_text()).body)]
    assert not bad, f"remove the module __getattr__ of {bad}"


def test_no_private_name_is_imported_from_another_module():
    bad = []
    for f in FILES:
        for module, names, line in _top_level_imports(f):
            if module.startswith("scoresde_jax"):
                bad += [f"{_rel(f)}:{line} {module}.{n}" for n in names
                        if n.startswith("_") and not n.endswith("__")]
    assert not bad, f"make these public (a module of shared helpers) or keep them local: {bad}"


def test_no_import_cycle_between_library_modules():
    graph = {m: {i for i, _, _ in _top_level_imports(f) if i in MODULES and i != m}
             for m, f in MODULES.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_jobs_never_read_a_config():
    """A job takes built values (a Setup, its options, a workdir): ``scoresde_jax.jobs`` does not
    import the config package; the config boundary builds the options."""
    bad = [f"{_rel(f)}:{line}" for m, f in MODULES.items() if m.startswith("scoresde_jax.jobs")
           for module, _, line in _top_level_imports(f)
           if module == "scoresde_jax.config" or module.startswith("scoresde_jax.config.")]
    assert not bad, bad


def test_one_command_line():
    """``scoresde`` (scoresde_jax.cli) is the only entry point of the library; every job of
    scoresde_jax.jobs.JOBS declares its own arguments (jobs.arguments.ARGUMENTS) and exists."""
    from scoresde_jax.jobs import JOBS
    from scoresde_jax.jobs.arguments import ARGUMENTS

    mains = []
    for f in FILES:
        text = f.read_text()
        if f.name != "cli.py" and ("ArgumentParser(" in text or "__main__" in text):
            mains.append(_rel(f))
    assert not mains, f"parsers / __main__ outside scoresde_jax/cli.py: {mains}"
    assert list(ARGUMENTS) == list(JOBS)
    for name, (module, function, _) in JOBS.items():
        assert callable(getattr(importlib.import_module(module), function)), name
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
    assert pyproject.count('= "scoresde_jax.') == 1 and 'scoresde = "scoresde_jax.cli:main"' in pyproject
    assert not (PACKAGE.parent / "experiments" / "main.py").exists()
