"""fineweb-edu shard downloads through the real huggingface_hub client, against a local hub on 127.0.0.1."""

import os
import signal
import time

import pytest

from conftest import snakemake
from hub_server import HubServer
from nanochat.catalog import CATALOG
from nanochat.dataset import build_offline_shard
from nanochat.layout import shard_name

REPO_ID = CATALOG["fineweb_edu"].repo
NUM_SHARDS = 3
CONFIG = ["--config", f"base_data={{source: fineweb-edu, num_shards: {NUM_SHARDS}}}",
          "tok_train={vocab_size: 300}", "chat_eval={source: offline}"]


@pytest.fixture
def hub(tmp_path):
    served = tmp_path / "served"
    (served / REPO_ID).mkdir(parents=True)
    for i in range(NUM_SHARDS):
        build_offline_shard(i, NUM_SHARDS, served / REPO_ID / shard_name(i))
    with HubServer(served) as server:
        yield server


def run(workdir, hub, *targets, **kwargs):
    # A stalled download waits for the test, not for the client's 10-second read timeout (which would
    # retry it behind the test's back on a slow machine).
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(workdir / "hf-home"), "HF_HUB_DOWNLOAD_TIMEOUT": "600"}
    return snakemake(workdir, *targets, *CONFIG, env=env, **kwargs)


def shard_path(workdir, i):
    return workdir / ".nanochat" / "base_data" / "fineweb-edu" / shard_name(i)


def test_clean_download_then_compute_stays_offline(tmp_path, hub):
    workdir = tmp_path / "wd"
    downloads = run(workdir, hub, "download")
    for i in range(NUM_SHARDS):
        assert shard_path(workdir, i).read_bytes() == (hub.root / REPO_ID / shard_name(i)).read_bytes()
        # Shown live in the terminal (Snakemake's stdout) and kept in the shard's log.
        log = (workdir / ".nanochat/logs/download_shard/fineweb-edu" / f"shard_{i:05d}.log").read_text()
        for line in (f"download: {REPO_ID}/{shard_name(i)}: downloading (", "MB/s)"):
            assert line in downloads.stdout and line.split("download: ")[-1] in log, line
    assert sorted(hub.gets()) == [shard_name(i) for i in range(NUM_SHARDS)]

    requests_after_download = list(hub.requests)
    run(workdir, hub, "tok_eval")  # tokenizer training and evaluation on the downloaded shards
    assert (workdir / ".nanochat" / "tokenizer" / "tok_eval.json").is_file()
    assert hub.requests == requests_after_download, "a compute rule contacted the hub"


def test_corrupt_shard_is_rejected_and_downloaded_again(tmp_path, hub):
    workdir = tmp_path / "wd"
    hub.faults[shard_name(1)] = ["corrupt"]
    run(workdir, hub, "download")
    assert shard_path(workdir, 1).read_bytes() == (hub.root / REPO_ID / shard_name(1)).read_bytes()
    assert hub.gets().count(shard_name(1)) == 2
    log = (workdir / ".nanochat" / "logs" / "download_shard" / "fineweb-edu" / "shard_00001.log").read_text()
    assert "rejected: unreadable parquet footer" in log


def test_interrupted_download_reruns_only_that_shard(tmp_path, hub):
    workdir = tmp_path / "wd"
    hub.faults[shard_name(2)] = ["stall"]
    proc = run(workdir, hub, "download", wait=False)
    deadline = time.time() + 600  # a hang guard only: the test waits for states, whatever the machine's load

    def finished_downloads() -> int:
        return (workdir / "snakemake.out").read_text().count("(Rule: download_shard)")

    # Ctrl-C while shard 2's download is held open and the other two are done.
    while not (hub.stalling.is_set() and finished_downloads() == 2):
        assert proc.poll() is None and time.time() < deadline, "download did not reach the stalled shard"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not shard_path(workdir, 2).exists(), "a partial shard was left under its final name"

    hub.release()
    hub.requests.clear()
    kept = [shard_path(workdir, i).stat().st_mtime_ns for i in (0, 1)]
    run(workdir, hub, "download")
    assert hub.gets() == [shard_name(2)]
    assert [shard_path(workdir, i).stat().st_mtime_ns for i in (0, 1)] == kept
    assert shard_path(workdir, 2).read_bytes() == (hub.root / REPO_ID / shard_name(2)).read_bytes()
