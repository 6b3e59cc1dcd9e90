"""Run the Python examples in docs/*.md, so that the documentation cannot rot.

Rules (for whoever writes docs):

* Every fenced block whose info string starts with ``python`` (or ``py``) is executed. The
  blocks of one file run in order, in one fresh namespace (a file is one tutorial), and each
  file is one test whose id is the file name. Other fences (```text, ```bash, ...) are ignored.
* A block fenced as ```python no-run is shown to the reader but not executed (for snippets that
  need a GPU, a dataset, or that illustrate an error at import time).
* A top-level ``print(...)`` statement shows its output in a comment: trailing on its last line,
  e.g. ``print(y)  # tensor(28.)``, or on the comment lines right below it (for long messages),
  and must print what the comment says. Runs of whitespace count as one space, and ``...`` in
  the comment matches any text (to abbreviate long messages). A print with a comment inside an
  ``if``/``try``/loop/function cannot be checked, so it is refused: print at the top level.
* A ``try`` with ``except`` needs an ``else: raise AssertionError(...)``: without it the example
  passes when nothing raises.
* Blocks should ``assert`` their results: the asserts are what makes a doc a test.
* A failure names the file and the line where the failing block starts; tracebacks point at the
  real line of the .md file.
* docs/ must contain at least one .md file with a runnable python block; .md files without
  any (e.g. prose-only architecture notes) are allowed and simply not collected.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import sys
import tokenize
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

DOCS_DIR = Path(__file__).resolve().parents[1] / "docs"
PYTHON_LANGS = {"python", "py", "python3"}
NO_RUN = "no-run"

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>.*?)\s*$")


@dataclass
class Block:
    """One fenced python block of a markdown file."""

    path: Path
    fence_line: int     # 1-based line of the opening fence
    code: str
    run: bool

    @property
    def where(self) -> str:
        return f"{self.path.name}, python block starting at line {self.fence_line}"


def extract_blocks(path: Path) -> list[Block]:
    """The python blocks of ``path`` in order (no-run blocks included, flagged ``run=False``)."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m or (m["fence"][0] == "`" and "`" in m["info"]):
            i += 1
            continue
        fence, indent = m["fence"], len(m["indent"])
        words = m["info"].split()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines):
            close = _FENCE.match(lines[i])
            if close and close["fence"][0] == fence[0] and len(close["fence"]) >= len(fence) \
                    and not close["info"]:
                break
            line = lines[i]
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))):])
            i += 1
        else:
            raise ValueError(f"{path.name}: the fence opened at line {start + 1} is never closed")
        i += 1
        if words and words[0].lower() in PYTHON_LANGS:
            blocks.append(Block(path, start + 1, "\n".join(body) + "\n", NO_RUN not in words[1:]))
    return blocks


def _comments(source: str) -> tuple[dict[int, str], set[int]]:
    """Every comment by line number, and the lines that hold nothing but a comment."""
    comments: dict[int, str] = {}
    alone: set[int] = set()
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string[1:].strip()
            if not lines[tok.start[0] - 1][:tok.start[1]].strip():
                alone.add(tok.start[0])
    return comments, alone


def _expected_output(stmt: ast.stmt, comments: dict[int, str], alone: set[int]) -> str | None:
    """What a print statement's comments say it prints: its trailing comment, else the comment
    lines directly below it; None if it has neither."""
    last = stmt.end_lineno or stmt.lineno
    if last in comments and last not in alone:
        return comments[last]
    below = []
    while last + 1 + len(below) in alone:
        below.append(comments[last + 1 + len(below)])
    return " ".join(below) if below else None


def _unchecked(tree: ast.Module, comments: dict[int, str], alone: set[int]) -> str | None:
    """Why the block cannot be checked as written (a nested print with an output, a try without
    else), or None."""
    for stmt in tree.body:
        for node in ast.walk(stmt):
            if node is not stmt and _is_print(node) and _expected_output(node, comments, alone) is not None:
                return (f"the print at line {node.lineno} shows an output but is nested in a statement, "
                        "where it cannot be checked; print at the top level")
            if isinstance(node, ast.Try) and node.handlers and not node.orelse \
                    and not isinstance(node.body[-1], ast.Raise):
                return (f"the try at line {node.lineno} has no else: it passes when nothing raises; add "
                        "`else: raise AssertionError(...)`")
    return None


def _output_matches(printed: str, expected: str) -> bool:
    printed, expected = " ".join(printed.split()), " ".join(expected.split())
    pattern = ".*".join(re.escape(part.strip()) for part in expected.split("..."))
    return re.fullmatch(pattern, printed, flags=re.DOTALL) is not None if "..." in expected \
        else printed == expected


def _is_print(stmt: ast.AST) -> bool:
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
            and isinstance(stmt.value.func, ast.Name) and stmt.value.func.id == "print")


def run_block(block: Block, namespace: dict) -> None:
    """Execute ``block`` in ``namespace``; raise AssertionError naming the file and line on failure."""
    # pad with blank lines so line numbers (in tracebacks, linecache, the ast) are the .md file's
    source = "\n" * block.fence_line + block.code
    filename = str(block.path)
    try:
        tree = ast.parse(source, filename=filename)
        comments, alone = _comments(source)
    except SyntaxError as exc:
        raise AssertionError(f"{block.where}: syntax error at line {exc.lineno}: {exc.msg}") from None
    problem = _unchecked(tree, comments, alone)
    if problem:
        raise AssertionError(f"{block.where}: {problem}")
    for stmt in tree.body:
        code = compile(ast.Module(body=[stmt], type_ignores=[]), filename, "exec")
        expected = _expected_output(stmt, comments, alone) if _is_print(stmt) else None
        buffer = io.StringIO()
        try:
            if expected is None:
                exec(code, namespace)
            else:
                with contextlib.redirect_stdout(buffer):
                    exec(code, namespace)
        except Exception as exc:  # noqa: BLE001 - any failure of a doc example is reported
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            raise AssertionError(f"{block.where}: {type(exc).__name__}: {exc}\n\n{tb}") from None
        if expected is not None:
            sys.stdout.write(buffer.getvalue())
            if not _output_matches(buffer.getvalue(), expected):
                raise AssertionError(
                    f"{block.where}: the print at line {stmt.lineno} printed\n    "
                    f"{buffer.getvalue().rstrip()!s}\nbut its comment says\n    {expected}")


def run_file(path: Path) -> int:
    """Run every runnable python block of ``path`` in one fresh namespace; returns how many ran."""
    namespace: dict = {"__name__": f"docs_{path.stem}"}
    ran = 0
    for block in extract_blocks(path):
        if block.run:
            run_block(block, namespace)
            ran += 1
    return ran


def _doc_files() -> list[Path]:
    if not DOCS_DIR.is_dir():
        return []
    return [p for p in sorted(DOCS_DIR.glob("*.md")) if _has_runnable_block(p)]


def _has_runnable_block(path: Path) -> bool:
    try:
        return any(b.run for b in extract_blocks(path))
    except ValueError:   # collect it anyway: its test reports the malformed fence
        return True


_DOC_FILES = _doc_files()


@pytest.mark.parametrize(
    "path", _DOC_FILES or [pytest.param(None, id="no-docs-with-python")],
    ids=[p.name for p in _DOC_FILES] or None)
def test_doc_examples_run(path: Path | None) -> None:
    """Every python block of the file runs, in order, in one namespace, and its checks pass."""
    if path is None:
        pytest.fail(f"no .md file in {DOCS_DIR} has a runnable ```python block; the docs are untested")
    failure = None
    try:
        ran = run_file(path)
    except (AssertionError, ValueError) as exc:   # ValueError: a malformed fence
        failure = str(exc)
    if failure is not None:
        pytest.fail(failure, pytrace=False)   # outside the except: no chained duplicate in the report
    assert ran > 0


# ----------------------------------------------------------------------------- the runner itself

def test_extract_blocks_finds_python_and_skips_others(tmp_path: Path) -> None:
    md = tmp_path / "a.md"
    md.write_text("text\n```python\nx = 1\n```\n```bash\nls\n```\n"
                  "```python no-run\nboom()\n```\n  ```py\n  y = x + 1\n  ```\n", encoding="utf-8")
    blocks = extract_blocks(md)
    assert [(b.fence_line, b.code, b.run) for b in blocks] == [
        (2, "x = 1\n", True), (8, "boom()\n", False), (11, "y = x + 1\n", True)]
    assert run_file(md) == 2


def test_failure_names_file_and_block_line(tmp_path: Path) -> None:
    md = tmp_path / "broken.md"
    md.write_text("# t\n\n```python\nx = 1\n```\n\n```python\nassert x == 2\n```\n", encoding="utf-8")
    with pytest.raises(AssertionError, match=r"broken\.md, python block starting at line 7") as info:
        run_file(md)
    assert 'broken.md", line 8' in str(info.value)   # the traceback points at the .md line


def test_print_comments_are_checked(tmp_path: Path) -> None:
    md = tmp_path / "p.md"
    md.write_text("```python\nprint(1 + 1)  # 2\nprint('a long message')  # a ... message\n```\n",
                  encoding="utf-8")
    assert run_file(md) == 1
    md.write_text("```python\nprint(1 + 1)  # 3\n```\n", encoding="utf-8")
    with pytest.raises(AssertionError, match=r"p\.md, python block starting at line 1: the print at line 2"):
        run_file(md)


def test_unclosed_fence_is_an_error(tmp_path: Path) -> None:
    md = tmp_path / "u.md"
    md.write_text("```python\nx = 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="never closed"):
        extract_blocks(md)
