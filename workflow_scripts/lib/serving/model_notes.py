"""What the chat page and the terminal chat tell a user about the model they talk to: whether it
chats at all, and questions it has answered right, taken from the fact probe's greedy answers
(results/eval/<model>/knowledge.json beside results/<model>, eval/knowledge.py) where the workflow
wrote them. On the demo those are questions about its invented country: the one thing it knows."""
import json
from pathlib import Path

EXAMPLES = 3


def answered_questions(model_dir: Path, count=EXAMPLES):
    """Up to `count` questions the model answered right in its fact probe, one per relation first;
    [] where no probe ran for it."""
    probe = Path(model_dir).parent / "eval" / Path(model_dir).name / "knowledge.json"
    if not probe.is_file():
        return []
    right = [answer for answer in json.loads(probe.read_text(encoding="utf-8")).get("generated", []) if answer["right"]]
    # Each relation's first question before any second one: the examples show the kinds of fact it knows.
    firsts = {}
    for answer in right:
        firsts.setdefault(answer["relation"], answer)
    ordered = [*firsts.values(), *(answer for answer in right if answer not in firsts.values())]
    return [answer["question"] for answer in ordered[:count]]
