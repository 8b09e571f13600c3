"""Every external file the workflow may download, declared once: where it is, at which revision, and how
a download is verified. The download rules fetch exactly these (nanochat.scripts.download); nothing else
touches the network.

Hub datasets are pinned to a commit; each file is checked against the size and LFS sha256 the hub
reports for that commit, and parquet files must open. Plain URLs are checked against their sha256.
A `None` revision or sha256 means no pin is known yet (no network where this was written): the
download then takes the hub's `main` or the URL as served, says so in its log, and logs the commit
and sha256 it got, so that the pin can be filled in here.

A leaf module: the Snakefile imports it.
"""

import dataclasses
import functools
import os
import socket
import urllib.parse
from typing import Literal


@dataclasses.dataclass(frozen=True)
class HubFiles:
    """Files of a Hugging Face dataset repo at one commit."""
    repo: str  # owner/name of the dataset repo
    revision: str | None  # 40-hex commit sha; None: not pinned (the hub's main)
    patterns: tuple[str, ...]  # files to fetch (glob patterns, or "{index:05d}" for one shard per job)
    source: str  # where the revision comes from

    def describe(self) -> str:
        return f"hf://datasets/{self.repo}@{self.revision or 'main (not pinned)'}"


@dataclasses.dataclass(frozen=True)
class UrlFile:
    """A plain HTTPS file: the CORE eval bundle (a zip, unpacked into a folder), JSON-lines conversations, or a
    word list (one lowercase word per line)."""
    url: str
    sha256: str | None  # None: not pinned (no checksum known)
    kind: Literal["eval_bundle", "conversations", "word_list"]  # what the content must be (checked after the checksum)
    source: str  # where the checksum comes from

    def describe(self) -> str:
        return f"{self.url} (sha256 {self.sha256 or 'not pinned'})"


ARC = "210d026faf9955653af8916fad021475a3f00453"  # pinned by huggingface/smollm's lighteval tasks
MMLU = "c30699e8356da336a370243923dbaf21066bb9fe"  # pinned by huggingface/smollm's lighteval tasks
GSM8K = "740312add88f781978c0658806c59bc2815b9866"  # pinned in inspect_evals-style task tables (2026)
HUMANEVAL = "7dce6050a7d6d172f3cc5c32aa97f52fa1a2e544"  # test parquet of 83,920 bytes at this commit
SMOLTALK = "f73fe857d519ff6ac5af2ea67c4d3834da7b8bcc"  # the only revision public projects pin
WORDS = "3ab32c717e5b04f047d73b37813d4035cc7da1ec"  # a dwyl/english-words commit holding words_alpha.txt
PINS = "public code that pins it (no network here to check)"

CATALOG: dict[str, HubFiles | UrlFile] = {
    # Pretraining text: one job per shard, so an interrupted download reruns only what is missing.
    "fineweb_edu": HubFiles("karpathy/fineweb-edu-100b-shuffle", None, ("shard_{index:05d}.parquet",),
                            "no public pin found"),
    # The 2026 recipe's (upstream 92d63d4): NVIDIA ClimbMix, shuffled into 6,543 shards; shard 6542 is validation.
    "climbmix": HubFiles("karpathy/climbmix-400b-shuffle", None, ("shard_{index:05d}.parquet",),
                         "no public pin found (upstream reads main)"),
    # Chat evaluation: the test splits.
    "arc_easy_test": HubFiles("allenai/ai2_arc", ARC, ("ARC-Easy/test-*.parquet",), PINS),
    "arc_challenge_test": HubFiles("allenai/ai2_arc", ARC, ("ARC-Challenge/test-*.parquet",), PINS),
    "mmlu_test": HubFiles("cais/mmlu", MMLU, ("all/test-*.parquet",), PINS),
    "gsm8k_test": HubFiles("openai/gsm8k", GSM8K, ("main/test-*.parquet",), PINS),
    "humaneval_test": HubFiles("openai/openai_humaneval", HUMANEVAL, ("openai_humaneval/test-*.parquet",), PINS),
    # Chat training mixtures (hub) and RL's questions (gsm8k_train).
    "smoltalk": HubFiles("HuggingFaceTB/smol-smoltalk", SMOLTALK, ("*train-*.parquet",), PINS),
    "smoltalk_test": HubFiles("HuggingFaceTB/smol-smoltalk", SMOLTALK, ("*test-*.parquet",), PINS),  # 2026 SFT
    "mmlu_aux": HubFiles("cais/mmlu", MMLU, ("auxiliary_train/*.parquet",), PINS),
    "gsm8k_train": HubFiles("openai/gsm8k", GSM8K, ("main/train-*.parquet",), PINS),
    "arc_easy_train": HubFiles("allenai/ai2_arc", ARC, ("ARC-Easy/train-*.parquet",), PINS),
    "arc_challenge_train": HubFiles("allenai/ai2_arc", ARC, ("ARC-Challenge/train-*.parquet",), PINS),
    # CORE's DCLM eval bundle, upstream's identity conversations, and the spelling tasks' words (upstream's
    # list, which it reads from the repo's moving master branch; here at a commit).
    "eval_bundle": UrlFile("https://karpathy-public.s3.us-west-2.amazonaws.com/eval_bundle.zip",
                           "90a7c19e28ee7a52b4f6e1f87658deb9fde7f63deba2379045bdb1fe9ea5d200", "eval_bundle",
                           "the same sha256 in five public projects"),
    "identity": UrlFile("https://karpathy-public.s3.us-west-2.amazonaws.com/identity_conversations.jsonl", None,
                        "conversations", "no public checksum found"),
    "words_alpha": UrlFile(f"https://raw.githubusercontent.com/dwyl/english-words/{WORDS}/words_alpha.txt", None,
                           "word_list", "commit from the public code index; no public checksum found"),
}
# The tasks of the pinned eval bundle's core.yaml, in its order, with their number of items (public
# per-task counts of the same bundle): one base_eval job each; base_eval stops if the bundle differs.
CORE_TASKS = {"hellaswag_zeroshot": 10042, "jeopardy": 2117, "bigbench_qa_wikidata": 20321, "arc_easy": 2376,
              "arc_challenge": 1172, "copa": 100, "commonsense_qa": 1221, "piqa": 1834, "openbook_qa": 500,
              "lambada_openai": 5153, "hellaswag": 10042, "winograd": 273, "winogrande": 1267,
              "bigbench_dyck_languages": 1000, "agi_eval_lsat_ar": 230, "bigbench_cs_algorithms": 1320,
              "bigbench_operators": 210, "bigbench_repeat_copy_logic": 32, "squad": 10570, "coqa": 7983,
              "boolq": 3270, "bigbench_language_identification": 10000}
# Which stage reads which entries: the Snakefile declares them as inputs from here.
CHAT_EVAL_TEST_SETS = {"arc_easy": "arc_easy_test", "arc_challenge": "arc_challenge_test", "mmlu": "mmlu_test",
                       "gsm8k": "gsm8k_test", "humaneval": "humaneval_test"}  # chat task -> its test split
MIXTURES = {"mid_train": ["smoltalk", "mmlu_aux", "gsm8k_train"],
            "chat_sft": ["arc_easy_train", "arc_challenge_train", "gsm8k_train", "smoltalk"],
            # the 2026 recipe's SFT (upstream 92d63d4): its training datasets and its validation splits
            "chat_sft_2026": ["smoltalk", "mmlu_aux", "gsm8k_train", "smoltalk_test", "mmlu_test", "gsm8k_test"]}
# The course recipe's mixtures also hold upstream's identity conversations and spelling words; the 2026 one not.
COURSE_EXTRAS = ["identity", "words_alpha"]
MIXTURE_EXTRAS = {"mid_train": COURSE_EXTRAS, "chat_sft": COURSE_EXTRAS, "chat_sft_2026": []}


def mixture_entries(mixture: str) -> list[str]:
    """Every entry a chat mixture (a key of MIXTURES) reads: its datasets and its extras."""
    return [*MIXTURES[mixture], *MIXTURE_EXTRAS[mixture]]


def source_url(entry: HubFiles | UrlFile) -> str:
    """Where a download comes from: the hub ($HF_ENDPOINT) or the URL ($NANOCHAT_DOWNLOAD_MIRROR)."""
    if isinstance(entry, HubFiles):
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    mirror = os.environ.get("NANOCHAT_DOWNLOAD_MIRROR")
    return f"{mirror.rstrip('/')}/{entry.url.rsplit('/', 1)[1]}" if mirror else entry.url


def reachable(url: str) -> bool:
    """Whether this machine can open a connection to the URL's server (a GPU node without internet cannot)."""
    parts = urllib.parse.urlsplit(url)
    return server_reachable(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))


@functools.cache  # many downloads share a server: ask once, wait at most once
def server_reachable(host: str, port: int, timeout: float = 5.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
