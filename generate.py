"""Text-to-image generation, writing PNGs.

    python generate.py --config configs/pixart.py --config.checkpoint=/path/to/PixArt-XL-2-1024-MS \
        --config.generate.prompt="a dog in the snow" --config.sample.seeds="(0, 1, 2)"

Prompts come from --config.generate.prompt (one) or --config.generate.prompts_file (one a line);
every prompt is drawn once per seed (--config.sample.seeds). Images land in
--config.generate.out_dir as <prompt index>_<seed>.png, with prompts.json
({"prompts", "seeds", "images"}). A rerun into the same folder first removes the images the earlier
run listed there, and nothing else, so the folder never mixes two runs.
"""
from __future__ import annotations

import json
import os

from absl import flags
from ml_collections import config_flags
from PIL import Image
from tqdm import tqdm

from dit_jax.pipeline import checks
from dit_jax import cli, sharding
from dit_jax.pipeline.text2image import Text2Image

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<model>.py", lock_config=False)


def read_prompts(generate) -> list[str]:
  """The prompts config.generate names: its prompts_file's lines, or its one prompt."""
  if generate.prompts_file:
    with open(generate.prompts_file) as f:
      prompts = [line.strip() for line in f if line.strip()]
  else:
    prompts = [generate.prompt] if generate.prompt else []
  if not prompts:
    raise SystemExit("no prompt: pass --config.generate.prompt=\"...\" or --config.generate.prompts_file=FILE")
  return prompts


RECORD = "prompts.json"


def image_name(prompt_index: int, seed: int) -> str:
  return f"{prompt_index:04d}_{seed}.png"


def owned_images(out: str) -> list[str]:
  """The images an earlier run recorded in out/prompts.json."""
  path = os.path.join(out, RECORD)
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    record = json.load(f)
  if not isinstance(record, dict):
    print(f"{path} is from an older version and does not list its images: the PNGs in {out} stay")
    return []
  # Plain names only: a hand-edited record must not reach outside the folder.
  return [n for n in record.get("images", []) if n == os.path.basename(n) and n.endswith(".png")]


def start_folder(out: str, prompts: list[str], seeds: list[int], images: list[str]) -> None:
  """Clears what an earlier run wrote to `out` (the user's own files stay) and records this run's
  images before writing any, so an interrupted run is cleared next time too."""
  os.makedirs(out, exist_ok=True)
  for name in owned_images(out):
    if os.path.isfile(os.path.join(out, name)):
      os.remove(os.path.join(out, name))
  with open(os.path.join(out, RECORD), "w") as f:
    json.dump({"prompts": prompts, "seeds": seeds, "images": images}, f, indent=1)


def main(argv):
  del argv
  # Before anything computes: each batch's rows split over every device (config.hosts).
  sharding.one_cpu_device_per_core()
  config = _CONFIG.value
  checks.validate_generate_config(config)
  checks.require_checkpoint(config)
  checks.require_pipeline(config)
  prompts = read_prompts(config.generate)
  sample, generate = config.sample, config.generate
  pipe = Text2Image(config.model, config.checkpoint, num_steps=sample.num_steps,
                    guidance_scale=sample.guidance_scale, dtype=checks.DTYPES[config.dtype],
                    transformer=generate.transformer or None, cache_dir=generate.cache_dir,
                    max_sequence_length=config.max_sequence_length or None)
  pipe.use_local_devices(config.hosts.num_devices, config.hosts.fsdp)
  jobs = [(i, p, s) for i, p in enumerate(prompts) for s in sample.seeds]
  out = generate.out_dir
  start_folder(out, prompts, list(sample.seeds), [image_name(i, s) for i, _, s in jobs])
  for start in tqdm(range(0, len(jobs), generate.batch_size), desc="generating", unit="batch"):
    batch = jobs[start:start + generate.batch_size]
    images = pipe([p for _, p, _ in batch], [s for _, _, s in batch], sample.height, sample.width)
    for (i, _, seed), image in zip(batch, images):
      Image.fromarray(image).save(os.path.join(out, image_name(i, seed)))
  print(f"wrote {len(jobs)} image{'' if len(jobs) == 1 else 's'} to {out}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  cli.run_cli(main)
