"""Pretrain a LLaMA-style causal LM from scratch on the token shards; resumable, measured.

    accelerate launch --num_processes 1 -m workflow_scripts.training.pretrain --tokens results/tokens \
        --tokenizer results/tokenizer --preset demo --out results/base_model \
        --checkpoint-root results/checkpoints/base_model --metrics m.jsonl --plot loss.png --summary s.json

With N processes: `accelerate launch --multi_gpu --num_processes N -m workflow_scripts.training.pretrain ...`
(on a CPU-only machine this runs DDP over gloo). `--engine deepspeed --zero-stage 2|3` trains
with DeepSpeed ZeRO instead. Rerunning the same command after a crash or kill resumes from the
latest checkpoint of the same settings and data; the output is a Hugging Face model directory
(safetensors, config, tokenizer) for `AutoModelForCausalLM.from_pretrained`.
"""
from pathlib import Path

from transformers import AutoTokenizer

from workflow_scripts.lib.settings import add_settings
from workflow_scripts.lib.stage_cli import stage_cli
from workflow_scripts.lib.training.model_presets import build_model
from workflow_scripts.lib.model_shapes import shape
from workflow_scripts.lib.training.token_training import add_token_training_arguments, train_on_tokens
from workflow_scripts.lib.training.training import set_seed

def add_arguments(ap):
    add_token_training_arguments(ap, "pretrain")
    ap.add_argument("--tokenizer", type=Path, required=True)
    add_settings(ap, "pretrain", "preset", "tie_embeddings")


def run(args, progress_stream):
    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    model = build_model(args.preset, tokenizer, args.seq_len, args.tie_embeddings, args.attention)
    # The preset's shape names the run too: an edited preset must start afresh, not fail to load the
    # old run's checkpoint into a model of another shape.
    train_on_tokens(vars(args), "pretrain", model, tokenizer, {"preset": args.preset},
                    f"pretraining ({args.preset}, {{engine}}, processes: {{world}})", progress_stream,
                    architecture=shape(args.preset))


if __name__ == "__main__":
    stage_cli("pretrain", __doc__, add_arguments, run)
