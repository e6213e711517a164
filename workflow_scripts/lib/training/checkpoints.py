"""A run's checkpoints, its identity and its saved model.

Checkpoints go to a run directory named by a hash of the settings that change results (their
definitions say which: lib/settings.py), outside the rule's outputs, so Snakemake never deletes
them; an output path, eval_every or a logging option does not change it. Each checkpoint is
written to `step-N.tmp` and renamed only once complete, so a kill mid-write leaves the previous
one the latest good checkpoint.
"""
import hashlib
import json
import os
import shutil
from pathlib import Path

from workflow_scripts.lib.atomic_files import atomic_dir
from workflow_scripts.lib.stage_cli import log

class Checkpoints:
    """step-N directories in a run directory: written as step-N.tmp, renamed when complete, last K kept."""

    def __init__(self, root: Path, keep):
        self.root, self.keep = root, keep

    def complete(self):
        steps = [p for p in self.root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")]
        return sorted(steps, key=lambda p: int(p.name.split("-")[1]))

    def latest(self):
        done = self.complete()
        return done[-1] if done else None

    def save(self, engine, step, state):
        final = self.root / f"step-{step:07d}"
        tmp = final.with_name(final.name + ".tmp")
        if engine.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        engine.barrier()
        engine.save(tmp)
        engine.barrier()
        if engine.rank == 0:
            (tmp / "trainer_state.json").write_text(json.dumps(state))
            os.replace(tmp, final)
            for old in self.complete()[:-self.keep]:
                shutil.rmtree(old)
        engine.barrier()
        return final


def resume(engine, checkpoints):
    """Load the latest checkpoint of this run, if any; the trainer state it was saved with."""
    latest = checkpoints.latest()
    if latest is None:
        return {"step": 0, "tokens": 0}
    engine.load(latest)
    log.info("resuming from %s", latest)
    return json.loads((latest / "trainer_state.json").read_text())


def save_model(engine, tokenizer, out, prepare=None):
    """The trained model (after `prepare`, e.g. merging LoRA) and its tokenizer as a Hugging Face directory,
    the tokenizer's model_max_length the model's context (transformers warns past it, and clients read
    it as the context: the tokenizer stage's 2,048 is not the demo model's 256)."""
    model, state = engine.unwrapped_state()
    if engine.rank == 0:
        if prepare is not None:
            model, state = prepare(model, state)
        tokenizer.model_max_length = model.config.max_position_embeddings
        with atomic_dir(out) as tmp:
            model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
            tokenizer.save_pretrained(tmp, save_jinja_files=False)
    engine.barrier()


def run_id(settings, **fingerprints):
    """A hash of the run's declared settings, its data/model fingerprints and the world size."""
    named = {k: str(v) for k, v in settings.items()}
    named.update(fingerprints, world=os.environ.get("WORLD_SIZE", "1"))
    return hashlib.sha1(json.dumps(named, sort_keys=True).encode()).hexdigest()[:12]
