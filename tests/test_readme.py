"""README.md is code: its ```bash and ```python blocks run as written, in the order a reader meets them.

They run in a stand-in for a fresh clone (the repository's top-level entries linked into a temporary
folder) next to a ``../shared`` holding the checkpoint and the keyword clips, as the README assumes,
with this environment's ``kwmlp`` and ``python`` first on PATH and a data folder of their own
(``$KWMLP_HOME``). Python blocks share one namespace, since they build on each other; bash blocks
run with ``bash -e``. A block right after a ``<!-- not run: REASON -->`` line is skipped with that
reason (the quick start's first command, which installs, runs without its setup: :func:`main_job`); ```text and ```console blocks show output and are not run as blocks, but the ``$ kwmlp
classify``, ``$ kwmlp spot`` and ``$ kwmlp info`` examples in them are rerun after the blocks and
must print what the README shows (their output is deterministic; embed's shows timings).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import KEYWORDS_DIR, REPO

README = REPO / "README.md"
RUN_LANGUAGES = ("bash", "python")
FENCE = re.compile(r"^```([\w-]*)\s*$")
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(.+?)\s*-->$")
# made by the README's own commands: never linked from the repository into the stand-in clone
MADE_HERE = {"exports", "recordings", "embeddings", "bench-out", "build", "dist"}
CHECKED_COMMANDS = ("kwmlp classify ", "kwmlp spot ", "kwmlp info ")
# The quick start's first command makes a venv and installs into it: tests/test_quickstart.py runs it
# whole in a fresh clone; here its job (the export and the embedding, after the setup) runs in this
# environment, so that the blocks after it find exports/kwmlp.onnx.
QUICKSTART = "tests/test_quickstart.py"
SETUP = ("python3 -m venv ", ". .venv/bin/activate", "pip install ")


def main_job(code: str) -> str:
    """A one-line ``a && b && c`` command without its venv and install steps."""
    return " && ".join(p for p in code.strip().split(" && ") if not p.strip().startswith(SETUP)) + "\n"


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    not_run: str | None  # the reason given in a <!-- not run: ... --> marker

    @property
    def name(self) -> str:
        return f"README.md:{self.line}-{self.language}"


def blocks(text: str) -> list[Block]:
    """The ```bash and ```python blocks of ``text``, in order, with their not-run markers."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise AssertionError(f"README.md:{i + 1}: a fenced block that never closes")
        marker = NOT_RUN.match(lines[i - 1].strip()) if i else None
        if opening.group(1) in RUN_LANGUAGES:
            found.append(Block(i + 1, opening.group(1), "\n".join(lines[i + 1:end]) + "\n",
                               marker.group(1) if marker else None))
        i = end + 1
    return found


def printed_examples(text: str) -> list[tuple[int, str, str]]:
    """(line, command, what it printed) for each ``$ COMMAND`` of CHECKED_COMMANDS in a ```text block."""
    found, lines, language = [], text.splitlines(), None  # language: of the block we are in, None outside
    for i, line in enumerate(lines):
        fence = FENCE.match(line)
        if fence:
            language = fence.group(1) if language is None else None
            continue
        if language not in ("text", "console") or not line.startswith("$ "):
            continue
        command, j = line[2:], i + 1
        while command.endswith("\\"):
            command, j = command[:-1] + lines[j].strip(), j + 1
        output = []
        while not (lines[j].startswith("$ ") or lines[j].strip() == "```"):
            output.append(lines[j])
            j += 1
        if command.startswith(CHECKED_COMMANDS):
            found.append((i + 1, " ".join(command.split()), "\n".join(output) + "\n"))
    return found


TEXT = README.read_text(encoding="utf-8")
BLOCKS = blocks(TEXT)
EXAMPLES = printed_examples(TEXT)


class Reader:
    """Runs the runnable blocks in order, each once, as a reader going down the README would."""

    def __init__(self, clone: Path, env: dict[str, str]):
        self.clone, self.env = clone, env
        self.namespace: dict = {"__name__": "__readme__"}
        self.done = 0  # index into BLOCKS of the first block not yet run
        self.failed: Block | None = None

    def bash(self, code: str, name: str) -> subprocess.CompletedProcess:
        r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], cwd=self.clone, env=self.env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{name} exited with {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        return r

    def run_through(self, index: int) -> None:
        while self.done <= index:
            block = BLOCKS[self.done]
            if self.failed is not None:
                pytest.fail(f"{self.failed.name} failed before it, and later blocks build on it")
            self.done += 1
            if block.not_run and QUICKSTART in block.not_run:
                self.bash(main_job(block.code), block.name)  # the quick start's own test installs; here: its job
                continue
            if block.not_run:
                continue
            try:
                self._run(block)
            except BaseException:
                self.failed = block
                raise

    def _run(self, block: Block) -> None:
        if block.language == "bash":
            self.bash(block.code, block.name)
            return
        before_cwd, before_env = os.getcwd(), dict(os.environ)
        os.chdir(self.clone)
        os.environ.clear()
        os.environ.update(self.env)
        try:
            exec(compile(block.code, block.name, "exec"), self.namespace)
        finally:
            os.chdir(before_cwd)
            os.environ.clear()
            os.environ.update(before_env)


@pytest.fixture(scope="module")
def reader(checkpoint, tmp_path_factory) -> Reader:
    if not KEYWORDS_DIR.is_dir():
        pytest.skip(f"the keyword clips are not in {KEYWORDS_DIR} (the README's recordings are made from them)")
    root = tmp_path_factory.mktemp("readme")
    (root / "shared" / "models").mkdir(parents=True)
    (root / "shared" / "models" / "kwmlp.pth").symlink_to(os.path.abspath(checkpoint))
    (root / "shared" / "keywords").symlink_to(KEYWORDS_DIR.resolve())
    clone = root / "clone"
    clone.mkdir()
    for entry in REPO.iterdir():
        if not entry.name.startswith(".") and entry.name not in MADE_HERE and not entry.name.endswith(".egg-info"):
            (clone / entry.name).symlink_to(entry)
    env = {k: v for k, v in os.environ.items() if k not in ("KWMLP_CACHE", "KWMLP_HOME")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["KWMLP_HOME"] = str(root / "data")  # kwmlp download writes here, not into the user's ~/.cache
    return Reader(clone, env)


def test_readme_has_blocks_to_run():
    # a parser that finds nothing would make every test below vanish instead of fail
    runnable = [b for b in BLOCKS if not b.not_run]
    assert {b.language for b in runnable} == set(RUN_LANGUAGES)
    assert len(runnable) >= 6, [b.name for b in runnable]


def test_blocks_and_markers_are_read():
    text = ("intro\n<!-- not run: needs a GPU -->\n```bash\nkwmlp build\n```\n\n```text\n$ ls\n```\n"
            "```python\nx = 1\ny = x\n```\n")
    assert blocks(text) == [Block(3, "bash", "kwmlp build\n", "needs a GPU"), Block(10, "python", "x = 1\ny = x\n", None)]


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[b.name for b in BLOCKS])
def test_readme_block_runs(index, reader):
    block = BLOCKS[index]
    if block.not_run:
        pytest.skip(f"{block.name} is not run: {block.not_run}")
    reader.run_through(index)


def test_printed_examples_are_read():
    text = ("```text\n$ kwmlp spot m.onnx a.wav \\\n    --merge\na.wav  yes\n$ kwmlp embed m.onnx x -o y\n"
            "embedded\n```\n```bash\n$ kwmlp spot m.onnx b.wav\n```\n")
    assert printed_examples(text) == [(2, "kwmlp spot m.onnx a.wav --merge", "a.wav  yes\n")]
    assert len(EXAMPLES) >= 8, EXAMPLES  # the classify, spot and info examples of "Using it on audio files"


@pytest.mark.parametrize("line,command,printed", EXAMPLES, ids=[f"README.md:{e[0]}" for e in EXAMPLES])
def test_readme_prints_what_it_shows(line, command, printed, reader):
    reader.run_through(len(BLOCKS) - 1)  # the export and recordings/ the examples run on
    assert reader.bash(command, f"README.md:{line}").stdout == printed


def test_the_quick_starts_job_is_what_is_run_here():
    code = "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && kwmlp export a -o b && python -c 'x'\n"
    assert main_job(code) == "kwmlp export a -o b && python -c 'x'\n"
    first = next(b for b in BLOCKS if b.language == "bash")
    assert QUICKSTART in first.not_run and main_job(first.code).startswith("kwmlp export ")
