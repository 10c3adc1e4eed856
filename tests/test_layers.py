"""The package's layering (docs/architecture.md), read from every module's imports with ``ast``
(imports inside functions count too): no import cycle, and no module imports one from a floor
above its own."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "framepack_trt"

#: Floors, low to high; a module may import from its own floor and the floors below. A module
#: is on the floor of the longest prefix listed (a package's name covers its modules).
FLOORS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", (
        "framepack_trt", "framepack_trt.errors", "framepack_trt.util", "framepack_trt.platforms",
        "framepack_trt.device", "framepack_trt.shapes", "framepack_trt.memory",
        "framepack_trt.versions", "framepack_trt.graph_passes", "framepack_trt.timing",
        # The transformer's leaf tables (no imports): the cache selects pieces by their names.
        "framepack_trt.transformer.names", "framepack_trt.transformer.tokens")),
    ("storage", ("framepack_trt.cache", "framepack_trt.cache.storage", "framepack_trt.cache.entry")),
    # What ``-c NAME`` selects (names.py) reads entries and the transformer's piece table.
    ("keys and staleness", ("framepack_trt.cache.keys", "framepack_trt.cache.staleness",
                            "framepack_trt.names")),
    # The transformer itself: its class, export-ready forward, pieces, block loop and fp8. It
    # reads neither the cache nor the component registry: the components point into it.
    ("transformer", ("framepack_trt.transformer",)),
    ("backends and components", (
        "framepack_trt.backends", "framepack_trt.components", "framepack_trt.export",
        "framepack_trt.compare", "framepack_trt.sources")),
    ("build, verify, runtime", (
        # An engine's state here: its files (storage) joined with staleness, which needs the
        # backend's version and the component's code fingerprint.
        "framepack_trt.engine_status",
        "framepack_trt.runtime", "framepack_trt.build", "framepack_trt.build_plan",
        "framepack_trt.build_jobs", "framepack_trt.listing", "framepack_trt.purge",
        "framepack_trt.verify", "framepack_trt.bench", "framepack_trt.auto",
        "framepack_trt.profile", "framepack_trt.profile_checks", "framepack_trt.doctor",
        "framepack_trt.framepack", "framepack_trt.framepack_bench",
        "framepack_trt.framepack_run", "framepack_trt.framepack_worker")),
    ("cli", ("framepack_trt.cli", "framepack_trt.cli_options", "framepack_trt.cli_bench",
             "framepack_trt.console", "framepack_trt.__main__")),
]



def module_names() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``path`` imports, wherever in it (``from x import y``: the
    module ``x.y`` where ``y`` is one, else ``x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                      else node.module for a in node.names}
    return {m for m in found if m in modules}


def floor_of(module: str) -> int:
    best, floor = -1, None
    for number, (_, prefixes) in enumerate(FLOORS):
        for prefix in prefixes:
            covers = module == prefix or (prefix != "framepack_trt"
                                          and module.startswith(prefix + "."))
            if covers and len(prefix) > best:
                best, floor = len(prefix), number
    assert floor is not None, f"{module} is on no floor: add it to FLOORS"
    return floor


def graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports(path, modules) - {name} for name, path in modules.items()}


def test_every_module_is_on_a_floor():
    for module in module_names():
        floor_of(module)


def test_no_module_imports_from_a_floor_above():
    upward = [f"{m} ({FLOORS[floor_of(m)][0]}) imports {i} ({FLOORS[floor_of(i)][0]})"
              for m, targets in graph().items() for i in sorted(targets)
              if floor_of(i) > floor_of(m)]
    assert not upward, "\n".join(upward)


def cycles(edges: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.add(tuple(sorted(component)))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    assert cycles(graph()) == set()


def test_the_checks_catch_what_they_look_for():
    """A cycle and an upward import, made up, are found."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {("a", "b", "c")}
    assert floor_of("framepack_trt.transformer.names") < floor_of("framepack_trt.transformer.loop")
    assert floor_of("framepack_trt.runtime.swap") > floor_of("framepack_trt.components.base")
    assert floor_of("framepack_trt.cli") == len(FLOORS) - 1


#: Names the package gives to manifest entries and recorded auto choices (``cache.Entry``,
#: ``cache.Choice``) and to an entry's key fields.
ENTRY_NAMES = {"entry", "e", "fields", "choice", "chosen", "kept"}


def string_key_reads(tree: ast.AST) -> list[ast.AST]:
    """``NAME["..."]`` and ``NAME.get("...")`` (and deeper, ``NAME["a"]["b"]``) where NAME is
    one of ``ENTRY_NAMES``: a read of the manifest's dict form by field name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            base, key = node.value, node.slice.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "get" and node.args
              and isinstance(node.args[0], ast.Constant)):
            base, key = node.func.value, node.args[0].value
        else:
            continue
        while isinstance(base, ast.Subscript):
            base = base.value
        if isinstance(key, str) and isinstance(base, ast.Name) and base.id in ENTRY_NAMES:
            found.append(node)
    return found


def test_no_entry_is_read_by_string_key():
    """Entries and choices are read through their attributes (``cache.entry``,
    ``cache.choices``), which alone know the JSON's field names. By the names the package
    gives them: a YAML profile entry is ``raw``, a JSON row another name."""
    reads = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)}"
             for path in sorted(PACKAGE.rglob("*.py"))
             if path.relative_to(PACKAGE).as_posix() not in ("cache/entry.py", "cache/choices.py")
             for node in string_key_reads(ast.parse(path.read_text()))]
    assert not reads, "\n".join(reads)
    made_up = ast.parse('entry["name"]; e.get("dims"); fields["device"]["type"]; row["name"]')
    assert [ast.unparse(n) for n in string_key_reads(made_up)] == [
        "entry['name']", "e.get('dims')", "fields['device']['type']", "fields['device']"]
