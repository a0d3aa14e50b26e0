"""The Shapes world's tokenizer and text encoder, in the transformers on-disk format.

They load exactly as PixArt's T5 does (AutoTokenizer / T5EncoderModel.from_pretrained), so the
pipeline has one code path for both. The tokenizer is word level over world.vocabulary() with T5's
special ids (pad 0, eos 1, unk 2) and an eos appended, and keeps character offsets so concept spans
are found with offset mappings. The encoder is a tiny T5 v1.1-style encoder, randomly initialised
from a fixed seed and never trained: the DiT learns to read whatever fixed features it gives.

  python -m dit_jax.shapes.text --out dit_jax/shapes/assets      # writes tokenizer/ and text_encoder/
"""
from __future__ import annotations

import argparse
import json
import pathlib

from dit_jax.shapes import world

from dit_jax.shapes import ASSETS
SPECIAL = ("<pad>", "</s>", "<unk>")
MAX_LENGTH = 32  # the longest caption is 14 tokens with eos
ENCODER_CONFIG = dict(d_model=64, d_kv=16, num_heads=4, d_ff=128, num_layers=2,
                      feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                      relative_attention_max_distance=64, dropout_rate=0.0,
                      tie_word_embeddings=False)


def build_tokenizer():
  """A transformers PreTrainedTokenizerFast over the world's words."""
  from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
  from transformers import PreTrainedTokenizerFast
  vocab = {tok: i for i, tok in enumerate(list(SPECIAL) + world.vocabulary())}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.normalizer = normalizers.Lowercase()
  # Words and punctuation runs, each with its character offsets.
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.post_processor = processors.TemplateProcessing(
      single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])])
  return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                 unk_token="<unk>", model_max_length=MAX_LENGTH,
                                 padding_side="right")


def build_encoder(vocab_size: int, seed: int = 0):
  """The random, frozen T5 encoder (float32, eval mode)."""
  import torch
  from transformers import T5Config, T5EncoderModel
  config = T5Config(vocab_size=vocab_size, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                    **ENCODER_CONFIG)
  torch.manual_seed(seed)
  model = T5EncoderModel(config).eval()
  for p in model.parameters():
    p.requires_grad_(False)
  return model


def build_text_assets(out: str | pathlib.Path, seed: int = 0) -> pathlib.Path:
  """Write out/tokenizer/ and out/text_encoder/ (deterministic for a given seed and torch build)."""
  out = pathlib.Path(out)
  tokenizer = build_tokenizer()
  tokenizer.save_pretrained(out / "tokenizer")
  # transformers 5 writes its new class name; the old alias loads in transformers 4 and 5 alike.
  config_path = out / "tokenizer" / "tokenizer_config.json"
  config = json.loads(config_path.read_text())
  config.pop("backend", None)
  config["tokenizer_class"] = "PreTrainedTokenizerFast"
  config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
  build_encoder(len(tokenizer), seed).save_pretrained(out / "text_encoder",
                                                      safe_serialization=True)
  return out


def load_text_assets(folder: str | pathlib.Path = ASSETS):
  """(tokenizer, encoder) from folder/tokenizer and folder/text_encoder, offline."""
  from transformers import AutoTokenizer, T5EncoderModel
  folder = pathlib.Path(folder)
  if not (folder / "text_encoder").is_dir():
    raise FileNotFoundError(f"no Shapes text encoder under {folder}; build it with "
                            f"`python -m dit_jax.shapes.text --out {folder}`")
  tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
  encoder = T5EncoderModel.from_pretrained(folder / "text_encoder", local_files_only=True).eval()
  return tokenizer, encoder


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default=str(ASSETS))
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  print(build_text_assets(args.out, args.seed))


if __name__ == "__main__":
  main()
