"""A reward of your own for GRPO, for math word problems whose answer is a number (a grade-school
math set's `answer_only`): 1 when the last number in the reply equals the answer, else 0.

    grpo: {rewards: [config/rewards/numeric_answer.py:numeric_answer, chat_format], reward_weights: [1.0, 0.5]}

A reward is called as FUNCTION(replies, ended, **record) and returns one float per reply
(workflow_scripts/lib/training/rewards.py says what each argument holds).
"""
import re
import unicodedata

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def last_number(text):
    numbers = NUMBER.findall(unicodedata.normalize("NFKC", text).replace(",", ""))
    return float(numbers[-1]) if numbers else None


def numeric_answer(replies, ended, answer, **record):
    return [float(last_number(reply) is not None and last_number(reply) == float(right))
            for reply, right in zip(replies, answer)]
