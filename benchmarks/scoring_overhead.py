"""What concept scoring costs: denoising that also returns every block's attention contribution of
the concept's tokens, vs plain denoising, on the same prompts, noise and weights.

    python -m benchmarks.scoring_overhead                                    # the Shapes model, CPU
    python -m benchmarks.scoring_overhead --family pixart --folder /path/to/PixArt-XL-2-512x512 \
        --size 512 --prompt "a dog in the snow" --concept dog

Target (issue #7): scoring adds at most 25 % to plain sampling. Writes JSON and prints a table.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from benchmarks import timing
from dit_jax.models.interventions import ConceptProbe
from dit_jax.pipeline.text2image import Text2Image
from dit_jax.shapes import ASSETS


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--family", default="pixart")
  parser.add_argument("--folder", default=str(ASSETS))
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--prompt", default="zork at the top in the snow")
  parser.add_argument("--concept", default="zork")
  parser.add_argument("--max-sequence-length", type=int, default=32)
  parser.add_argument("--iters", type=int, default=5)
  parser.add_argument("--out", default="results/scoring_overhead.json")
  args = parser.parse_args(argv)

  pipe = Text2Image(args.family, args.folder, num_steps=args.steps,
                    max_sequence_length=args.max_sequence_length or None)
  prompts = [args.prompt] * args.batch
  cond = jax.tree_util.tree_map(jnp.asarray, pipe.conditioning(prompts, args.size, args.size))
  scored = {**cond, "concept": ConceptProbe(jnp.asarray(
      pipe.encoder.concept_mask(prompts, [args.concept] * args.batch)))}
  noise = jnp.asarray(jax.random.normal(jax.random.key(0), (args.batch, *pipe.latent_shape(args.size, args.size))))
  sync = lambda out: jax.block_until_ready(out)
  plain = timing.time_call(lambda: pipe.denoise(noise, cond), sync, warmup=1, iters=args.iters)
  with_scores = timing.time_call(lambda: pipe.denoise(noise, scored), sync, warmup=1, iters=args.iters)
  overhead = with_scores["median_ms"] / plain["median_ms"] - 1
  result = {"family": args.family, "folder": args.folder, "size": args.size, "steps": args.steps,
            "batch": args.batch, "device": timing.device_name(), "plain": plain,
            "with_scores": with_scores, "overhead": overhead, "target": 0.25}
  timing.write_result(args.out, result)
  print(f"{'':14}{'median ms':>10}\n{'plain':14}{plain['median_ms']:10.1f}\n"
        f"{'with scores':14}{with_scores['median_ms']:10.1f}\noverhead {100 * overhead:.1f} % "
        f"(target <= 25 %) on {result['device']}")


if __name__ == "__main__":
  main()
