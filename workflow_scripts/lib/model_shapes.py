"""The LLaMA shapes pretraining starts from, by preset name or by depth, and the training FLOPs per
token of one: plain arithmetic, so that the workflow can plan a sweep without importing a model library."""
import math
import re

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
DEPTH = re.compile(r"d([1-9][0-9]?)")
# nanochat's one knob: a model of depth d has d layers of width 64 d, so that width and depth grow
# together at a fixed aspect ratio and a sweep over d is a smooth curve of sizes. Heads of 64, and
# SwiGLU's hidden layer 8/3 as wide (LLaMA's), rounded up to 32: d12 is exactly the 0.1b preset.
WIDTH_PER_LAYER, HEAD_DIM = 64, 64
VOCAB_MULTIPLE = 64


def shape(preset):
    """LlamaConfig's size keywords of a named preset or of a depth `d<N>`."""
    if preset in PRESETS:
        return PRESETS[preset]
    depth = int(DEPTH.fullmatch(preset).group(1))
    hidden = WIDTH_PER_LAYER * depth
    return dict(hidden_size=hidden, num_hidden_layers=depth, num_attention_heads=hidden // HEAD_DIM,
                num_key_value_heads=hidden // HEAD_DIM, intermediate_size=math.ceil(hidden * 8 / 3 / 32) * 32)


def padded_vocab(tokens):
    """The embedding table's rows for a tokenizer of `tokens` entries."""
    return math.ceil(tokens / VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def matmul_weights(hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads, intermediate_size):
    """Weights of a shape's blocks' matrix products: attention (grouped keys and values) and SwiGLU."""
    h = hidden_size
    kv = num_key_value_heads * (h // num_attention_heads)
    return num_hidden_layers * (2 * h * h + 2 * h * kv + 3 * h * intermediate_size)


def flops_per_token(vocab_size, seq_len, **sizes):
    """6N for the matmuls plus the attention scores (nanochat's estimate); N excludes embeddings."""
    h, layers = sizes["hidden_size"], sizes["num_hidden_layers"]
    return 6 * (matmul_weights(**sizes) + h * vocab_size) + 12 * layers * h * seq_len


def non_embedding_size(**sizes):
    """Parameters of a shape's blocks and norms (model_presets.non_embedding_parameters counts a built model's)."""
    return matmul_weights(**sizes) + (2 * sizes["num_hidden_layers"] + 1) * sizes["hidden_size"]
