"""The terminal chat as a user meets it (commands, Ctrl-C, Ctrl-D, the context limit), and sampling that
never shows "�" (lib.serving.utf8_guard) on a random model and on the demo's SFT model."""
import builtins
import io
import subprocess
import sys

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from conftest import REPO
from workflow_scripts.lib.serving.generation import chat_prompt_ids, generate_reply, sampling_settings
from workflow_scripts.lib.serving.model_notes import answered_questions
from workflow_scripts.lib.serving.utf8_guard import after, byte_table
from workflow_scripts.lib.training.models import load_causal_lm
from workflow_scripts.serving.chat import BASE_MODEL, HELP, NO_ROOM, TOO_LONG, answer, converse

PROMPTS = ["你好", "介绍一下你自己。", "青松市位于哪个省？", "写一首关于春天的诗。"]


def test_utf8_states_follow_lead_and_continuation_bytes():
    assert after(0, "中".encode()[:2]) == 1 and after(1, "中".encode()[2:]) == 0
    assert after(0, b"\x80") is None and after(2, b"a") is None and after(0, "a中".encode()) == 0
    assert after(0, b"\xe0\x80") is None and after(0, b"\xed\xa0") is None and after(0, b"\xf4\x90") is None
    assert after(0, "😀".encode()) == 0 and after(0, "\U0010ffff".encode()) == 0


def sampled_replies(model, tokenizer, guard):
    """Replies sampled at temperature 1 to PROMPTS under 5 seeds each, with or without the guard."""
    settings = sampling_settings(tokenizer, 1.0, 1.0, 40, 1.0)
    replies = []
    for prompt in PROMPTS:
        for seed in range(5):
            torch.manual_seed(seed)
            ids = chat_prompt_ids(tokenizer, [{"role": "user", "content": prompt}])
            if guard:
                replies.append(generate_reply(model, tokenizer, ids, settings, lambda piece: None).text)
            else:
                out = model.generate(input_ids=torch.tensor([ids]), **settings)
                replies.append(tokenizer.decode(out[0, len(ids):], skip_special_tokens=True))
    return replies


def test_a_random_model_would_show_broken_characters_and_the_guard_shows_none(trained):
    tokenizer = AutoTokenizer.from_pretrained(trained[0])
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config).eval()
    assert tokenizer.chat_template is not None  # the tokenizer stage always writes ChatML's
    assert byte_table(tokenizer, config.vocab_size) is not None
    assert sum("\ufffd" in reply for reply in sampled_replies(model, tokenizer, guard=False)) > 5
    assert not any("\ufffd" in reply for reply in sampled_replies(model, tokenizer, guard=True))


def test_the_demo_chat_model_never_shows_a_broken_character(built):
    model, tokenizer = load_causal_lm(built / "results/sft_model")
    replies = sampled_replies(model, tokenizer, guard=True)
    assert sum(map(len, replies)) > 200 and not any("\ufffd" in reply for reply in replies)


@pytest.fixture(scope="module")
def demo_chat(built):
    model, tokenizer = load_causal_lm(built / "results/sft_model")
    return model, tokenizer, sampling_settings(tokenizer, 0, 1.0, 24, 1.1)


def test_commands_and_ctrl_d_as_typed(built):
    result = subprocess.run([sys.executable, "-m", "workflow_scripts.serving.chat", "results/sft_model"], cwd=built,
                            input="/help\n你好\n/reset\n", capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert HELP in result.stdout and "（已开始新的对话）" in result.stdout and "助手: " in result.stdout
    assert result.stdout.endswith("\n") and "Traceback" not in result.stderr
    model_line, help_line = result.stderr.splitlines()[:2]  # no weight-loading bar before them
    examples = " ".join(answered_questions(built / "results/sft_model"))
    assert help_line == HELP and model_line == (
        f"模型：results/sft_model（上下文 256 个词元）。它只知道训练语料里的内容；它答对过的问题，例如：{examples}")


# README's example questions about the demo country, with the answers it quotes.
README_EXAMPLES = {"衡芝市位于哪个省？": "衡芝市是雅丹省的一座城市，人口约167万。",
                   "张军的老师是谁？": "张军曾师从萧兰娜。"}


def test_the_readme_quotes_what_the_demo_chat_model_answers(built):
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    for question, reply in README_EXAMPLES.items():
        assert f"`{question}`" in readme and f"`{reply}`" in readme
        result = subprocess.run([sys.executable, "-m", "workflow_scripts.serving.chat", "results/sft_model",
                                 "--prompt", question, "--temperature", "0"], cwd=built, capture_output=True, text=True,
                                timeout=300)
        assert result.stdout == reply + "\n", result.stderr


def test_a_base_model_is_said_to_continue_text(built):
    """And a message past the context is refused in the chat's words, without transformers' warning."""
    result = subprocess.run([sys.executable, "-m", "workflow_scripts.serving.chat", "results/base_model",
                             "--prompt", "青松市" * 300, "--max-new-tokens", "4"], cwd=built, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 and result.stderr == BASE_MODEL + "\n", result.stderr
    assert result.stdout.startswith("（这条消息有 ") and "超出模型的上下文长度 256" in result.stdout


class InterruptAfterFirstPiece(io.StringIO):
    """A terminal on which the user presses Ctrl-C once the answer has started to appear."""
    pressed = False

    def write(self, text):
        super().write(text)
        if not self.pressed:
            self.pressed = True
            raise KeyboardInterrupt


def test_ctrl_c_stops_the_answer_and_keeps_what_was_said(demo_chat):
    model, tokenizer, settings = demo_chat
    out = InterruptAfterFirstPiece()
    reply = answer(model, tokenizer, [{"role": "user", "content": "你好"}], settings, out)
    assert out.getvalue() == reply + "（已中断）\n" and reply


def test_ctrl_c_twice_at_the_prompt_leaves_and_once_does_not(demo_chat, monkeypatch, capsys):
    model, tokenizer, settings = demo_chat
    keys = iter([KeyboardInterrupt, "/reset", KeyboardInterrupt, KeyboardInterrupt, "never read"])

    def typed(prompt):
        key = next(keys)
        if key is KeyboardInterrupt:
            raise KeyboardInterrupt
        return key
    monkeypatch.setattr(builtins, "input", typed)
    converse(model, tokenizer, settings, [])
    assert next(keys) == "never read"
    assert "（再按一次 Ctrl-C 退出）" in capsys.readouterr().err


def test_an_answer_never_runs_past_the_context(demo_chat):
    model, tokenizer, settings = demo_chat
    context = model.config.max_position_embeddings
    long_turn = [{"role": "user", "content": "青松市" * context}]
    out = io.StringIO()
    assert answer(model, tokenizer, long_turn, settings, out) is None
    assert out.getvalue() == TOO_LONG.format(tokens=len(chat_prompt_ids(tokenizer, long_turn)), context=context) + "\n"
    turn = [{"role": "user", "content": "青松市" * (context // 4)}, {"role": "assistant", "content": "好"}]
    out = io.StringIO()
    assert answer(model, tokenizer, turn * 4 + turn[:1], settings, out) is None  # each turn fits, not all
    assert out.getvalue() == NO_ROOM.format(context=context) + "\n"
