"""2,026 hand-written English dialogs from the `chatterbot-corpus` package: the offline chat mixture."""

import yaml

from nanochat.common import package_file


def conversations() -> list[list[dict]]:
    folder = package_file("chatterbot_corpus", "data", "english", "ai.yml").parent
    out = []
    for path in sorted(folder.glob("*.yml")):
        for dialog in yaml.safe_load(path.read_text())["conversations"]:
            turns = [str(t) for t in dialog][: len(dialog) // 2 * 2]  # end on the assistant's turn
            out.append([{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)])
    return [c for c in out if c]
