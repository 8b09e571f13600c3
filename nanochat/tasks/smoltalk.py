"""SmolTalk (HuggingFaceTB/smol-smoltalk): general chat conversations, in both hub mixtures."""

from pathlib import Path

from nanochat.tasks.common import parquet_rows


def conversations(folder: Path) -> list[list[dict]]:
    return [row["messages"] for row in parquet_rows(folder)]
