"""The structure holds: import contracts (import-linter), no import cycle, short modules and functions, no task
named outside the tasks, and ruff's checks pass."""

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "attnzoo"
#: the words that name a task
TASK_WORDS = ("g2p", "translate", "caption", "classify", "lm", "qa", "seq2seq")
#: where no task may be named: the floors that loop over the table instead
GENERIC = ("cli", "training", "viz", "bench", "compare.py", "lab.py")


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} is not installed: pip install -e '.[test]'"
    return found


def test_import_contracts_hold():
    r = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "BROKEN" not in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
    assert re.search(r"Contracts: [3-9] kept, 0 broken", r.stdout), r.stdout[-500:]


def _graph():
    import grimp

    return grimp.build_graph("attnzoo")


def test_no_import_cycle_between_modules():
    graph = _graph()
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.chain_exists(imported=module, importer=imported):
                cycles.append(f"{module} -> {imported} -> ... -> {module}")
    assert not cycles, "import cycles:\n" + "\n".join(cycles[:20])


def _python_files():
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_over_500_lines_and_no_function_over_80():
    long_modules = [f"{p.relative_to(ROOT)}: {n}" for p in _python_files()
                    if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500]
    assert not long_modules, long_modules
    long_functions = []
    for p in _python_files():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long_functions.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long_functions, long_functions


def _code_words(path: Path) -> list[tuple[int, str]]:
    """(line, word) of every name and string word in a module, comments and docstrings left out."""
    import io
    import tokenize

    text = path.read_text(encoding="utf-8")
    docstrings = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                docstrings.add(first.lineno)
    words = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT or (tok.type == tokenize.STRING and tok.start[0] in docstrings):
            continue
        if tok.type in (tokenize.NAME, tokenize.STRING) or tok.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
            words += [(tok.start[0], w) for w in re.findall(r"[A-Za-z0-9_]+", tok.string)]
    return words


def test_no_task_named_outside_the_tasks():
    files = [p for g in GENERIC for p in ([PACKAGE / g] if g.endswith(".py") else (PACKAGE / g).rglob("*.py"))]
    assert len(files) > 20
    found = []
    for p in files:
        for line, word in _code_words(p):
            if word in TASK_WORDS:
                found.append(f"{p.relative_to(ROOT)}:{line} {word}")
    assert not found, found


@pytest.mark.parametrize("target", ["attnzoo", "tests"])
def test_ruff_passes(target):
    r = subprocess.run([_tool("ruff"), "check", "--no-cache", target], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-1000:]
