"""The layout the README promises: its Architecture table matches the tree, no module is over
400 lines, and no module-level import runs in a circle."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("supervisor", "handlers")
MAX_LINES = 400


def modules() -> list[Path]:
    return sorted(p for top in PACKAGES for p in (REPO / top).rglob("*.py"))


def architecture_rows() -> dict[str, set[str]]:
    """README table rows: path -> the backticked module names in its concern cell."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| `([^`]+)` \| (.*) \|$", line)
        if match:
            rows[match.group(1)] = set(re.findall(r"`([a-z_]+)/?`", match.group(2)))
    return rows


def test_the_readme_architecture_table_names_every_module_and_nothing_else():
    rows = architecture_rows()
    described: set[str] = set()
    for path, names in rows.items():
        target = REPO / path
        assert target.exists(), f"README names {path}, which does not exist"
        if target.is_dir():
            inside = {
                p.stem if p.is_file() else p.name
                for p in target.iterdir()
                if (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))
                or (p.is_dir() and (p / "__init__.py").exists())
            }
            assert inside <= names, f"{path}: the README does not mention {sorted(inside - names)}"
            described |= {str(p.relative_to(REPO)) for p in target.rglob("*.py")}
        else:
            described.add(path)
    missing = [
        str(p.relative_to(REPO)) for p in modules() if str(p.relative_to(REPO)) not in described
    ]
    assert missing == [], f"modules the README's Architecture table does not cover: {missing}"


def test_no_module_is_over_400_lines():
    long = {
        str(p.relative_to(REPO)): n
        for p in modules()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def top_level_imports(path: Path, known: set[str]) -> set[str]:
    """Our modules imported when this one is (not those inside functions or TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def test_no_import_cycle_at_run_time():
    paths = {module_name(p): p for p in modules()}
    graph = {name: top_level_imports(path, set(paths)) - {name} for name, path in paths.items()}
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            cycles.append([*trail[trail.index(name) :], name])
            return
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert cycles == []
