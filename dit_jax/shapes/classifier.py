"""The Shapes world's classifier: a small CNN with one classification head per knowledge category.

Trained on clean renders of all attribute combinations with the renderer's labels (plus mild noise
and colour jitter, so that slightly-off samples from a generator are still read), scored on fresh
scenes and on fresh renders of the held-out combinations. Shipped under dit_jax/shapes/assets/judge/:
params.safetensors and judge.json (config, classes, accuracy per head, and the params' sha256,
which results should record).

  python -m dit_jax.shapes.classifier --train --out dit_jax/shapes/assets/judge
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
import optax
from flax import traverse_util
from tqdm import tqdm

from dit_jax import files
from dit_jax.shapes import ASSETS, render, world

DEFAULT_DIR = ASSETS / "judge"
HEADS = tuple(world.JUDGE_CLASSES)


class JudgeNet(nn.Module):
  """conv stack down to 4x4, flattened (not pooled: position is a label), a shared dense layer,
  one linear head per category."""
  widths: tuple[int, ...] = (24, 48, 64, 96)
  hidden: int = 96
  num_classes: tuple[tuple[str, int], ...] = tuple(
      (h, len(c)) for h, c in world.JUDGE_CLASSES.items())

  @nn.compact
  def __call__(self, images):
    x = images
    for i, width in enumerate(self.widths):
      # First layer keeps full resolution: textures have a 3-4 pixel period.
      x = nn.relu(nn.Conv(width, (3, 3), strides=1 if i == 0 else 2, name=f"conv{i}")(x))
    x = nn.relu(nn.Dense(self.hidden, name="hidden")(x.reshape(x.shape[0], -1)))
    return {head: nn.Dense(n, name=f"head_{head}")(x) for head, n in self.num_classes}


@dataclasses.dataclass
class TrainConfig:
  num_train: int = 12000
  num_eval: int = 1000
  num_heldout_eval: int = 500
  steps: int = 1500
  batch_size: int = 64
  learning_rate: float = 2e-3
  noise_max: float = 0.08      # per-image Gaussian noise std, uniform in [0, noise_max]
  gain_jitter: float = 0.05    # per-channel multiplicative jitter (on [0, 1] images)
  seed: int = 0
  # All combinations, held-out ones included: the judge must read whatever a generator draws.
  # Trained on the "train" split only, it learned shortcuts (zork is never in the sky) and scored
  # 87% on the character head for held-out (character, place) pairs.
  split: str = "any"


def make_dataset(seed: int, n: int, split: str, desc: str = "render"):
  """(images (n, 32, 32, 3), labels {head: (n,) int32}) from the scene sampler."""
  scenes = world.scenes(seed, n, split)
  images = np.stack([render.render(s) for s in tqdm(scenes, desc=desc, leave=False)])
  labels = {h: np.array([s.labels()[h] for s in scenes], np.int32) for h in HEADS}
  return images, labels


def _augment(key, images, config: TrainConfig):
  k_noise, k_std, k_gain = jax.random.split(key, 3)
  n = images.shape[0]
  std = jax.random.uniform(k_std, (n, 1, 1, 1), maxval=config.noise_max)
  gain = 1.0 + config.gain_jitter * jax.random.uniform(k_gain, (n, 1, 1, 3), minval=-1, maxval=1)
  images = ((images + 1.0) * gain - 1.0) + std * 2.0 * jax.random.normal(k_noise, images.shape)
  return jnp.clip(images, -1.0, 1.0)


def _loss(params, net, images, labels):
  logits = net.apply({"params": params}, images)
  losses = [optax.softmax_cross_entropy_with_integer_labels(logits[h], labels[h]).mean()
            for h in HEADS]
  return sum(losses)


def accuracy(judge_fn, images, labels) -> dict[str, float]:
  preds = judge_fn(images)
  return {h: float(np.mean(preds[h].labels == labels[h])) for h in HEADS}


def train(config: TrainConfig = TrainConfig(), out: str | pathlib.Path | None = None):
  """Train the judge; returns (params, report). Writes params + judge.json into `out` if given."""
  start = time.time()
  train_x, train_y = make_dataset(config.seed, config.num_train, config.split, "render train")
  net = JudgeNet()
  key = jax.random.PRNGKey(config.seed)
  params = net.init(key, jnp.zeros((1, render.SIZE, render.SIZE, 3)))["params"]
  schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, 100, config.steps)
  opt = optax.adam(schedule)
  opt_state = opt.init(params)

  @jax.jit
  def step(params, opt_state, key, images, labels):
    images = _augment(key, images, config)
    loss, grads = jax.value_and_grad(_loss)(params, net, images, labels)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  rng = np.random.default_rng(config.seed)
  bar = tqdm(range(config.steps), desc="train judge")
  for i in bar:
    idx = rng.integers(0, config.num_train, config.batch_size)
    key, sub = jax.random.split(key)
    params, opt_state, loss = step(params, opt_state, sub,
                                   train_x[idx], {h: y[idx] for h, y in train_y.items()})
    if i % 50 == 0:
      bar.set_postfix(loss=f"{float(loss):.4f}")

  judge_fn = Classifier(params, net)
  # Fresh scenes: seeds disjoint from training (scene i of seed s uses s * 1_000_003 + i).
  eval_sets = {"fresh": make_dataset(config.seed + 1, config.num_eval, "any", "render eval"),
               "heldout_combinations": make_dataset(config.seed + 2, config.num_heldout_eval,
                                                    "heldout", "render heldout")}
  report = {name: accuracy(judge_fn, x, y) for name, (x, y) in eval_sets.items()}
  report["train_seconds"] = round(time.time() - start, 1)
  if out is not None:
    save(params, config, report, out)
  return params, report


def save(params, config: TrainConfig, report: dict, out: str | pathlib.Path) -> pathlib.Path:
  from safetensors.numpy import save_file
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  flat = {"/".join(k): np.asarray(v, np.float32)
          for k, v in traverse_util.flatten_dict(jax.device_get(params)).items()}
  save_file(flat, out / "params.safetensors")
  meta = {"format": "dit_jax.shapes.judge/1", "net": {"widths": list(JudgeNet.widths),
                                                      "hidden": JudgeNet.hidden},
          "classes": {h: list(c) for h, c in world.JUDGE_CLASSES.items()},
          "train_config": dataclasses.asdict(config), "accuracy": report,
          "params_sha256": files.sha256(out / "params.safetensors"),
          "versions": {"jax": jax.__version__, "flax": _flax_version()}}
  (out / "judge.json").write_text(json.dumps(meta, indent=2) + "\n")
  return out


def _flax_version():
  import flax
  return flax.__version__


class HeadPrediction(NamedTuple):
  labels: np.ndarray   # (N,) int class index
  probs: np.ndarray    # (N, C) softmax probabilities
  classes: tuple[str, ...]

  @property
  def names(self) -> list[str]:
    return [self.classes[i] for i in self.labels]


class Classifier:
  """judge(images) -> {category: HeadPrediction}; images (N, 32, 32, 3) in [-1, 1]."""

  def __init__(self, params, net: JudgeNet | None = None, meta: dict | None = None):
    self.params, self.net, self.meta = params, net or JudgeNet(), meta or {}
    self._apply = jax.jit(lambda p, x: jax.tree_util.tree_map(
        jax.nn.softmax, self.net.apply({"params": p}, x)))

  def __call__(self, images, batch_size: int = 512) -> dict[str, HeadPrediction]:
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1:] != (render.SIZE, render.SIZE, 3):
      raise ValueError(f"the judge takes (N, {render.SIZE}, {render.SIZE}, 3) images in [-1, 1] "
                       f"(NHWC), got shape {images.shape}")
    chunks = [self._apply(self.params, images[i:i + batch_size])
              for i in range(0, len(images), batch_size)]
    probs = {h: np.concatenate([np.asarray(c[h]) for c in chunks]) for h in HEADS}
    return {h: HeadPrediction(p.argmax(-1), p, world.JUDGE_CLASSES[h]) for h, p in probs.items()}

  def concept_probability(self, images, category: str, concept: str) -> np.ndarray:
    """(N,) probability that each image shows `concept`: the knowledge-presence score."""
    classes = world.JUDGE_CLASSES[category]
    if concept not in classes:
      raise ValueError(f"{concept!r} is not a {category!r} class; those are {classes}")
    return self(images)[category].probs[:, classes.index(concept)]

  @property
  def sha256(self) -> str | None:
    return self.meta.get("params_sha256")


def load_classifier(folder: str | pathlib.Path = DEFAULT_DIR) -> Classifier:
  """The shipped judge (or one trained into `folder`); checks the params file's hash."""
  from safetensors.numpy import load_file
  folder = pathlib.Path(folder)
  meta_path, params_path = folder / "judge.json", folder / "params.safetensors"
  if not meta_path.exists() or not params_path.exists():
    raise FileNotFoundError(
        f"no judge in {folder} (expected judge.json and params.safetensors); "
        f"train one with `python -m dit_jax.shapes.classifier --train --out {folder}`")
  meta = json.loads(meta_path.read_text())
  digest = files.sha256(params_path)
  if digest != meta["params_sha256"]:
    raise ValueError(f"{params_path} has sha256 {digest}, but judge.json records "
                     f"{meta['params_sha256']}: the weights changed since they were scored")
  if {h: tuple(c) for h, c in meta["classes"].items()} != world.JUDGE_CLASSES:
    raise ValueError(f"judge in {folder} was trained for classes {meta['classes']}, but the world "
                     f"now has {world.JUDGE_CLASSES}; retrain it")
  params = traverse_util.unflatten_dict({tuple(k.split("/")): jnp.asarray(v)
                                         for k, v in load_file(params_path).items()})
  net = JudgeNet(widths=tuple(meta["net"]["widths"]), hidden=meta["net"]["hidden"])
  return Classifier(params, net, meta)


_DEFAULT: Classifier | None = None


def judge(images) -> dict[str, HeadPrediction]:
  """Predictions of the shipped judge (loaded once)."""
  global _DEFAULT
  if _DEFAULT is None:
    _DEFAULT = load_classifier()
  return _DEFAULT(images)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--train", action="store_true", help="train a judge and write it to --out")
  parser.add_argument("--out", default=str(DEFAULT_DIR))
  parser.add_argument("--steps", type=int, default=TrainConfig.steps)
  parser.add_argument("--num-train", type=int, default=TrainConfig.num_train)
  parser.add_argument("--seed", type=int, default=TrainConfig.seed)
  args = parser.parse_args(argv)
  if not args.train:
    report = load_classifier(args.out).meta["accuracy"]
  else:
    config = TrainConfig(steps=args.steps, num_train=args.num_train, seed=args.seed)
    _, report = train(config, args.out)
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  main()
