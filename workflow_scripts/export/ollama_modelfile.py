"""An Ollama Modelfile for the exported chat model: its GGUF file, the ChatML template, the stop
tokens and the sampling defaults that `serve` and `chat` use.

    python -m workflow_scripts.export.ollama_modelfile --model results/sft_model \
        --gguf results/export/sft_model-q8_0.gguf --out results/export/Modelfile

Then, beside it: `ollama create zhwiki-chat -f Modelfile` and `ollama run zhwiki-chat`.
"""
from pathlib import Path

from transformers import AutoConfig

from workflow_scripts.lib.atomic_files import write_text
from workflow_scripts.lib.serving.generation import DEFAULTS
from workflow_scripts.lib.stage_cli import log, stage_cli
from workflow_scripts.lib.training.models import require_model_dir

# The chat template of lib/chatml.py in Go's template language: each turn
# "<|im_start|>{role}\n{content}<|im_end|>\n", then the assistant's opening (tests/test_gguf.py
# renders both and compares).
CHATML_TEMPLATE = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
STOPS = ("<|im_end|>", "<|im_start|>", "<|endoftext|>")


def modelfile(gguf_name, context_length):
    lines = ["# The chat model exported by zhwiki-llm: ollama create zhwiki-chat -f Modelfile",
             f"FROM ./{gguf_name}", f'TEMPLATE """{CHATML_TEMPLATE}"""']
    lines += [f'PARAMETER stop "{stop}"' for stop in STOPS]
    lines += [f"PARAMETER temperature {DEFAULTS['temperature']}", f"PARAMETER top_p {DEFAULTS['top_p']}",
              f"PARAMETER repeat_penalty {DEFAULTS['repetition_penalty']}", f"PARAMETER num_ctx {context_length}",
              f"PARAMETER num_predict {DEFAULTS['max_tokens']}"]
    return "\n".join(lines) + "\n"


def add_arguments(ap):
    ap.add_argument("--model", type=Path, required=True, help="the Hugging Face model the GGUF file was written from")
    ap.add_argument("--gguf", type=Path, required=True, help="the GGUF file, in the Modelfile's folder")
    ap.add_argument("--out", type=Path, required=True, help="the Modelfile to write")


def run(args, progress_stream):
    require_model_dir(args.model)
    context_length = AutoConfig.from_pretrained(args.model).max_position_embeddings
    write_text(args.out, modelfile(args.gguf.name, context_length))
    log.info("%s: FROM ./%s, num_ctx %d", args.out, args.gguf.name, context_length)


if __name__ == "__main__":
    stage_cli("ollama_modelfile", __doc__, add_arguments, run)
