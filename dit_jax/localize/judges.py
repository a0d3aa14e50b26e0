"""Judges of knowledge presence: does image i show the concept of pairs[i]?

    judge = make_judge("shapes")                         # the Shapes world's (dit_jax.shapes.plugin)
    judge = make_judge("clip", ks, folder="/models/clip-vit-base-patch32")   # ks: KnowledgeSet
    judge = make_judge("clip", ks, folder="openai/clip-vit-base-patch32")    # or a Hub id
    scores = judge.presence(images, pairs)               # (N,) in [0, 1]; images uint8 (N, H, W, 3)
    judge.calibrate({"animal": scores_on_neutral_images})   # CLIP: thresholds from neutral prompts
    hits = judge.present(images, pairs)                  # scores >= judge.threshold_for(category)
    results["judge"] = judge.describe()                  # name, version, thresholds, file hashes

Evaluators drift between papers, so every result records describe() (docs/design.md, "Judges").

Plugging in another judge (a CSD style similarity, a VLM answering yes/no): subclass Judge,
implement `_presence(images, pairs)` (and `weight_files()` / `version()` where it has files), and
register it:

    @register_judge("vlm")
    class VLMJudge(Judge):
      def __init__(self, folder, threshold=0.5): ...
      def _presence(self, images, pairs):   # P("yes") to "Is there {pair.concept} in the image?"
        ...
"""
from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import numpy as np

from dit_jax import files, registry
from dit_jax.pipeline import hub
from dit_jax.knowledge import PromptPair

JUDGES = registry.Registry("judge")


def register_judge(name: str, cls=None):
  """Make a Judge class available as make_judge(name, ...): register_judge(name, cls), or as a class
  decorator."""
  def register(cls):
    cls.name = name
    JUDGES.register(name, cls)
    return cls
  return register if cls is None else register(cls)


def make_judge(name: str, knowledge_set=None, **kwargs) -> "Judge":
  """The judge registered as `name`; knowledge_set (optional) lets it fill in what it judges
  against (CLIP: the candidate concepts of each category)."""
  if name not in JUDGES:
    raise ValueError(f"unknown judge {name!r}; registered judges are {sorted(JUDGES)} "
                     "(add one with @register_judge; a plugin's judge needs the plugin in "
                     "config.plugins)")
  return JUDGES[name].for_knowledge(knowledge_set, **kwargs)


def check_images(images) -> np.ndarray:
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"judges take uint8 RGB images (N, H, W, 3), as the pipelines return, got "
                     f"{images.dtype} {images.shape}; convert [-1, 1] floats with "
                     "dit_jax.diffusion.latents.to_uint8")
  return images


class Judge:
  """Base class: presence(images, pairs) -> (N,) score in [0, 1], 1 = concept of pairs[i] seen."""
  name = "judge"

  # None: the threshold is fixed (a classifier's decision rule). A quantile q: calibrate() sets each
  # category's threshold to the q-quantile of presence on images of the neutral prompt, so at most
  # 1 - q of the images without the concept count as showing it.
  calibration_quantile: float | None = None

  def __init__(self, threshold: float = 0.5):
    self.threshold = float(threshold)
    self.calibration: dict[str, dict] = {}
    self._hashes = None

  @classmethod
  def for_knowledge(cls, knowledge_set=None, **kwargs) -> "Judge":
    """Build the judge for a run on `knowledge_set` (None outside a run)."""
    del knowledge_set
    return cls(**kwargs)

  def _presence(self, images: np.ndarray, pairs: list[PromptPair]) -> np.ndarray:
    raise NotImplementedError

  def version(self) -> str:
    return "1"

  def weight_files(self) -> list[pathlib.Path]:
    """Files whose content decides the scores; describe() records their sha256."""
    return []

  def details(self) -> dict:
    """Further settings that decide the scores (texts, candidates), for describe()."""
    return {}

  def describe(self) -> dict:
    # Hashing a CLIP checkpoint takes a second or two: do it once.
    if getattr(self, "_hashes", None) is None:
      self._hashes = {p.name: files.sha256(p) for p in self.weight_files()}
    cls = type(self)
    return {"name": self.name, "class": f"{cls.__module__}.{cls.__qualname__}",
            "version": self.version(), "threshold": self.threshold, "files": dict(self._hashes),
            "calibration": {c: dict(v) for c, v in self.calibration.items()}, **self.details()}

  def calibrate(self, neutral_presence: dict[str, Sequence[float]]) -> None:
    """Per-category thresholds from presence scored on images of the neutral prompt (category ->
    the scores of its concepts on them); a no-op for a judge with a fixed threshold. An empty dict
    undoes the calibration."""
    self.calibration = {}
    if self.calibration_quantile is None:
      return
    for category, scores in neutral_presence.items():
      scores = np.asarray(scores, np.float64)
      self.calibration[category] = {
          "quantile": self.calibration_quantile, "images": int(scores.size),
          "threshold": float(np.quantile(scores, self.calibration_quantile)),
          "neutral_presence_mean": float(scores.mean())}

  def threshold_for(self, category: str) -> float:
    """The calibrated threshold of `category`, else the judge's own."""
    return self.calibration.get(category, {}).get("threshold", self.threshold)

  def chance(self, category: str) -> float | None:
    """Presence a judge guessing blindly would give (the verdict's floor); None: not stated."""
    del category
    return None

  def context(self, images, pairs: Sequence[PromptPair]) -> np.ndarray | None:
    """(N,) how well image i keeps the rest of its prompt (what is not the concept), for the
    verdict's specificity test; None where the judge cannot tell."""
    del images, pairs
    return None

  def second_opinion(self, images, pairs: Sequence[PromptPair]) -> dict | None:
    """A second judge's reading of the same images, where the knowledge set has one independent of
    this judge (the Shapes world's pixel judge): {"judge": its name, "first": [bool], "second":
    [bool]}, per image whether this judge and the other read the pair's concept. None where there
    is no second judge for the pairs' category: the run then reports one judge's word only."""
    del images, pairs
    return None

  def presence(self, images, pairs: Sequence[PromptPair]) -> np.ndarray:
    images, pairs = check_images(images), list(pairs)
    if len(images) != len(pairs):
      raise ValueError(f"{len(images)} images but {len(pairs)} prompt pairs")
    scores = np.asarray(self._presence(images, pairs), np.float64)
    if scores.shape != (len(pairs),) or not np.all((scores >= 0) & (scores <= 1)):
      raise ValueError(f"judge {self.name!r} returned scores of shape {scores.shape} outside "
                       "[0, 1]; _presence must give one probability per image")
    return scores

  def present(self, images, pairs: Sequence[PromptPair]) -> np.ndarray:
    thresholds = np.array([self.threshold_for(p.category) for p in pairs])
    return self.presence(images, pairs) >= thresholds


# ------------------------------------------------------------------ CLIP
CLIP_TEXTS = {"style": "a photo in the style of {}"}   # the paper's texts (docs/design.md, "The method")
CLIP_DEFAULT_TEXT = "a photo of {}"
CLIP_NEUTRAL_TEXT = "a photo"   # a category whose neutral prompt drops a clause (style) has no phrase
CLIP_EXPECTED = ("config.json", "model.safetensors (or pytorch_model.bin)",
                 "preprocessor_config.json", "tokenizer.json (or vocab.json + merges.txt)")


@register_judge("clip")
class CLIPJudge(Judge):
  """CLIP zero-shot: presence = softmax, over the texts ("a photo of {k}") of every candidate
  concept of the category and of its neutral phrase ("a photo of a person"), of the image's scaled
  cosine similarity, taken at the right concept. candidates: category -> concepts (in a run, the
  whole category of the knowledge set, not only the concepts localized); a category without
  candidates competes among the concepts that the judged pairs name. neutral: category -> neutral
  phrase (None: CLIP_NEUTRAL_TEXT). An image of the neutral prompt should go to the neutral text:
  the threshold is calibrated on such images (calibration_quantile, see Judge.calibrate).
  folder: a local CLIP folder, or a Hub id ("openai/clip-vit-base-patch32", at `revision`) fetched
  into the Hugging Face cache (dit_jax/pipeline/hub.py).
  """

  def __init__(self, folder: str | pathlib.Path, candidates: dict[str, Sequence[str]] | None = None,
               threshold: float = 0.5, texts: dict[str, str] | None = None, batch_size: int = 32,
               device: str = "cpu", neutral: dict[str, str | None] | None = None,
               calibration_quantile: float | None = 0.95, revision: str | None = None):
    import torch
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel
    super().__init__(threshold)
    folder = pathlib.Path(hub.resolve_folder(os.fspath(folder), revision))
    self.folder, self._files = folder, _clip_files(folder)
    self.candidates = {c: tuple(k) for c, k in (candidates or {}).items()}
    self.texts = {**CLIP_TEXTS, **(texts or {})}
    self.neutral_texts = {c: self.text_for(c, p) if p else CLIP_NEUTRAL_TEXT
                          for c, p in (neutral or {}).items()}
    self.calibration_quantile = calibration_quantile
    self.batch_size, self.device, self._torch = batch_size, device, torch
    self.model = CLIPModel.from_pretrained(self.folder).eval().to(device)
    self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
    self.image_processor = CLIPImageProcessor.from_pretrained(self.folder)
    self._text_cache: dict[str, np.ndarray] = {}

  @classmethod
  def for_knowledge(cls, knowledge_set=None, folder: str = "", **kwargs) -> "CLIPJudge":
    """In a run, concepts compete within their category of the knowledge set."""
    if not folder:
      raise SystemExit("the CLIP judge needs a CLIP model: --config.judge.args.folder=/path to a "
                       "local folder, or a Hub id such as openai/clip-vit-base-patch32")
    if knowledge_set is not None:
      kwargs.setdefault("candidates", knowledge_set.concepts)
      kwargs.setdefault("neutral", knowledge_set.neutral)
    return cls(folder, **kwargs)

  def version(self) -> str:
    import transformers
    return f"transformers {transformers.__version__}"

  def weight_files(self) -> list[pathlib.Path]:
    return self._files

  def details(self) -> dict:
    return {"texts": {**self.texts, "default": CLIP_DEFAULT_TEXT},
            "candidates": {c: list(k) for c, k in self.candidates.items()},
            "neutral_texts": {**self.neutral_texts, "default": CLIP_NEUTRAL_TEXT},
            "calibration_quantile": self.calibration_quantile}

  def text_for(self, category: str, concept: str) -> str:
    return self.texts.get(category, CLIP_DEFAULT_TEXT).format(concept)

  def image_features(self, images) -> np.ndarray:
    """(N, D) unit-norm image embeddings."""
    images, out = check_images(images), []
    for start in range(0, len(images), self.batch_size):
      batch = self.image_processor(images=list(images[start:start + self.batch_size]),
                                   return_tensors="pt")
      with self._torch.no_grad():
        feats = self.model.get_image_features(pixel_values=batch["pixel_values"].to(self.device))
      out.append(_unit(_pooled(feats)))
    return np.concatenate(out)

  def text_features(self, texts: Sequence[str]) -> np.ndarray:
    """(T, D) unit-norm text embeddings (cached per text)."""
    missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
    max_length = min(self.tokenizer.model_max_length,
                     self.model.config.text_config.max_position_embeddings)
    for start in range(0, len(missing), self.batch_size):
      chunk = missing[start:start + self.batch_size]
      tokens = self.tokenizer(chunk, padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt")
      with self._torch.no_grad():
        tokens = {k: tokens[k].to(self.device) for k in ("input_ids", "attention_mask")}
        feats = self.model.get_text_features(**tokens)
      self._text_cache.update(zip(chunk, _unit(_pooled(feats))))
    return np.stack([self._text_cache[t] for t in texts])

  def similarity(self, images, texts: Sequence[str]) -> np.ndarray:
    """(N, T) raw cosine similarity."""
    return self.image_features(images) @ self.text_features(texts).T

  def concept_similarity(self, images, pairs: Sequence[PromptPair]) -> np.ndarray:
    """(N,) cosine similarity of image i to its own concept's text: the paper's CLIP score."""
    if len(images) != len(pairs):
      raise ValueError(f"{len(images)} images but {len(pairs)} prompt pairs")
    texts = [self.text_for(p.category, p.concept) for p in pairs]
    return np.einsum("nd,nd->n", self.image_features(images), self.text_features(texts))

  def chance(self, category: str) -> float | None:
    """One in (candidates + the neutral text) of the category, where the candidates are known."""
    options = self.candidates.get(category)
    return 1.0 / (len(options) + 1) if options else None

  def context(self, images, pairs: Sequence[PromptPair]) -> np.ndarray:
    """Cosine similarity of each image to its neutral prompt: the prompt without the concept."""
    if len(images) != len(pairs):
      raise ValueError(f"{len(images)} images but {len(pairs)} prompt pairs")
    texts = [p.neutral for p in pairs]
    return np.einsum("nd,nd->n", self.image_features(images), self.text_features(texts))

  def _presence(self, images, pairs):
    feats = self.image_features(images)
    scale = self.model.logit_scale.exp().item()
    scores = np.empty(len(pairs))
    for category in dict.fromkeys(p.category for p in pairs):
      rows = [i for i, p in enumerate(pairs) if p.category == category]
      named = tuple(dict.fromkeys(pairs[i].concept for i in rows))
      options = self.candidates.get(category) or named
      if len(options) < 2:
        raise ValueError(f"CLIP presence for {category!r} needs at least two candidate concepts to "
                         f"compare, got {list(options)}: pass candidates={{category: concepts}}")
      texts = [self.text_for(category, k) for k in options]
      texts.append(self.neutral_texts.get(category, CLIP_NEUTRAL_TEXT))   # the concept withheld
      logits = scale * feats[rows] @ self.text_features(texts).T
      probs = np.exp(logits - logits.max(-1, keepdims=True))
      probs /= probs.sum(-1, keepdims=True)
      for row, i in enumerate(rows):
        if pairs[i].concept not in options:
          raise ValueError(f"{pairs[i].concept!r} is not among the {category!r} candidates "
                           f"{list(options)}")
        scores[i] = probs[row, options.index(pairs[i].concept)]
    return scores


def _pooled(feats) -> np.ndarray:
  # transformers 5 returns a model output whose pooler_output is the projected embedding.
  feats = getattr(feats, "pooler_output", feats)
  return feats.float().cpu().numpy()


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _clip_files(folder: pathlib.Path) -> list[pathlib.Path]:
  """The files a CLIP folder must hold (those hashed into describe()), or a FileNotFoundError."""
  weights = sorted(folder.glob("model*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
  tokenizer = ([folder / "tokenizer.json"] if (folder / "tokenizer.json").is_file()
               else [folder / "vocab.json", folder / "merges.txt"])
  files = [folder / "config.json", *weights, folder / "preprocessor_config.json", *tokenizer]
  missing = [p.name for p in files if not p.is_file()] + ([] if weights else ["model.safetensors"])
  if missing:
    raise FileNotFoundError(
        f"no CLIP model in {folder}: missing {missing}. Expected {', '.join(CLIP_EXPECTED)}: "
        "a folder written by CLIPModel.save_pretrained + CLIPProcessor.save_pretrained, such as a "
        "local copy of openai/clip-vit-base-patch32 (the paper's judge)")
  extra = [folder / n for n in ("tokenizer_config.json", "special_tokens_map.json")]
  return files + [p for p in extra if p.is_file()]
