"""Helpers shared by the parity tests."""
import numpy as np


def rel_error(actual, expected) -> float:
  """||actual - expected|| / ||expected|| over the whole array, in float64."""
  actual = np.asarray(actual, dtype=np.float64)
  expected = np.asarray(expected, dtype=np.float64)
  assert actual.shape == expected.shape, (actual.shape, expected.shape)
  return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def nchw_to_nhwc(x):
  return np.transpose(np.asarray(x), (0, 2, 3, 1))


def save_word_tokenizer(folder, words=("a", "dog", "cat", "in", "the", "snow", "style", "of", "van",
                                        "gogh", "photo", "red", "blue", "car", "person")):
  """A tiny word-level tokenizer (pad=0, eos=1, unk=2) saved so AutoTokenizer.from_pretrained loads it."""
  from tokenizers import Tokenizer, models, pre_tokenizers, processors
  from transformers import PreTrainedTokenizerFast
  vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                 unk_token="<unk>", model_max_length=512)
  fast.save_pretrained(folder)
  return fast


def set_keys(config, **values):
  """Set a localize/generate config's keys by their leaf names (ks=..., seeds=...): each goes to
  its stage's subtree (dit_jax.cli.MOVED), others stay at the top level. Returns the config."""
  from dit_jax.cli import MOVED
  for key, value in values.items():
    node, path = config, MOVED.get(key, key).split(".")
    for part in path[:-1]:
      node = node[part]
    node[path[-1]] = value
  return config
