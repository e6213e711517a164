"""A trained model as one GGUF file for llama.cpp, Ollama and LM Studio, in f16 or Q8_0.

    python -m workflow_scripts.export.export_gguf --model results/sft_model --type q8_0 \
        --out results/export/sft_model-q8_0.gguf --stats results/export/sft_model-q8_0.json

Written with llama.cpp's own gguf-py (the `gguf` package), in the layout its convert_hf_to_gguf.py
gives a LLaMA model: Q and K rows permuted for llama.cpp's RoPE, norms in f32, the tied output
matrix left to the embedding. The tokenizer goes in as llama.cpp's `gpt2` BPE with the
pre-tokenizer `smollm`: digits one by one, then GPT-2's regex, which is exactly what the saved
tokenizer does (Digits(individual) then ByteLevel). Any other tokenizer is refused, since llama.cpp
would tokenize it differently without a word.
"""
import json
import re
import time
from pathlib import Path

import gguf
import numpy as np
import torch
from transformers import AutoConfig

from workflow_scripts.lib.atomic_files import atomic_path, file_digest, write_json
from workflow_scripts.lib.chatml import IM_END
from workflow_scripts.lib.settings import definitions
from workflow_scripts.lib.stage_cli import StageError, log, stage_cli
from workflow_scripts.lib.training.models import load_causal_lm, require_model_dir

LLAMA_CPP_PRE_TOKENIZER = "smollm"
# What llama.cpp's `smollm` splits text by, as the saved tokenizer's tokenizer.json spells it.
REPRODUCED_PRE_TOKENIZER = {"type": "Sequence", "pretokenizers": [
    {"type": "Digits", "individual_digits": True},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
# transformers' {% generation %} marks the assistant's tokens for SFT's loss; it renders nothing, and
# llama.cpp's Jinja engine does not know the tag.
GENERATION_TAGS = re.compile(r"{%-?\s*(end)?generation\s*-?%}")
FILE_TYPES = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
WEIGHT_TYPES = {"f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0}


def tokenizer_json(model_dir: Path):
    try:
        return json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise StageError(f"{model_dir}/tokenizer.json: cannot read it ({err})") from None


def check_reproducible(spec, model_dir):
    """Refuse a tokenizer that llama.cpp's `smollm` BPE would not reproduce token for token."""
    problems = []
    bpe = spec["model"]
    extras = [key for key in ("byte_fallback", "ignore_merges", "continuing_subword_prefix", "end_of_word_suffix",
                              "dropout") if bpe.get(key)]
    if bpe["type"] != "BPE" or extras:
        problems.append(f"model {bpe['type']} {' '.join(extras)} (plain byte-level BPE needed)")
    if spec.get("normalizer") is not None:
        problems.append("a normalizer")
    if spec.get("pre_tokenizer") != REPRODUCED_PRE_TOKENIZER:
        problems.append(f"pre-tokenizer {json.dumps(spec.get('pre_tokenizer'))}")
    if problems:
        raise StageError(f"{model_dir}/tokenizer.json: llama.cpp would tokenize it differently ({'; '.join(problems)});"
                         " export takes this workflow's tokenizer (Digits then ByteLevel, no normalizer)")


def check_architecture(model_dir):
    """Refuse, before loading any weight, a model that is not plain LLaMA."""
    require_model_dir(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    rope = getattr(config, "rope_parameters", None) or {"rope_type": "default"}
    extras = [name for name in ("attention_bias", "mlp_bias") if getattr(config, name, False)]
    if config.model_type != "llama" or rope.get("rope_type", "default") != "default" or extras:
        raise StageError(f"{model_dir}: a {config.model_type} model (rope {rope.get('rope_type', 'default')}"
                         f"{', ' + ', '.join(extras) if extras else ''}); export writes plain LLaMA models only")


def vocabulary(spec, vocab_size):
    """(tokens, token types, merges) in llama.cpp's order: by id, padded to the model's rows."""
    by_id = {index: token for token, index in spec["model"]["vocab"].items()}
    control = {added["id"] for added in spec["added_tokens"] if added["special"]}
    by_id.update({added["id"]: added["content"] for added in spec["added_tokens"]})
    tokens, types = [], []
    for index in range(vocab_size):
        tokens.append(by_id.get(index, f"[PAD{index}]"))
        types.append(gguf.TokenType.CONTROL if index in control else
                     gguf.TokenType.NORMAL if index in by_id else gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    return tokens, types, merges


def llama_rope_rows(weight, heads):
    """Q or K rows reordered from Hugging Face's rotate-half RoPE to llama.cpp's interleaved pairs
    (convert_hf_to_gguf's LlamaModel.permute)."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def gguf_tensors(model, config):
    """(GGUF name, float32 array) of every weight, Q and K in llama.cpp's RoPE layout."""
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp uses token_embd as the output matrix when output.weight is absent
        data = tensor.detach().to(torch.float32).numpy()
        if name.endswith("q_proj.weight"):
            data = llama_rope_rows(data, config.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            data = llama_rope_rows(data, config.num_key_value_heads)
        mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise StageError(f"{name}: a weight llama.cpp's LLaMA layout has no place for")
        yield mapped, data


def stored(data, weight_type):
    """The array as written: vectors in f32 (as llama.cpp's converter keeps norms), matrices in the
    file's type, Q8_0 only where rows split into its 32-value blocks."""
    if data.ndim == 1:
        return data, gguf.GGMLQuantizationType.F32
    if weight_type == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % 32 == 0:
        return gguf.quants.quantize(data, weight_type), weight_type
    return data.astype(np.float16), gguf.GGMLQuantizationType.F16


def add_metadata(writer, config, name, file_type):
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base((getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(file_type)


def add_tokenizer(writer, spec, tokenizer, vocab_size):
    tokens, types, merges = vocabulary(spec, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(LLAMA_CPP_PRE_TOKENIZER)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    if tokenizer.pad_token_id is not None:
        writer.add_pad_token_id(tokenizer.pad_token_id)
    end_of_turn = tokenizer.convert_tokens_to_ids(IM_END)
    if end_of_turn is not None and end_of_turn != tokenizer.unk_token_id:
        writer.add_eot_token_id(end_of_turn)
    writer.add_add_bos_token(False)
    if tokenizer.chat_template:
        writer.add_chat_template(GENERATION_TAGS.sub("", tokenizer.chat_template))


def write_gguf(model_dir, out, kind):
    check_architecture(model_dir)
    spec = tokenizer_json(model_dir)
    check_reproducible(spec, model_dir)
    model, tokenizer = load_causal_lm(model_dir)
    counts = {}
    with atomic_path(out) as tmp:
        writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
        add_metadata(writer, model.config, model_dir.name, FILE_TYPES[kind])
        add_tokenizer(writer, spec, tokenizer, model.config.vocab_size)
        for name, data in gguf_tensors(model, model.config):
            array, qtype = stored(data, WEIGHT_TYPES[kind])
            writer.add_tensor(name, array, raw_dtype=qtype)
            counts[qtype.name] = counts.get(qtype.name, 0) + 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return counts


def add_arguments(ap):
    ap.add_argument("--model", type=Path, required=True, help="a Hugging Face LLaMA model folder")
    ap.add_argument("--type", choices=definitions("export")["types"]["items"]["enum"], required=True,
                    help="the weights' type in the file (one of export.types)")
    ap.add_argument("--out", type=Path, required=True, help="the .gguf file to write")
    ap.add_argument("--stats", type=Path, required=True, help="a small JSON about the file")


def run(args, progress_stream):
    started = time.perf_counter()
    counts = write_gguf(args.model, args.out, args.type)
    write_json(args.stats, {"model": str(args.model), "type": args.type, "file": str(args.out),
                            "bytes": args.out.stat().st_size, "sha256": file_digest(args.out, "sha256"),
                            "tensors_by_type": counts, "pre_tokenizer": LLAMA_CPP_PRE_TOKENIZER,
                            "seconds": round(time.perf_counter() - started, 2)})
    log.info("%s: %d bytes, tensors %s", args.out, args.out.stat().st_size, counts)


if __name__ == "__main__":
    stage_cli("export_gguf", __doc__, add_arguments, run)
