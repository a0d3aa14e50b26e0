"""Pretraining the Shapes model: a small PixArt on 32x32 pixels of the Shapes world.

    python train.py --config configs/shapes_pretrain.py
    python train.py --config configs/shapes_pretrain.py --config.steps=200 --config.workdir=/tmp/run

The run resumes from its latest checkpoint in `workdir`; at the end the EMA weights are exported as
a diffusers folder into `export_dir` (dit_jax/shapes/assets/transformer).
"""
import ml_collections

from dit_jax.shapes import ASSETS


def get_config():
  config = ml_collections.ConfigDict()
  config.task = "pretrain_shapes"
  config.plugins = ("dit_jax.shapes.plugin",)
  config.model = "pixart"
  # 12 blocks (the smallest the design allows), 3 heads x 32, 4x4 pixel patches -> 64 tokens.
  # The objective (v-prediction, cosine schedule) is the scheduler config in dit_jax/shapes/model.py.
  config.transformer = ml_collections.ConfigDict(dict(
      num_layers=12, num_attention_heads=3, attention_head_dim=32, cross_attention_dim=96,
      in_channels=3, out_channels=3, patch_size=4, sample_size=32, caption_channels=64,
      interpolation_scale=1, use_additional_conditions=False))
  config.pipeline_folder = str(ASSETS)     # text encoder, tokenizer, scheduler config
  config.export_dir = str(ASSETS / "transformer")
  config.workdir = "runs/shapes_pretrain"
  config.fresh = False         # True: restart a workdir that holds another run

  config.num_images = 16000
  config.p_neutral = 0.15      # per-attribute neutral dropout (docs/design.md, "The Shapes world")
  config.p_empty = 0.1         # whole-caption dropout, for classifier-free guidance
  config.steps = 12500         # the shipped model: 5000, then resumed to 12500 (MODEL_CARD.md)
  config.batch_size = 32
  config.learning_rate = 1e-3
  config.warmup_steps = 200
  config.weight_decay = 0.0
  config.ema_decay = 0.999
  config.seed = 0
  config.log_every = 25
  config.checkpoint_every = 250
  config.max_minutes = 0.0     # stop (after a checkpoint) once this much wall time is spent; 0: no limit
  return config
