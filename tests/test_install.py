"""`pip install .` (not editable) into a fresh virtual environment, then stages run from another folder:
the templates they read (report.md.j2, ui.html) must be package data. The new environment gets the
project's dependencies from this one's site-packages (a .pth line: no download), and the project itself
from a copy of the checkout, so nothing can come from the checkout's folder."""

import http.client
import json
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from conftest import REPO
from nanochat.common import DATA_PACKAGES, package_file


def test_the_readmes_environment_has_no_broken_requirements():
    """The README's setup installs evals for its data only, beside the environment: pip finds nothing missing
    (with evals in the environment, every later install printed its absent dependencies)."""
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert package_file("evals", "registry", "data", "quartz", "samples.jsonl").is_relative_to(DATA_PACKAGES)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The fresh environment's bin/ folder, with the project installed from a copy of the checkout."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in filter(None, files.split("\0")):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    venv = root / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True)
    site = Path(subprocess.run([venv / "bin/python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # What `pip install .` does, in two steps: the wheel is built here (this environment has the build
    # backend, a fresh one's bundled setuptools has no bdist_wheel), then installed there.
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(root / "dist"), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = (root / "dist").glob("nanochat_flow-*.whl")
    result = subprocess.run([venv / "bin/python", "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    shutil.rmtree(source)  # what runs now can only be what pip installed
    return venv / "bin"


@pytest.mark.slow
def test_the_package_is_installed_not_linked(installed, tmp_path):
    where = subprocess.run([installed / "python", "-c", "import nanochat.scripts; print(nanochat.scripts.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    assert "site-packages" in where and not where.startswith(str(REPO)), where


@pytest.mark.slow
def test_report_stage_renders_from_another_folder(installed, chat_run, tmp_path):
    base = chat_run / ".nanochat"
    records = [base / name for name in (
        "tokenizer/tok_train.json", "tokenizer/tok_eval.json", "base_checkpoints/base_train.json",
        "eval/base_loss.json", "eval/base_eval.json", "mid_checkpoints/mid_train.json",
        "sft_checkpoints/chat_sft.json", "eval/chat_eval_mid.json", "eval/chat_eval_sft.json")]
    result = subprocess.run([installed / "python", "-m", "nanochat.scripts.report", "--out_dir=report", *records],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    def lines(report: Path) -> list[str]:  # but the commit, which the workflow's run knows from its checkout
        return [line for line in report.read_text().splitlines() if not line.startswith("| git commit |")]

    assert lines(tmp_path / "report/report.md") == lines(base / "report/report.md")
    assert {p.name for p in (tmp_path / "report").iterdir()} == {p.name for p in (base / "report").iterdir()}


@pytest.mark.slow
def test_the_installed_nanochat_command_serves_the_page(installed, chat_run, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([installed / "nanochat", "serve", "--base_dir", str(chat_run / ".nanochat"),
                               "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        while True:  # until the server answers, or has exited
            assert server.poll() is None, server.stdout.read().decode()
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                connection.request("GET", "/")
                page = connection.getresponse().read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert "<html" in page.lower()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        connection.request("GET", "/v1/models")
        assert json.loads(connection.getresponse().read())["data"][0]["id"] == "nanochat-sft"
    finally:
        server.terminate()
        server.wait(timeout=30)
