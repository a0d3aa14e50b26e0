"""Text-to-image generation, writing PNGs.

    python -m dit_jax.generate --config configs/pixart.py --config.checkpoint=/path/to/PixArt-XL-2-1024-MS \
        --config.prompt="a dog in the snow" --config.seeds="(0, 1, 2)"

Prompts come from --config.prompt (one) or --config.prompts_file (one a line); every prompt is drawn
once per seed. Images land in --config.generate_dir as <prompt index>_<seed>.png, with prompts.json.
"""
from __future__ import annotations

import json
import os

from absl import app, flags
from ml_collections import config_flags
from PIL import Image
from tqdm import tqdm

from dit_jax import entry
from dit_jax.pipeline import Text2Image

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<model>.py", lock_config=False)


def read_prompts(config) -> list[str]:
  if config.get("prompts_file"):
    with open(config.prompts_file) as f:
      prompts = [line.strip() for line in f if line.strip()]
  else:
    prompts = [config.get("prompt", "")] if config.get("prompt") else []
  if not prompts:
    raise SystemExit("no prompt: pass --config.prompt=\"...\" or --config.prompts_file=FILE")
  return prompts


def main(argv):
  del argv
  config = _CONFIG.value
  entry.require_checkpoint(config)
  pipe = Text2Image(config.model, config.checkpoint, num_steps=config.num_steps,
                    guidance_scale=config.guidance_scale, dtype=entry.DTYPES[config.dtype],
                    transformer=config.transformer or None, cache_dir=config.cache_dir,
                    max_sequence_length=config.max_sequence_length or None)
  prompts = read_prompts(config)
  jobs = [(i, p, s) for i, p in enumerate(prompts) for s in config.seeds]
  out = config.generate_dir
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "prompts.json"), "w") as f:
    json.dump(prompts, f, indent=1)
  for start in tqdm(range(0, len(jobs), config.batch_size), desc="generating", unit="batch"):
    batch = jobs[start:start + config.batch_size]
    images = pipe([p for _, p, _ in batch], [s for _, _, s in batch], config.height, config.width)
    for (i, _, seed), image in zip(batch, images):
      Image.fromarray(image).save(os.path.join(out, f"{i:04d}_{seed}.png"))
  print(f"wrote {len(jobs)} images to {out}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
