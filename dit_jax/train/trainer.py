"""The one trainer, for every family, objective and data source: config.task = "train".

    python train.py --config configs/flux_dreambooth.py --config.checkpoint=/path/to/FLUX.1-dev \
        --config.instance_dir=photos/ --config.blocks=runs/localize_flux/scores.json --config.k=6

From a diffusers pipeline folder (config.checkpoint; or config.transformer, a transformer config,
to train from scratch): the selected blocks (config.blocks) train, their full weights or LoRA
factors of the family's projections (config.lora_rank, Family.lora_targets); the objective
(config.objective, dit_jax/train/objectives/) uses the forward process of the scheduler config
(dit_jax.diffusion.noising) and calls the backbone through the family's predictor; batches come from a data
source (config.data, dit_jax/train/data.py: the user's image folder by default). The run resumes from its
checkpoints, writes metrics.jsonl, loss.png, selection.json (what trains, XLA's memory plan of the
step), fixed_batch.json (the loss on one fixed batch before and after), validation images every
config.validate_every steps, and exports <workdir>/transformer (diffusers) and, for LoRA,
<workdir>/lora, which diffusers' pipe.load_lora_weights and PEFT's PeftModel.from_pretrained both
load (dit_jax.train.lora). Several devices: a ("data", "fsdp") mesh (config.fsdp, config.num_devices),
every family alike.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from dit_jax.train import data as data_lib, lora, objectives, loop
from dit_jax import families, files, blocks as blocks_lib, sharding
from dit_jax.models import interventions
from dit_jax import knowledge
from dit_jax.pipeline import loading, checks
from dit_jax.diffusion import text
from dit_jax.train.data import DataError, neutral_caption
from dit_jax.diffusion.noising import Noising
from dit_jax.pipeline.text2image import Text2Image, micro_conditions, read_scheduler_config


@dataclasses.dataclass
class Context:
  """What data sources need from the run: the config, the base pipeline (its encoders, VAE and
  sampler, built on first use around the weights already loaded) and where to cache."""
  config: object
  family: families.Family
  folder: str
  workdir: str
  module: object
  params: object
  dtype: object

  @property
  def resolution(self) -> tuple[int, int]:
    r = self.config.resolution
    return (r, r) if isinstance(r, int) else tuple(r)

  @functools.cached_property
  def pipe(self) -> Text2Image:
    config = self.config
    return Text2Image(config.model, self.folder, num_steps=config.num_steps,
                      guidance_scale=config.get("guidance_scale") or None, dtype=self.dtype,
                      cache_dir=os.path.join(self.workdir, "data", "prompts"),
                      max_sequence_length=config.get("max_sequence_length") or None,
                      loaded=(self.module, self.params))

  @property
  def codec(self):
    return self.pipe.codec

  @functools.cached_property
  def fingerprint(self) -> list:
    """What cached encodings and generated images depend on (cheap: names, sizes, times)."""
    parts = [p for p in ("transformer", "vae", *self.family.text_components)
             if os.path.isdir(os.path.join(self.folder, p))]
    return [os.path.abspath(self.folder), text.folder_fingerprint(self.folder, parts),
            self.config.get("max_sequence_length", 0)]

  def conditioning(self, captions: list[str]) -> dict:
    cond = dict(self.pipe.encoder(list(captions)))
    cond.update(micro_conditions(self.module.config, len(captions), *self.resolution))
    return cond

  def unconditional(self, n: int) -> dict:
    """ESD's unconditional: the negative-prompt encoding of a CFG family; the empty prompt of a
    guidance-distilled one (FLUX-dev has no negative branch)."""
    if self.family.guidance == "cfg":
      cond = dict(self.pipe.encoder([""] * n, negative=True))
    else:
      cond = dict(self.pipe.encoder([""] * n))
    cond.update(micro_conditions(self.module.config, n, *self.resolution))
    return cond

  def _knowledge_pairs(self):
    config = self.config
    try:
      ks = knowledge.load_knowledge(config.knowledge)
      return ks.pairs(config.concept, "train")
    except ValueError:
      return None

  def concept_prompts(self) -> list[str]:
    """config.prompts, else the knowledge set's train prompts of the concept."""
    if self.config.get("prompts"):
      return list(self.config.prompts)
    pairs = self._knowledge_pairs()
    if not pairs:
      raise DataError(f"concept {self.config.concept!r} is not in the knowledge set "
                      f"{self.config.knowledge!r}: give prompts that name it (config.prompts)")
    return [p.prompt for p in pairs]

  def anchor_conditioning(self, prompts: list[str]) -> dict:
    """config.anchor: "empty" (the unconditional), a phrase that replaces the concept, or ""
    (the knowledge set's neutral phrase of the concept's category; a style's clause dropped)."""
    anchor, concept = self.config.get("anchor", ""), self.config.concept
    if anchor == "empty":
      return self.unconditional(len(prompts))
    if anchor:
      return self.conditioning([neutral_caption(p, concept, anchor) for p in prompts])
    pairs = self._knowledge_pairs()
    if not pairs:
      raise DataError(f"no neutral phrase for {concept!r}: it is not in the knowledge set "
                      f"{self.config.knowledge!r}; set config.anchor (e.g. 'a person', or 'empty')")
    return self.conditioning([neutral_caption(p, concept, neutral_phrase(pairs[0])) for p in prompts])


def neutral_phrase(pair) -> str | None:
  """What a knowledge pair puts in the concept's place; None when the neutral prompt drops it
  with its clause (a style)."""
  from dit_jax.diffusion.concepts import char_span
  start, end = char_span(pair.prompt, pair.concept)
  prefix, suffix = pair.prompt[:start], pair.prompt[end:]
  if pair.neutral.startswith(prefix) and pair.neutral.endswith(suffix):
    return pair.neutral[len(prefix):len(pair.neutral) - len(suffix)]
  return None


def load_model(config, family, dtype):
  """(module computing in `dtype`, params in `dtype`, the weights as loaded): the pipeline's
  transformer, or config.transformer initialised at random. The weights as loaded are host arrays
  in their own dtype: the float32 masters of what trains start from them, and the export copies
  every tensor that did not train from them, so a bf16 run rounds neither."""
  if config.get("transformer"):
    model_config = family.config_cls.from_diffusers(dict(config.transformer))
    module = family.module_cls(config=model_config, dtype=dtype)
    loaded = jax.device_get(
        module.init(jax.random.key(config.seed), *family.example_inputs(model_config))["params"])
  else:
    checks.require_checkpoint(config)
    module, loaded = loading.load(config.checkpoint, config.model)   # the checkpoint's own dtype
    module = module.clone(dtype=dtype)
  return module, in_dtype(loaded, dtype), loaded


def in_dtype(params, dtype):
  """Host copies of params in `dtype` (the arrays themselves where they already are)."""
  return jax.tree_util.tree_map(lambda x: np.asarray(x, dtype), params)


def trainable_split(config, family, module, params, loaded, blocks):
  """(trainable, frozen, combine, teacher source) for full weights or LoRA of the selection.
  `params` are the weights in the compute dtype, `loaded` as loaded (load_model)."""
  # block_parts ("ff"): only these sub-modules of each selected block train (e.g. weights the
  # attention score does not read, for the planted-knowledge benchmark).
  parts = tuple(p for p in config.get("block_parts", "").split(",") if p)
  if not config.lora_rank:
    selected = blocks_lib.parameter_selector(blocks, module.config, parts)
    _, frozen = loop.split_params(params, selected)
    # Float32 master weights for what trains, from the loaded bits: started from the compute-dtype
    # copy they would begin bf16-rounded. The frozen rest stays in the compute dtype.
    trainable = {k: jnp.asarray(v, jnp.float32)
                 for k, v in loop.split_params(loaded, selected)[0].items()}
    # The teacher is a copy: the step donates the trainable buffers.
    return trainable, frozen, loop.merge_params, lambda t, f: jax.tree_util.tree_map(jnp.copy, t)
  every = blocks if blocks is not None else list(range(module.config.num_blocks))
  targets = (tuple(t.strip() for t in config.lora_targets.split(",") if t.strip())
             if config.get("lora_targets") else family.lora_targets)
  frozen = traverse_util.flatten_dict(params)
  factors = lora.init(frozen, blocks_lib.parameter_selector(every, module.config, parts), config.lora_rank,
                      config.seed, targets)
  return factors, frozen, lora.combiner(config.lora_rank, lora_alpha(config)), lora.base_kernels


def confine_text(loss_fn, config, family, module):
  """loss_fn with the batch's captions reaching only the blocks of config.confine_text_to: every
  other block's cross-attention reads the batch's "neutral" captions instead (the same TextSwap
  localization intervenes with, docs/design.md "Planted knowledge"). Whatever the training images
  teach about what the captions alone say can then enter the network only through those blocks,
  although every selected weight trains. Rows whose caption equals its neutral twin (the class
  prior) are unaffected. loss_fn itself when confine_text_to is empty."""
  blocks = config.get("confine_text_to", "")
  if not blocks:
    return loss_fn
  if family.intervene is not interventions.cross_attention_swap:
    raise ValueError(f"confine_text_to={blocks!r} needs a cross-attention family (PixArt, SANA), "
                     f"not {config.model!r}")
  n = module.config.num_blocks
  chosen = blocks_lib.select_blocks(blocks, n, config.concept, config.k, "with_wo",
                                  module.config.block_labels)
  if chosen is None:
    raise ValueError("confine_text_to='all' confines nothing: leave it empty")
  elsewhere = jnp.asarray([b not in chosen for b in range(n)])

  def confined(params, batch, key, teacher):
    if "neutral" not in batch:
      raise DataError(f"confine_text_to={blocks!r}: the data source {config.data!r} gives no "
                      "'neutral' captions for the other blocks to read")
    neutral = batch["neutral"]["cond"]
    swap = interventions.TextSwap(elsewhere, neutral["caption"], neutral.get("caption_mask"))
    rest = {k: v for k, v in batch.items() if k != "neutral"}
    return loss_fn(params, {**rest, "cond": {**batch["cond"], "text_swap": swap}}, key, teacher)

  return confined


def checkpoints_of(config, workdir: str) -> loop.Checkpoints:
  """The run's checkpoints, as training writes them and export reads them."""
  return loop.Checkpoints(os.path.join(workdir, "checkpoints"), config.get("keep_checkpoints", 2))


def lora_alpha(config) -> float:
  return config.get("lora_alpha") or float(config.lora_rank)   # diffusers' scripts: alpha = rank


def selected_blocks(config, module) -> list[int] | None:
  return blocks_lib.select_blocks(
      config.blocks, module.config.num_blocks, config.get("localized_concept") or config.concept,
      config.k, config.get("score_variant", "with_wo"), module.config.block_labels)


def train(config, workdir: str) -> None:
  family = families.get(config.model)
  dtype = checks.DTYPES[config.get("dtype", "float32")]
  module, params, loaded = load_model(config, family, dtype)
  blocks = selected_blocks(config, module)
  trainable, frozen, combine, teacher_of = trainable_split(config, family, module, params, loaded,
                                                           blocks)
  objective = objectives.get(config.objective)
  folder = config.get("checkpoint") or config.get("pipeline_folder")
  ctx = Context(config, family, folder, workdir, module, params, dtype)
  data = data_lib.get_source(config.data)(ctx, objective)      # bad data fails before any output
  if "pipe" in vars(ctx):     # a data source sampled with it (class images): free its device weights
    ctx.pipe.release_weights()
  noising = Noising.from_scheduler_config(read_scheduler_config(folder),
                                          config.get("weighting_scheme", "none"))

  # cfg families train without guidance; a distilled one gets its guidance input (FLUX-dev).
  guidance = (config.get("guidance_scale", 0) or 1.0) if family.guidance == "distilled" else 1.0
  model = family.predictor(module.clone(remat=config.get("remat", False)), guidance)
  loss_fn = confine_text(objective.make_loss(model, noising, config), config, family, module)
  teacher = teacher_of(trainable, frozen) if objective.needs_teacher else None
  optimizer = loop.make_optimizer(config.learning_rate, config.warmup_steps, config.steps,
                                      config.get("weight_decay", 0.0))
  ema_decay = config.get("ema_decay", 0.0)
  state = loop.init_state(trainable, optimizer, config.seed, ema=ema_decay > 0)

  put = lambda batch: jax.tree_util.tree_map(jnp.asarray, batch)
  devices = jax.devices()[:config.get("num_devices", 0) or None]
  if len(devices) > 1 or config.get("fsdp", 1) > 1:
    mesh = sharding.make_mesh(config.get("fsdp", 1), devices)
    state, frozen = loop.shard_state(state, mesh), sharding.shard_params(frozen, mesh)
    teacher = None if teacher is None else sharding.shard_params(teacher, mesh)
    put = lambda batch: sharding.shard_batch(batch, mesh)
  else:
    frozen = jax.device_put(frozen)   # once, not with every step's call
  checkpoints = checkpoints_of(config, workdir)
  state = checkpoints.restore_latest(state) or state
  if int(state.step):
    print(f"resumed from step {int(state.step)}")

  step_fn = loop.make_train_step(loss_fn, optimizer, frozen, ema_decay, aux=teacher, combine=combine)
  # Every step's batch depends on the seed and the step alone, so a resumed run trains on exactly
  # the batches the uninterrupted run would have.
  draw = lambda step: put(data.draw(np.random.default_rng([config.seed, step]), config.batch_size))
  write_selection(config, workdir, module, blocks, state, params, step_fn, draw(0))
  fixed = put(data.draw(np.random.default_rng([config.seed, 1 << 30]), config.batch_size))
  fixed_loss = jax.jit(lambda tr, fr, aux, batch: loss_fn(combine(tr, fr), batch,
                                                          jax.random.key(config.seed), aux))
  record = os.path.join(workdir, "fixed_batch.json")
  if config.get("fixed_batch_loss", True) and not int(state.step):
    files.write_json(record, {"before": float(fixed_loss(state.trainable, frozen, teacher, fixed))})
  validate = Validation(ctx, combine, frozen) if config.get("validate_every", 0) else None
  state = loop.fit(step_fn, state, draw, config.steps, workdir, checkpoints, config.log_every,
                       config.checkpoint_every, config.get("max_minutes", 0.0), config.objective,
                       callback=validate)
  if int(state.step) < config.steps:
    return                                    # stopped on time: the rerun resumes and exports
  if config.get("fixed_batch_loss", True) and os.path.exists(record):
    files.write_json(record, {**files.read_json(record),
                              "after": float(fixed_loss(state.trainable, frozen, teacher, fixed))})
  export(config, workdir, module, int(state.step), state.ema, state.trainable, loaded, combine)


def export_checkpoint(config, workdir: str, step: int | None = None) -> int:
  """Export a checkpoint of the run in `workdir` (the latest by default) the way the finished run
  would be exported, while the run trains or after it stopped: to look at a long run's weights
  (sample, evaluate) without stopping it. Returns the step exported."""
  if config.lora_rank:
    # export() also writes <workdir>/lora, which would replace the run's own LoRA export.
    raise ValueError("exporting a checkpoint of a LoRA run is not supported yet: it would "
                     "overwrite the run's <workdir>/lora; let the run finish")
  family = families.get(config.model)
  module, params, loaded = load_model(config, family, checks.DTYPES[config.get("dtype", "float32")])
  _, _, combine, _ = trainable_split(config, family, module, params, loaded,
                                     selected_blocks(config, module))
  checkpoints = checkpoints_of(config, workdir)
  step, trainable, ema = checkpoints.weights(step)
  export(config, workdir, module, step, ema, trainable, loaded, combine)
  return step


def write_selection(config, workdir, module, blocks, state, params, step_fn, batch) -> None:
  count = lambda tree: int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))
  labels = module.config.block_labels
  record = {"blocks": blocks if blocks is not None else "all",
            "block_labels": [labels[b] for b in blocks] if blocks is not None else "all",
            "parts": [p for p in config.get("block_parts", "").split(",") if p],
            "lora_rank": config.lora_rank,
            "lora_modules": sorted({".".join(p[:-1]) for p in state.trainable}) if config.lora_rank else [],
            "trainable_parameters": count(state.trainable), "total_parameters": count(params)}
  if config.get("memory_plan", True):
    record["step_memory_bytes"] = step_fn.memory(state, batch)
  files.write_json(os.path.join(workdir, "selection.json"), record)


class Validation:
  """Images of config.validation_prompts every config.validate_every steps, sampled with the
  weights being trained, one PNG row per check in <workdir>/validation/step_<n>.png."""

  def __init__(self, ctx: Context, combine, frozen):
    self.ctx, self.combine, self.frozen = ctx, combine, frozen

  def __call__(self, step: int, state) -> None:
    config = self.ctx.config
    if step % config.validate_every and step != config.steps:
      return
    from PIL import Image
    pipe = self.ctx.pipe
    own = pipe.params
    weights = state.ema if state.ema is not None else state.trainable
    pipe.params = jax.tree_util.tree_map(lambda x: x.astype(self.ctx.dtype),
                                         self.combine(weights, self.frozen))
    try:
      prompts = list(config.validation_prompts)
      images = pipe(prompts, list(range(len(prompts))), *self.ctx.resolution)
    finally:
      pipe.params = own
    path = os.path.join(self.ctx.workdir, "validation", f"step_{step:06d}.png")
    files.write_atomically(path, lambda tmp: Image.fromarray(np.concatenate(list(images), axis=1))
                           .save(tmp, format="PNG"))


def export(config, workdir, module, step: int, ema, trainable, loaded, combine) -> None:
  """The trained transformer (the EMA weights where the run keeps them) as a diffusers folder (+
  the LoRA factors), each written beside its place and renamed into it, so a killed export never
  leaves a folder that looks finished. Only what trained differs from the weights as loaded."""
  final = exported_params(ema if ema is not None else trainable, loaded, combine)
  export_dir = config.get("export_dir") or os.path.join(workdir, "transformer")
  replace_dir(export_dir, lambda tmp: loading.export_diffusers(tmp, config.model, module, final))
  print(f"exported step {step} ({'EMA' if ema is not None else 'raw'} weights) to {export_dir}")
  if config.lora_rank:
    factors = jax.device_get(trainable)
    replace_dir(os.path.join(workdir, "lora"),
                lambda tmp: lora.export_peft(tmp, factors, config.lora_rank, lora_alpha(config)))
    print(f"LoRA weights in {workdir}/lora, for pipe.load_lora_weights(folder) (diffusers) and "
          "PeftModel.from_pretrained(transformer, folder) (PEFT)")


def exported_params(weights, loaded, combine):
  """The weights as loaded with what trained written over them, each tensor in the dtype it was
  loaded in: one that did not train is the loaded array itself (bit-identical, whatever the
  compute dtype); a trained one (a float32 master, or a kernel with its LoRA update merged into
  the loaded kernel) is rounded once, here. The merge runs on the host, in NumPy: an accelerator's
  default matmul precision (bf16 passes on a TPU) would round a LoRA update before it is added."""
  as_loaded = traverse_util.flatten_dict(loaded)
  merged = traverse_util.flatten_dict(combine(jax.device_get(weights), as_loaded))
  return traverse_util.unflatten_dict({k: np.asarray(v, as_loaded[k].dtype) for k, v in merged.items()})


def replace_dir(path: str, write) -> None:
  tmp = path.rstrip("/") + ".partial"
  shutil.rmtree(tmp, ignore_errors=True)
  write(tmp)
  shutil.rmtree(path, ignore_errors=True)
  os.replace(tmp, path)
