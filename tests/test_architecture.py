"""The layer rule of ARCHITECTURE.md, checked on the source: every import (module level or
inside a function) goes to the same package or to a lower layer, and no module imports a
``_private`` name of another module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import humanclap

PACKAGE = Path(humanclap.__file__).parent
# Lower number = lower layer. A module may import its own package and lower layers only.
LAYERS = {
    "errors": 0,
    "defaults": 0.5,
    "io": 0.5,  # io raises errors' classes
    "outputs": 0.75,  # the output contract: writes through io
    "scoring": 1,
    "data": 1,
    "synth": 1,
    "evaluation": 2,
    "training": 3,  # validates with evaluation's metrics, so it sits just above it
    "recipes": 4,
    "cli": 5,
}


def _room(module: str) -> str:
    """``humanclap.scoring.job`` -> ``scoring``; ``humanclap.io`` -> ``io``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path):
    """(line, imported module, imported names) of every import in a source file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    here = list(rel.parts if rel.name != "__init__" else rel.parts[:-1])
    pkg = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield node.lineno, module, [a.name for a in node.names]


def _sources():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def test_every_room_has_a_layer():
    rooms = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _sources()}
    rooms -= {"__init__"}
    assert rooms <= set(LAYERS), f"new package(s) {rooms - set(LAYERS)}: give them a layer"


def test_imports_go_down_only():
    upward = []
    for path in _sources():
        mine = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if mine == "__init__":  # the lazy public API may name anything
            continue
        for line, module, names in _imports(path):
            if not module.startswith("humanclap"):
                continue
            targets = [module] if module != "humanclap" else [f"humanclap.{n}" for n in names]
            for target in targets:
                room = _room(target)
                if room in ("", "__version__") or room == mine:
                    continue
                if LAYERS[room] >= LAYERS[mine]:
                    upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert not upward, "imports that go up or sideways:\n" + "\n".join(upward)


def test_no_private_names_cross_modules():
    private = []
    for path in _sources():
        for line, module, names in _imports(path):
            if module.startswith("humanclap"):
                private += [
                    f"{path.relative_to(PACKAGE)}:{line} imports {n} from {module}"
                    for n in names
                    if n.startswith("_") and not n.startswith("__")
                ]
    assert not private, "\n".join(private)


def test_public_api_is_lazy_and_not_shadowed():
    code = (
        "import sys, humanclap; from humanclap import DEFAULT_MODEL, __version__; "
        "assert 'torch' not in sys.modules, 'constants import torch'; "
        "import humanclap.training, humanclap.evaluation; "
        "from humanclap import train, fine_tune, evaluate_models; "
        "assert callable(train) and train is fine_tune, train; "
        "assert callable(humanclap.train); "
        "assert set(humanclap.__all__) <= set(dir(humanclap)); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _import_graph(function_level: bool = False) -> dict[str, set[str]]:
    """humanclap module -> the humanclap modules it imports at module level (``from pkg
    import name`` counts as importing ``pkg.name`` when that is a module, else ``pkg``).
    Imports inside functions or ``if TYPE_CHECKING:`` run later or never: not edges, unless
    ``function_level`` (every import is an edge: two modules that need each other)."""
    modules = {_module_name(p): p for p in _sources()}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        top = {n.lineno for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))}
        for line, module, names in _imports(path):
            if (line not in top and not function_level) or not module.startswith("humanclap"):
                continue
            for target in [f"{module}.{n}" for n in names if f"{module}.{n}" in modules] or [module]:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first search (each reported once, from its first module)."""
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_no_module_level_import_cycle():
    """A cycle of module-level imports breaks as soon as one of its modules is imported
    first from elsewhere; packages' ``__init__`` re-exports are part of the graph too."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    cycles = _cycles(_import_graph())
    assert not cycles, "module-level import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_import_cycle_even_inside_functions():
    """Two modules that import each other, even inside a function, are one idea in two
    places (e.g. a summary that both the job and the merge need): it belongs in a third
    module that both import. The layer rule keeps packages apart, so this is within one."""
    graph = {
        m: {t for t in targets if _room(t) and _room(t) == _room(m)}  # the lazy API aside
        for m, targets in _import_graph(function_level=True).items()
    }
    cycles = _cycles(graph)
    assert not cycles, "import cycles (module or function level):\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_old_import_paths_are_the_moved_modules():
    """scoring/aliases.py: code written against the old paths gets the very same modules."""
    import importlib

    from humanclap.scoring.aliases import ALIASES

    for old, new in ALIASES.items():
        assert importlib.import_module(old) is importlib.import_module(new), old
    from humanclap.scoring.device import resolve_device
    from humanclap.scoring.scorer import resolve_device as old_resolve_device

    assert old_resolve_device is resolve_device


def test_help_loads_no_torch():
    """`humanclap --help` and every command's --help answer without torch, transformers or
    matplotlib: imports that would load them stay inside functions (``# lazy: reason``)."""
    code = (
        "import sys, runpy; from humanclap.cli.main import COMMANDS\n"
        "for argv in [[]] + [[c] for c in COMMANDS]:\n"
        "    sys.argv = ['humanclap', *argv, '--help']\n"
        "    try: runpy.run_module('humanclap.cli', run_name='__main__')\n"
        "    except SystemExit: pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules]\n"
        "print('heavy', heavy, file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "heavy []" in out.stderr, out.stderr[-2000:]


def test_every_old_name_is_the_object_it_stands_for():
    """scoring/aliases.py NAMES: the one list of compatibility names."""
    import importlib

    from humanclap.scoring.aliases import NAMES

    def resolve(spec):
        module, attr = spec.split(":")
        return getattr(importlib.import_module(module), attr)

    for old, new in NAMES.items():
        assert resolve(old) is resolve(new), old
