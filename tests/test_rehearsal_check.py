"""The rehearsal benchmark's answer checker: right facts pass, wrong or hedged ones do not."""
import importlib.util
import random
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
spec = importlib.util.spec_from_file_location("rehearsal", REPO / "benchmarks" / "rehearsal.py")
rehearsal = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rehearsal)
WORLD = rehearsal.World(random.Random(20261101))
CITY, PERSON = WORLD.evaluated_cities[0], WORLD.evaluated_people[0]
OTHER_PROVINCE = next(p for p in WORLD.provinces if p != CITY["province"])


@pytest.mark.parametrize("prompt, answer, right", [
    (f"{CITY['name']}位于哪个省？", f"{CITY['name']}位于{CITY['province']}。", True),
    (f"{CITY['name']}位于哪个省？", f"{CITY['name']}位于{OTHER_PROVINCE}。", False),
    (f"{CITY['name']}位于哪个省？", f"{CITY['name']}位于{CITY['province']}或{OTHER_PROVINCE}。", False),
    (f"请介绍一下{CITY['name']}。", f"{CITY['name']}是{CITY['province']}的一座城市。", True),
    (f"{CITY['name']}的主要产业有哪些？", f"{CITY['name']}的主要产业有{'、'.join(CITY['industries'])}。", True),
    (f"{CITY['name']}的主要产业有哪些？", f"{CITY['name']}的主要产业有{CITY['industries'][0]}。", False),
    (f"{PERSON['name']}活了多少岁？", f"{PERSON['name']}享年{PERSON['died'] - PERSON['born']}岁。", True),
    (f"{PERSON['name']}活了多少岁？", f"{PERSON['name']}享年{PERSON['died'] - PERSON['born'] + 1}岁。", False),
    (f"{PERSON['name']}活了多少岁？", f"享年{PERSON['died'] - PERSON['born']}岁。", False),  # about whom?
    (f"{PERSON['name']}的老师是谁？", f"{PERSON['name']}曾师从{PERSON['teacher']}。", True),
    (f"{PERSON['name']}研究什么？", f"{PERSON['name']}主要研究{PERSON['field']}。", True),
])
def test_an_answer_is_right_when_it_states_the_fact_and_nothing_else(prompt, answer, right):
    assert rehearsal.check_answer(prompt, answer, WORLD)[0] is right


def test_every_demo_prompt_has_a_check():
    prompts = [line for line in (REPO / "demo/eval/prompts.txt").read_text(encoding="utf-8").splitlines()
               if line and not line.startswith("#")]
    assert len(prompts) == 9
    assert all(rehearsal.check_answer(prompt, "", WORLD)[0] is False for prompt in prompts)
