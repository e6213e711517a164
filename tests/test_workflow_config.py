"""lib/workflow/workflow_config.py, the checks rules/common.smk runs on the config before any job: one line
naming the key for each kind of problem, and the helpers the rules build commands with."""
import copy

import pytest
import yaml

from conftest import REPO
from workflow_scripts.lib.workflow.workflow_config import (ConfigError, chat_sources, cli_options, corpus_weights,
                                                           extra_corpora, fetched_key, launcher, mirrored,
                                                           part_settings, run_fetches, run_models, source_path,
                                                           training_allocation, validate_config)

SCHEMA = REPO / "config" / "schema.yaml"


@pytest.fixture
def cfg():
    return copy.deepcopy(yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8")))


def problem(cfg, targets=()):
    with pytest.raises(ConfigError) as caught:
        validate_config(cfg, SCHEMA, targets)
    return str(caught.value)


def test_the_shipped_config_passes_and_command_line_text_is_read_as_numbers(cfg):
    cfg["sft"]["lr"], cfg["extract"]["keep_headings"] = "1e-3", "false"  # as --config gives them
    validate_config(cfg, SCHEMA, ["sft_model"])
    assert cfg["sft"]["lr"] == 0.001 and cfg["extract"]["keep_headings"] is False


def test_an_unknown_key_names_the_section_and_what_is_allowed(cfg):
    cfg["clean"]["min_char"] = 10
    assert problem(cfg).startswith("clean: unknown key min_char (allowed: min_chars, ")


def test_a_value_out_of_range_names_its_key(cfg):
    cfg["dedup"]["threshold"] = 1.5
    assert problem(cfg).startswith("dedup.threshold: 1.5 is greater than")


def test_a_global_batch_that_does_not_divide_names_the_product(cfg):
    cfg["pretrain"]["global_batch_tokens"] += 1
    assert problem(cfg).startswith("pretrain.global_batch_tokens: ")
    assert "multiple of micro_batch x seq_len x processes (or gpus) x nodes" in problem(cfg)


def test_a_length_past_the_models_context_names_both_keys(cfg):
    cfg["sft"]["max_len"] = cfg["pretrain"]["seq_len"] + 1
    assert problem(cfg) == (f"sft.max_len: {cfg['sft']['max_len']} is longer than the model's context, "
                            f"pretrain.seq_len = {cfg['pretrain']['seq_len']}; lower sft.max_len or raise "
                            "pretrain.seq_len")


def test_a_recipes_target_without_its_preset_says_which_preset(cfg):
    assert "config/presets/continued.yaml" in problem(cfg, ["continued_model"])


def test_repeated_names_and_missing_corpora_are_refused(cfg, tmp_path):
    cfg["corpora"]["extra"] = [{"name": "novels", "path": str(tmp_path / "none-*.txt")}]
    assert problem(cfg) == f"corpora.extra: novels: no file matches {tmp_path / 'none-*.txt'}"
    cfg["eval"]["multiple_choice"] = cfg["eval"]["multiple_choice"] * 2
    assert "repeat; give each set its own name" in problem(cfg)


def test_cli_options_are_sorted_with_flags_and_lists():
    options = cli_options({"zeta": 1, "keep_headings": False, "alpha_beta": [1, 2], "tie": True, "gpus": 0},
                          skip=("gpus",))
    assert options == "--alpha-beta 1 2 --no-keep-headings --tie --zeta 1"


def test_a_fetched_entry_is_named_by_its_file_and_a_new_pin_gets_a_new_folder():
    entry = {"url": "https://example.org/data/chat%20set.jsonl?x=1", "sha256": "AB" * 32}
    assert fetched_key(entry).startswith("chat_set.jsonl-")  # unquoted, then made a safe name
    assert fetched_key(entry) == fetched_key({**entry, "sha256": "ab" * 32})
    assert fetched_key(entry) != fetched_key({**entry, "sha256": "cd" * 32})


def test_a_fetched_file_is_found_where_fetch_data_puts_it_and_an_archive_by_its_member():
    plain = {"url": "https://example.org/sft.jsonl", "sha256": "0" * 64}
    archive = {"url": "https://example.org/cmmlu.zip", "sha256": "1" * 64, "member": "cmmlu"}
    assert source_path(plain, "results/fetched") == f"results/fetched/{fetched_key(plain)}/sft.jsonl"
    assert source_path(archive, "results/fetched") == f"results/fetched/{fetched_key(archive)}/cmmlu"
    assert source_path({"path": "data/x.json"}, "results/fetched") == "data/x.json"
    assert '"path": "data/x.json", "weight": 2' in chat_sources([{"path": "data/x.json", "weight": 2}], "f")


def test_mirrors_replace_the_first_matching_prefix():
    mirrors = {"https://huggingface.co/": "https://hf-mirror.com/"}
    assert mirrored("https://huggingface.co/datasets/a/b", mirrors) == "https://hf-mirror.com/datasets/a/b"
    assert mirrored("https://example.org/a", mirrors) == "https://example.org/a"


def test_an_extra_corpus_takes_zhwikis_settings_key_by_key(cfg):
    cfg["corpora"]["extra"] = [{"name": "novels", "path": "n/*.txt", "clean": {"min_chars": 5}}]
    novels, = extra_corpora(cfg)
    assert novels["clean"] == {**cfg["clean"], "min_chars": 5}
    assert novels["opencc_config"] == cfg["convert"]["opencc_config"] and novels["shards"] == 1


def test_training_across_nodes_asks_slurm_for_a_task_per_node_and_starts_a_launcher_on_each():
    one = {"gpus": 2, "processes": 1, "nodes": 1}
    assert training_allocation(one) == {"gpu": 2, "nodes": 1}
    assert launcher(one) == "python -m workflow_scripts.training.launch --gpus 2 --processes 1 --nodes 1 --"
    two = {**one, "nodes": 2}
    assert training_allocation(two) == {"nodes": 2, "mpi": "srun", "tasks": 2, "gres": "gpu:2", "tasks_per_gpu": 0}
    assert launcher(two).startswith("srun --overlap --nodes=2 --ntasks=2 --ntasks-per-node=1 python -m ")


def test_a_part_takes_its_corpus_settings_and_the_weights_keep_zhwiki_first(cfg):
    cfg["corpora"]["extra"] = [{"name": "novels", "path": "n.txt", "weight": 0.5, "clean": {"min_chars": 40}}]
    extra = extra_corpora(cfg)
    assert part_settings(cfg, extra, "zhwiki-001")["clean"] == cfg["clean"]
    assert part_settings(cfg, extra, "novels-000")["clean"]["min_chars"] == 40
    assert list(corpus_weights(cfg, extra).items()) == [("zhwiki", 1.0), ("novels", 0.5)]


def test_settings_reach_the_shell_quoted_sorted_and_only_those_asked_for(cfg):
    cfg["download"].update(source="local", local_dump="/my data/z.xml.bz2", local_index="")
    assert cli_options(cfg["download"], only=("local_dump", "local_index", "source")) == \
        "--local-dump '/my data/z.xml.bz2' --local-index '' --source local"
    assert cli_options({"shots": [0, 5], "compile": False, "lr": 0.001}, skip=("lr",)) == "--no-compile --shots 0 5"


def test_a_run_fetches_only_what_its_models_read(cfg):
    pairs = {"url": "https://example.org/pairs.jsonl", "sha256": ""}
    cfg["dpo"]["data"] = [pairs]
    assert run_models(cfg) == ["base_model", "sft_model"] and run_fetches(cfg, ["sft"]) == []
    cfg["dpo"]["enabled"] = True
    assert run_models(cfg)[-1] == "dpo_model" and run_fetches(cfg, ["sft", "dpo"]) == [fetched_key(pairs)]
