"""The documentation and the package's shape: the mkdocs site builds strictly (every link, page and docstring
reference resolves), the README stays a landing page whose commands are CI's, versions agree, imports run one way."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import playground_gym

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocstrings", reason="the docs tools (pip install -e '.[docs]', part of .[dev])")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                             "-d", str(tmp_path / "site")], capture_output=True, text=True, timeout=300,
                            env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
    api = (tmp_path / "site" / "api" / "vector_env" / "index.html").read_text()
    assert "make_vec" in api and "PlaygroundVectorEnv" in api  # rendered from the docstrings, not a stub


def test_readme_is_a_landing_page_whose_commands_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    commands = re.findall(r"^python3 -m venv .*$", readme, flags=re.M)[:2]
    assert len(commands) == 2 and "python cleanrl_ppo/ppo_continuous.py" in commands[0]
    ci = (ROOT / ".ci" / "run").read_text()
    # .ci/run runs the second command one step per line; the same steps in the same order
    steps = [s.strip() for s in commands[1].split("&&")]
    ci_lines = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    positions = [ci_lines.index(step) for step in steps]
    assert positions == sorted(positions), (steps, ci_lines)
    for page in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / page).is_file(), page


def test_versions_agree():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    changelog = (ROOT / "CHANGELOG.md").read_text()
    latest = re.search(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", changelog, flags=re.M).group(1)
    assert pyproject["project"]["version"] == playground_gym.__version__ == latest
    assert "playground_gym[docs,menagerie,export,track]" in pyproject["project"]["optional-dependencies"]["dev"]


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The playground_gym modules ``path`` imports anywhere (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("playground_gym"):
            sub = node.module.removeprefix("playground_gym").lstrip(".")
            found |= {sub} if sub else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("playground_gym.") for a in node.names}
    return found & modules


def test_package_imports_run_one_way():
    """No module of the package imports, even lazily, a module that imports it back (directly or through others)."""
    package = ROOT / "playground_gym"
    files = {p.relative_to(package).with_suffix("").as_posix().replace("/", "."): p for p in package.rglob("*.py")
             if p.name != "__init__.py"}
    graph = {name: _imports(path, set(files)) - {name} for name, path in files.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> list[str] | None:
        for nxt in sorted(graph[start]):
            if nxt == goal:
                return [nxt]
            if nxt not in seen:
                seen.add(nxt)
                path = reaches(nxt, goal, seen)
                if path:
                    return [nxt, *path]
        return None

    circles = {name: [name, *path] for name in graph if (path := reaches(name, name, set()))}
    assert not circles, circles
    assert "cpu_blas" not in files  # a CPU benchmarking tool (tools/mkl_shim.py), not part of the library
