"""Hugging Face causal LMs for the stages that start from one: loading, fingerprints, LoRA (peft)."""
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from workflow_scripts.lib.atomic_files import atomic_dir, file_digest
from workflow_scripts.lib.settings import add_settings
from workflow_scripts.lib.stage_cli import StageError, quiet_transformers


def require_model_dir(model_dir: Path, remedy="build it with snakemake first"):
    """A one-line error, ending with `remedy`, unless model_dir is a Hugging Face model directory."""
    if not (Path(model_dir) / "config.json").is_file():
        raise StageError(f"{model_dir}: not a model directory (no config.json); {remedy}")


def load_causal_lm(model_dir: Path):
    """(model in eval mode, on the GPU when there is one; tokenizer) of a Hugging Face directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    quiet_transformers()  # transformers may be imported only now
    require_model_dir(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).to("cuda" if torch.cuda.is_available() else "cpu")
    model.eval()
    return model, tokenizer


def model_fingerprint(model_dir: Path):
    """What names a starting model in a run id: its weights' hash."""
    weights = model_dir / "model.safetensors"
    return file_digest(weights) if weights.exists() else str(model_dir.resolve())


def add_method_arguments(ap, section):
    """Full fine-tuning or LoRA (peft), for the stages that start from an existing model."""
    add_settings(ap, section, "method", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets")


@dataclass(frozen=True)
class Lora:
    lora_rank: int
    lora_alpha: int
    lora_dropout: float
    lora_targets: list


def with_lora(model, lora, **config):
    """The model with LoRA adapters on lora.lora_targets; `config` goes to peft's LoraConfig as well."""
    from peft import LoraConfig, get_peft_model
    return get_peft_model(model, LoraConfig(r=lora.lora_rank, lora_alpha=lora.lora_alpha,
                                            lora_dropout=lora.lora_dropout, target_modules=lora.lora_targets,
                                            task_type="CAUSAL_LM", **config))


def merge_lora(model, _state):
    """save_model's `prepare` for LoRA: the adapters folded into the weights, saved as a plain model."""
    merged = model.merge_and_unload()
    return merged, merged.state_dict()


def save_trained(trainer, start_dir: Path, out: Path, lora=False):
    """A trl trainer's model (its LoRA adapters merged in) and tokenizer as a Hugging Face directory,
    with the starting model's generation config, so that it stops at <|im_end|> as that model does."""
    with atomic_dir(out) as tmp:
        if lora:
            trainer.model.merge_and_unload().save_pretrained(tmp)
        else:
            trainer.save_model(str(tmp))
        trainer.processing_class.save_pretrained(tmp, save_jinja_files=False)
        if (start_dir / "generation_config.json").exists():
            shutil.copy(start_dir / "generation_config.json", tmp / "generation_config.json")
