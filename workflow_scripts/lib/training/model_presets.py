"""The untrained model of a shape (lib/model_shapes.py) and what its parameters count."""
from transformers import LlamaConfig, LlamaForCausalLM

from workflow_scripts.lib.model_shapes import padded_vocab, shape


def build_model(preset, tokenizer, seq_len, tie_embeddings, attention):
    config = LlamaConfig(**shape(preset), vocab_size=padded_vocab(len(tokenizer)),
                         max_position_embeddings=seq_len, rms_norm_eps=1e-5, rope_theta=10000.0,
                         tie_word_embeddings=tie_embeddings, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None, attn_implementation=attention)
    return LlamaForCausalLM(config)


def non_embedding_parameters(model):
    """Parameters outside the token embeddings and the output projection: Kaplan's N, the blocks
    alone (the embeddings' share shrinks as models grow; at the demo's scale it is most of them)."""
    tables = {id(p): p.numel() for module in (model.get_input_embeddings(), model.get_output_embeddings())
              for p in module.parameters()}
    return model.num_parameters() - sum(tables.values())
