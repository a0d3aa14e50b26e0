"""Convert DiT checkpoints between PyTorch layouts and Flax.

    python convert.py --model pixart --src PixArt-XL-2-1024-MS/ --dst pixart_flax/
    python convert.py --model pixart --src PixArt-XL-2-512x512.pth --dst out/ --set sample_size=64
    python convert.py --model pixart --src pixart_flax/ --dst pixart_diffusers/ --to diffusers

--src: a diffusers folder (pipeline or transformer/), an original single-file checkpoint, or a Flax
checkpoint written by this tool. --to flax (default) writes an orbax checkpoint; --to diffusers
writes a diffusers model folder that diffusers' from_pretrained loads.
"""
from __future__ import annotations

import argparse
import ast
import sys
import time

from dit_jax import families
from dit_jax.pipeline import loading
from dit_jax.pipeline.checks import DTYPES



def parse_override(text: str):
  key, sep, value = text.partition("=")
  if not sep:
    raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE, got {text!r}")
  try:
    return key, ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return key, value


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python convert.py", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", required=True, choices=families.names())
  parser.add_argument("--src", required=True, help="diffusers folder, original file or Flax checkpoint")
  parser.add_argument("--dst", required=True, help="output folder")
  parser.add_argument("--to", choices=("flax", "diffusers"), default="flax")
  parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                      help="cast the weights (default: keep the checkpoint's dtype)")
  parser.add_argument("--set", type=parse_override, action="append", default=[], metavar="KEY=VALUE",
                      help="config value an original checkpoint does not record (e.g. sample_size=128)")
  args = parser.parse_args(argv)

  start = time.time()
  try:
    module, params = loading.load(args.src, args.model, DTYPES.get(args.dtype), **dict(args.set))
  except (ValueError, FileNotFoundError) as error:   # CheckpointError is a ValueError
    print(f"error: {error}", file=sys.stderr)
    return 2
  if args.to == "flax":
    loading.save_flax(args.dst, args.model, module, params)
  else:
    loading.export_diffusers(args.dst, args.model, module, params)
  print(f"{args.model}: {args.src} -> {args.dst} ({args.to}) in {time.time() - start:.1f}s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
