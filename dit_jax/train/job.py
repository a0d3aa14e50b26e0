"""Training jobs, looked up by config.task: run(config, workdir).

    python train.py --config configs/pixart_dreambooth.py --config.checkpoint=... --config.instance_dir=...

Every shipped config trains with the one generic trainer, task "train" (dit_jax/train/trainer.py): the
Shapes model's pretraining, personalization and unlearning are configs of it with the Shapes data
sources their plugin registers. A task is fn(config, workdir) registered with
@register_task(name); the modules in config.plugins are imported first, so a plugin's tasks and
data sources are found the same way a user's would be.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from dit_jax import cli, files, provenance, registry
from dit_jax.train import trainer
from dit_jax.pipeline import checks

TASKS = registry.Registry("training task")
WEIGHTS: dict[str, str] = {}   # task -> the config key naming the weights it starts from

# Config keys a run may change and still resume its workdir: how long it trains and how it logs
# (a resumed run may stretch its schedule, e.g. to more steps at a new learning rate); and the
# revision, whose commit is in the checkpoint path a Hub id resolves to.
RESUMABLE = ("steps", "learning_rate", "warmup_steps", "log_every", "checkpoint_every",
             "max_minutes", "workdir", "export_dir", "fresh", "plugins", "validate_every",
             "validation_prompts", "memory_plan", "fixed_batch_loss", "sample_batch_size",
             "num_devices", "fsdp", "revision", "keep_checkpoints")
# What a run writes into its workdir, cleared by --config.fresh=True when the inputs changed.
OUTPUTS = ("checkpoints", "metrics.jsonl", "loss.png", "selection.json", "transformer", "lora",
           "data", "fixed_batch.json", "validation")
# Outputs that mean a run has started training (a run that fails before them leaves no record).
STARTED = ("checkpoints", "metrics.jsonl", "transformer", "lora")


def register_task(name: str, weights: str | Callable | None = None):
  """Decorator: make fn(config, workdir) available as config.task = name. `weights`: the config key
  of the weights the task starts from (a fine-tuning run's base model), part of its inputs, or
  fn(config) -> that path or None (nothing: trained from scratch)."""
  def register(fn):
    TASKS.register(name, fn)
    if weights:
      WEIGHTS[name] = weights
    return fn
  return register


def run_inputs(config) -> dict:
  """What makes a run this run (objective, blocks, LoRA rank, base weights, data, ...)."""
  keys = [k for k in config.keys() if k not in RESUMABLE]
  extra = {}
  path = base_weights(config)
  if path:
    extra["weights"] = provenance.weights_fingerprint(path)
  return provenance.stage_inputs(config, keys, **extra)


def base_weights(config) -> str | None:
  """The weights config.task starts from (None: it trains from scratch)."""
  weights = WEIGHTS.get(config.task)
  return weights(config) if callable(weights) else config[weights] if weights else None


def check_inputs(config, workdir: str) -> None:
  """A workdir holding another run is refused naming the difference, never resumed into
  (provenance.resume)."""
  try:
    provenance.resume(workdir, {"run": run_inputs(config)}, {"run": OUTPUTS},
                      config.get("fresh", False))
  except provenance.StaleResults as error:
    raise SystemExit(str(error).replace("out_dir", "workdir"))


def export_checkpoint(config, workdir: str, step: int | None = None) -> int:
  """Export a checkpoint of the run in `workdir` (the latest by default) into config.export_dir,
  while it trains or after it stopped (trainer.export_checkpoint). Reads the workdir only, and
  refuses one that holds another run's checkpoints."""
  cli.import_plugins(config)
  if config.task != "train":
    raise SystemExit(f"exporting a checkpoint needs config.task='train', not {config.task!r}")
  checks.resolve_checkpoint(config)   # a Hub id: the inputs compared are those of its local folder
  record = os.path.join(os.fspath(workdir), provenance.RECORD)
  if not os.path.exists(record):
    raise SystemExit(f"{workdir} holds no training run (no {provenance.RECORD})")
  recorded, inputs = files.read_json(record).get("run"), run_inputs(config)
  if recorded != inputs:
    raise SystemExit(f"{workdir} holds a run of other inputs: "
                     + "; ".join(provenance.differences(recorded or {}, inputs)))
  try:
    return trainer.export_checkpoint(config, workdir, step)
  except (FileNotFoundError, ValueError) as error:
    raise SystemExit(str(error))


def run(config, workdir: str) -> None:
  cli.import_plugins(config)
  if config.task not in TASKS:
    raise SystemExit(f"config.task={config.task!r}: choose one of {sorted(TASKS)} (a plugin's task "
                     "needs the plugin in config.plugins)")
  # Counts that a typo makes negative would train nothing and export the input as if trained.
  cli.require_positive(config, *[k for k in ("steps", "batch_size") if k in config])
  checks.resolve_checkpoint(config)   # a Hub id: the weights fingerprint reads its local folder
  checks.require_weights(config, base_weights(config))
  workdir = cli.make_out_dir(os.fspath(workdir))
  record = os.path.join(workdir, provenance.RECORD)
  recorded = os.path.exists(record)
  check_inputs(config, workdir)
  try:
    TASKS[config.task](config, workdir)
  except BaseException:
    # A run refused before it trained (bad images, blocks, prompts) records nothing, so the
    # corrected rerun is not taken for another run's workdir.
    if not recorded and not any(os.path.exists(os.path.join(workdir, o)) for o in STARTED):
      os.remove(record)
    raise


@register_task("train", weights=lambda config: None if config.get("transformer")
               else config.get("checkpoint"))
def train(config, workdir: str) -> None:
  trainer.train(config, workdir)
