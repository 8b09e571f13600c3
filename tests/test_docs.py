"""The documentation is executable: every command a tutorial or how-to page tells the reader to run is run.

Code blocks in docs/tutorials/*.md and docs/how-to/*.md follow the convention stated in
docs/index.md, by their info string:

  bash          run, in page order, by one `bash -e` per page, in a throwaway copy of the repository
  bash server   a server: started in the background, its /health polled, then stopped
  bash cluster  cluster only, not run; every `snakemake` command in it is dry-run (`-n`) instead
  bash long     takes longer than a test can (hours on a CPU): its `snakemake` commands are dry-run
  text, yaml    output and file contents: never run

The pages run in one copy (the files `git ls-files` lists, untracked ones included), one after
the other: the quickstart tutorial first (it runs the tiny pipeline once, about 2 minutes on 2
cores), then the other pages, which read its results. Explicit substitutions, and nothing else:

  * environment setup (`python3 -m venv ...`, `pip install ...`) is not run: the copy's `.venv` is a
    link to the virtual environment running pytest, which .ci/run built with the README's command.
    Each skipped line must appear verbatim in README.md, so what the docs say is what CI runs.
  * How-to pages assume an active environment (docs/index.md says so): their script starts with
    `source .venv/bin/activate`. Tutorials start from a fresh shell and activate it themselves.
  * A server block's `--port N` becomes a free port; its command's output goes to a file.

Also tested here: relative links between pages (and README.md) resolve, including #anchors; the
rule-graph images show the workflow's current rules; the CLI reference lists every entry point;
the profiles reference covers every profile setting. The configuration reference is compared with
its generator in tests/test_settings.py.
"""

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import REPO

DOCS = REPO / "docs"
# Run order: the quickstart produces the run every later page reads; setup first among the how-tos.
RUN_PAGES = [
    "tutorials/01-local-cpu-quickstart.md",
    "tutorials/02-hpc-first-job.md",
    "how-to/setup-environment.md",
    "how-to/run-a-training-job.md",
    "how-to/resume-after-a-failure.md",
    "how-to/analyze-results.md",
    "how-to/export-to-transformers.md",
    "how-to/troubleshoot-common-issues.md",
    "how-to/train-the-2026-recipe.md",
]
# Pages outside tutorials/ and how-to/ may show cluster or long commands, never commands to run here.
OTHER_PAGES = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if str(p.relative_to(DOCS)) not in RUN_PAGES)
MARKERS = {"bash": "run", "bash server": "server", "bash cluster": "dry-run", "bash long": "dry-run"}
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh"}  # a block in these must carry a known marker
SETUP = re.compile(r"^(python3? -m venv|(\.venv/bin/)?pip3? install)\b")


@dataclass
class Block:
    page: str
    line: int  # of the opening fence
    info: str
    text: str


def blocks(page: str) -> list[Block]:
    """Fenced code blocks of a page (``` or ~~~ fences), with their info strings."""
    found, lines = [], (DOCS / page).read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(```+|~~~+)\s*(.*)$", lines[i])
        if not m:
            i += 1
            continue
        fence, info, start = m.group(2), m.group(3).strip(), i
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        found.append(Block(page, start + 1, info, "\n".join(body)))
        i += 1
    return found


def commands(text: str) -> list[str]:
    """A block's commands: lines joined at trailing backslashes, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def snakemake_commands(command: str) -> list[list[str]]:
    """The `snakemake ...` simple commands in a command line: split at ; & | && ||, redirections cut,
    leading VAR=value assignments kept."""
    command = re.sub(r"\s\d+>(?=[^&])", " >", re.sub(r"\s\d*>&\d+", "", command))  # 2>&1, 2> file
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    found, words, skip = [], [], False
    for token in [*lexer, ";"]:
        if set(token) <= set("();<>|&"):
            if "<" in token or ">" in token:  # a redirection: drop it and its target
                skip = True
                continue
            program = next((w for w in words if not re.match(r"^\w+=", w)), None)
            if program == "snakemake":
                found.append(words)
            words, skip = [], False
        elif skip:
            skip = False
        else:
            words.append(token)
    return found


def setup_lines() -> list[str]:
    return [line for page in RUN_PAGES for b in blocks(page) if b.info == "bash"
            for line in commands(b.text) if SETUP.match(line)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


POLL = """import sys, time, urllib.request
deadline = time.time() + 120
while True:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=5).read().decode()
        print("health:", body)
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("server did not answer /health in 120 s")
        time.sleep(0.5)
"""


def dry_run(words: list[str]) -> str:
    """A snakemake command as a dry run of the project's snakemake, active environment or not."""
    i = words.index("snakemake")
    env = [name + "=" + shlex.quote(value) for name, value in (w.split("=", 1) for w in words[:i])]
    return " ".join([*env, ".venv/bin/snakemake", *map(shlex.quote, words[i + 1:]), "-n"])


def page_script(page: str) -> str:
    """The page's commands as one bash script, each block announced, setup lines skipped."""
    out = ["set -e"]
    if page.startswith("how-to/"):
        out.append("source .venv/bin/activate  # how-to pages assume an active environment (docs/index.md)")
    for b in blocks(page):
        kind = MARKERS.get(b.info)
        if kind is None:
            continue
        out.append(f"echo '::: {page}:{b.line} ({b.info})'")
        if kind == "run":
            for line in b.text.splitlines():
                out.append(f": skipped, environment setup: {shlex.quote(line)}" if SETUP.match(line.strip()) else line)
        elif kind == "server":
            (command,) = commands(b.text)
            port = free_port()
            command = re.sub(r"--port[ =]\d+", f"--port {port}", command)
            assert f"--port {port}" in command, f"{page}:{b.line}: a server block names its --port"
            out += [f"{command} > .docs-server.log 2>&1 &", "server_pid=$!",
                    f"if ! python -c {shlex.quote(POLL)} {port}; then"
                    " cat .docs-server.log; kill $server_pid; exit 1; fi",
                    "kill $server_pid; wait $server_pid || true"]
        else:
            for command in commands(b.text):
                for words in snakemake_commands(command):
                    line = dry_run(words)
                    out.append(f"echo {shlex.quote('::: dry-run: ' + line)}")
                    out.append(f"{line} > .docs-dry-run.log 2>&1 || {{ tail -40 .docs-dry-run.log; exit 1; }}")
    return "\n".join(out) + "\n"


def run_page(repo: Path, page: str, timeout: float) -> subprocess.CompletedProcess:
    script = repo / ".docs-script.sh"
    script.write_text(page_script(page))
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != Path(sys.executable).parent)
    env["HF_HUB_DISABLE_XET"] = "1"
    return subprocess.run(["bash", str(script)], cwd=repo, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def check(result: subprocess.CompletedProcess, page: str) -> None:
    if result.returncode != 0:
        output = result.stdout + result.stderr
        marks = [line for line in output.splitlines() if line.startswith(":::")]
        raise AssertionError(f"{page}: commands failed ({result.returncode}) after {marks[-1:] or 'start'}:\n"
                             f"{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-6000:]}")


@pytest.fixture(scope="module")
def docs_repo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A copy of the repository with the quickstart tutorial's commands run in it."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("the doc commands need pytest to run inside the project's virtual environment")
    repo = tmp_path_factory.mktemp("docs") / "nanochat-flow"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, repo / name)
    (repo / ".venv").symlink_to(sys.prefix)
    return repo, run_page(repo, RUN_PAGES[0], timeout=900)


def test_run_pages_are_every_tutorial_and_how_to():
    assert sorted(RUN_PAGES) == sorted(str(p.relative_to(DOCS)) for d in ("tutorials", "how-to")
                                       for p in (DOCS / d).glob("*.md"))


def test_every_shell_block_is_marked():
    for page in RUN_PAGES + OTHER_PAGES:
        for b in blocks(page):
            if b.info.split(" ")[0] in SHELL_LANGUAGES:
                assert b.info in MARKERS, f"{page}:{b.line}: unknown block marker {b.info!r} (see docs/index.md)"
            if page in OTHER_PAGES:
                assert MARKERS.get(b.info) not in ("run", "server"), \
                    f"{page}:{b.line}: commands to run belong in a tutorial or how-to page, which the test runs"
            if b.info in ("bash cluster", "bash long"):
                for command in commands(b.text):
                    if re.search(r"(^|[;&|]\s*)(\w+=\S+\s+)*snakemake(\s|$)", command):
                        assert snakemake_commands(command), f"{page}:{b.line}: cannot dry-run {command!r}"


def test_skipped_setup_lines_are_the_readmes():
    readme = (REPO / "README.md").read_text()
    lines = setup_lines()
    assert lines, "the quickstart tutorial creates the environment"
    for line in lines:
        assert line in readme, f"setup line not in README.md (so not what CI runs): {line}"


# The doc pages' commands rerun the README's whole pipeline (about 3 minutes, 5 with the pages): slow tests,
# which CI runs after the test command; the fast suite covers the same pipeline at test size (conftest.chat_run).
@pytest.mark.slow
def test_quickstart_tutorial(docs_repo):
    repo, result = docs_repo
    check(result, RUN_PAGES[0])
    assert (repo / ".nanochat" / "report" / "report.md").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("page", RUN_PAGES[1:] + [p for p in OTHER_PAGES
                                                  if any(MARKERS.get(b.info) == "dry-run" for b in blocks(p))])
def test_page_commands(docs_repo, page):
    repo, quickstart = docs_repo
    check(quickstart, RUN_PAGES[0])
    check(run_page(repo, page, timeout=600), page)


# --- links -------------------------------------------------------------------------------------

def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {anchor(m) for m in re.findall(r"^#+\s+(.*)$", text, re.MULTILINE)}


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(path):
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, fragment = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        assert dest.exists(), f"{path.relative_to(REPO)}: broken link {target}"
        if fragment and dest.suffix == ".md":
            assert fragment in anchors(dest), f"{path.relative_to(REPO)}: no heading #{fragment} in {file or path.name}"


# --- generated or checked references -------------------------------------------------------------

def test_rule_graphs_show_the_current_workflow():
    sys.path.insert(0, str(DOCS / "tools"))
    try:
        import rulegraph
    finally:
        sys.path.pop(0)
    shown = rulegraph.blocks(rulegraph.PAGE.read_text())
    for name, args in rulegraph.GRAPHS.items():
        current = rulegraph.block(name, rulegraph.mermaid(args))
        assert shown[name] == current, "stale rule graph: run `python docs/tools/rulegraph.py`"
        assert "chat_eval_task" in current and "tok_train" in current


def entry_points() -> set[str]:
    """Every `python -m nanochat.X` module: those the rules call, plus what users run themselves."""
    rules = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    called = set(re.findall(r"python -m (nanochat[\w.]+\w)", rules))
    called |= set(re.findall(r"nanochat\.launch (nanochat[\w.]+\w)", rules))
    return called | {"nanochat.scripts.chat_cli", "nanochat.scripts.chat_web", "nanochat.configuration"}


def test_cli_reference_lists_every_entry_point():
    reference = (DOCS / "reference" / "cli.md").read_text()
    listed = set(re.findall(r"^## `python -m (nanochat[\w.]+\w)`", reference, re.MULTILINE))
    assert listed == entry_points()
    for module in sorted(listed):
        result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0 or module == "nanochat.launch", f"{module} --help: {result.stderr[-500:]}"
    listing = subprocess.run([Path(sys.executable).parent / "nanochat", "--help"], capture_output=True, text=True)
    commands = re.findall(r"^    (\w+) +\S", listing.stdout.split("positional arguments:")[1], re.MULTILINE)
    assert commands and all(f"| `nanochat {command}` |" in reference for command in commands), commands


def test_profiles_reference_covers_every_setting():
    reference = (DOCS / "reference" / "profiles.md").read_text()
    for profile in sorted((REPO / "profiles").glob("*/config.yaml")):
        settings = yaml.safe_load(profile.read_text())
        keys = set(settings) | set(settings.get("default-resources", {})) | set(settings.get("set-resources", {}))
        for rule in settings.get("set-resources", {}).values():
            keys |= set(rule)
        missing = sorted(k for k in keys if not re.search(rf"`{re.escape(k)}[`:]", reference))
        assert not missing, f"docs/reference/profiles.md does not explain {missing} of {profile.relative_to(REPO)}"
