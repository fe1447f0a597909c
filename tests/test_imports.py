"""The house: cutlib's modules import one another without a circle, counting imports inside functions and
`__main__` blocks too (a function-level import hides a circle from Python, not from a reader)."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "cutlib"


def imports_of(path: Path, modules: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from .x import y / from . import x
                names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
            elif node.module and node.module.split(".")[0] == "cutlib":
                names = [node.module.split(".")[1]] if "." in node.module else [a.name for a in node.names]
            else:
                continue
            found.update(names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("cutlib."))
    return found & modules - {path.stem}


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}

    def visit(node, trail):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                return trail[trail.index(dep):] + [dep]
            if dep not in state and (circle := visit(dep, trail + [dep])):
                return circle
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (circle := visit(node, [node])):
            return circle
    return None


def test_find_circle_finds_one_when_there_is_one():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_cutlib_modules_import_without_a_circle():
    modules = {p.stem for p in PKG.glob("*.py")} - {"__init__"}
    graph = {m: imports_of(PKG / f"{m}.py", modules) for m in modules}
    assert graph["generate"] and graph["cli"]  # the parser sees the imports at all
    assert find_circle(graph) is None, " -> ".join(find_circle(graph))
    assert not graph["config"] & {"nets", "discriminators", "projection", "model"}  # config imports no network code


def test_collectives_are_issued_only_by_cutlib_distributed():
    """Issue 27: a collective issued elsewhere would skip wait_and_keep, and a gloo worker could again be
    left holding a tensor's last reference while the interpreter finalizes (a rank aborts at exit)."""
    calls = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "barrier", "reduce", "gather", "scatter")
    found = []
    for path in PKG.glob("*.py"):
        if path.stem == "distributed":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in calls and "distributed" in ast.unparse(node.value):
                found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    assert not found, found
