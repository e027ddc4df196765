"""The house rules, checked on the source: imports run one way, functions and modules stay short, and the
one table of result-neutral keys is the one the run folder names use."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import CONF, ROOT, make_cfg
from transferlab.identity import FOLDER_NAMING_KEYS, RESULT_NEUTRAL_KEYS, config_hash
from transferlab.naming import run_folder_name

PACKAGE = ROOT / "src" / "transferlab"
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """The package modules ``path`` imports anywhere (top level and inside functions), and its parent packages."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known)
    parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return (found | parents) - {name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``a → b → … → a``, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported_modules(path, name, set(known)) for name, path in known.items()}


def test_no_import_cycle_among_the_package_modules() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle_and_the_graph_is_real() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph = import_graph()
    assert "transferlab.run.assembly" in graph["transferlab.run.lifecycle"]
    assert "transferlab.run.source" in graph["transferlab.run.lifecycle"]
    assert "transferlab.run" in graph["transferlab.run.assembly"]  # its parent package runs first


def test_imports_run_one_way_cli_to_run_to_parts_to_record() -> None:
    graph = import_graph()
    layers = [  # each layer may import only the layers after it
        {"transferlab.train"},
        {"transferlab.run.lifecycle"},
        {"transferlab.run.source"},
        {"transferlab.run.assembly"},
    ]
    below = {"transferlab.record", "transferlab.errors", "transferlab.files", "transferlab.identity"}
    for i, layer in enumerate(layers):
        upper = set().union(*layers[:i]) if i else set()
        for name in layer:
            assert not graph[name] & upper, f"{name} imports {graph[name] & upper}, which sit above it"
    for name in below:
        assert not {m for m in graph[name] if m.startswith(("transferlab.run", "transferlab.train"))}, name


def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


def test_no_function_in_src_is_longer_than_60_lines() -> None:
    long = [entry for path in modules().values() for entry in _long_functions(path)]
    assert not long, "split these functions: " + "; ".join(long)


def test_no_module_in_src_is_longer_than_400_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in modules().values() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"split these modules: {long}"


def test_run_folders_are_named_by_the_one_table_of_left_out_keys() -> None:
    config = OmegaConf.load(CONF / "config.yaml")
    resolver = "${tl.run_folder:${hydra:overrides.task},${hydra:runtime.cwd}}"
    hydra = OmegaConf.to_container(config.hydra, resolve=False)
    assert hydra["sweep"]["subdir"] == resolver and hydra["run"]["dir"].endswith("/" + resolver)
    assert "override_dirname" not in str(OmegaConf.to_yaml(config.hydra)), "a second table of excluded keys"
    for key in {*RESULT_NEUTRAL_KEYS, *FOLDER_NAMING_KEYS}:
        assert run_folder_name([f"{key}=7", "seed=1"], "/x") == "seed=1", key
        assert run_folder_name([f"++{key}=7", "seed=1"], "/x") == "seed=1", key
    assert run_folder_name(["optimizer.lr=0.1", "dataset.batch_size=7"], "/x") == "dataset.batch_size=7,optimizer.lr=0.1"


@pytest.mark.parametrize("key", [k for k in RESULT_NEUTRAL_KEYS if k.count(".") == 1 and not k.startswith(("logger", "paths"))])
def test_a_result_neutral_key_leaves_the_config_hash_alone(tmp_path: Path, key: str) -> None:
    base = make_cfg(tmp_path)
    value = OmegaConf.select(base, key)
    changed = make_cfg(tmp_path, f"++{key}={'true' if isinstance(value, bool) and not value else 7}")
    assert OmegaConf.select(changed, key) != value
    assert config_hash(changed, None) == config_hash(base, None)


def test_any_other_key_changes_the_config_hash(tmp_path: Path) -> None:
    base = config_hash(make_cfg(tmp_path), None)
    assert config_hash(make_cfg(tmp_path, "optimizer.lr=0.123"), None) != base
    assert config_hash(make_cfg(tmp_path, "dataset.batch_size=7"), None) != base
    assert config_hash(make_cfg(tmp_path, "logger=wandb"), None) == base
    assert config_hash(make_cfg(tmp_path), "data-a") != config_hash(make_cfg(tmp_path), "data-b") != base
