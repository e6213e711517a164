"""The LLaMA shapes pretraining starts from, by preset name, and the untrained model of one."""
import math

from transformers import LlamaConfig, LlamaForCausalLM

# LLaMA shapes (RMSNorm, RoPE, SwiGLU). Sizes count the transformer blocks; embeddings come on top
# (vocabulary x hidden). `demo` is small enough to train the demo config's steps in minutes on 2 CPU
# cores (results/benchmarks/base_model.tsv of a demo run).
PRESETS = {
    "demo": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                 intermediate_size=352),
    "26m": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8,
                intermediate_size=1408),
    "0.1b": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=12,
                 intermediate_size=2048),
    "0.5b": dict(hidden_size=1280, num_hidden_layers=24, num_attention_heads=20, num_key_value_heads=4,
                 intermediate_size=3456),
}
VOCAB_MULTIPLE = 64


def build_model(preset, tokenizer, seq_len, tie_embeddings, attention):
    config = LlamaConfig(**PRESETS[preset], vocab_size=math.ceil(len(tokenizer) / VOCAB_MULTIPLE) * VOCAB_MULTIPLE,
                         max_position_embeddings=seq_len, rms_norm_eps=1e-5, rope_theta=10000.0,
                         tie_word_embeddings=tie_embeddings, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None, attn_implementation=attention)
    return LlamaForCausalLM(config)
