"""How well the Shapes judge reads the model's own images, where the ground truth is known.

    python -m dit_jax.shapes.judge_check --num 256 --t 100,300,500

The judge is >= 99.3 % accurate on clean renders, but evaluate.py asks it about the model's
samples, whose style differs. Here each held-out scene (the captions evaluate.py draws, same seed)
is rendered, noised to timestep t with the model's own forward process
(x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, abar from scheduler/scheduler_config.json via
schedulers.training_alphas_cumprod, eps from seed i for image i as in evaluate.py), and denoised
back by the model conditioned on the scene's caption:

  sampler   (default) the model card's sampler (DPM-Solver++, 20-step schedule, guidance 4.5) run
            from the step whose timestep is t down to 0: the schedule's tail, a fresh solver state
            (SDEdit / img2img). t must be one of the 20-step schedule's timesteps
            (999, 949, ..., 500, 450, ..., 100, 50).
  one_step  one guided model evaluation at t and the x0 its v-prediction implies,
            x0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v.

The judge then reads the result against the scene's labels, per category over the images whose
caption names it (evaluate.py's denominators), with Wilson 95 % intervals; t = 0 is the clean
render, the reference row. At larger t the model redraws more of the image, so a miss there can be
the model changing the scene as well as the judge misreading it: the rows bound the judge's
accuracy on model-style images from below, and `rmse` (pixels in [-1, 1]) says how far the
denoised images moved from the renders.

Writes results/shapes_judge_check.json (with the transformer's and judge's sha256);
`markdown_table(result)` is the table in assets/MODEL_CARD.md, "Judge accuracy on the model's own
images".
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dit_jax import files
from dit_jax.diffusion import denoise, schedulers
from dit_jax.diffusion.latents import to_uint8
from dit_jax.pipeline.text2image import Text2Image
from dit_jax.shapes import ASSETS, render, world
from dit_jax.shapes import model as shapes_model
from dit_jax.shapes.judge import ShapesJudge
from dit_jax.verdict.stats import wilson

RESULT = pathlib.Path(__file__).resolve().parents[2] / "results" / "shapes_judge_check.json"
DENOISERS = ("sampler", "one_step")
STEPS, GUIDANCE = 20, 4.5      # the model card's sampling protocol (evaluate.py)


def start_at(scheduler: schedulers.DPMSolverMultistep, t: int) -> schedulers.DPMSolverMultistep:
  """The tail of `scheduler` from the step whose timestep is `t` to the end: every per-level and
  per-step table sliced there, so step 0 of the result is that step; the solver's history starts
  empty (first order first), as diffusers' img2img does."""
  if not isinstance(scheduler, schedulers.DPMSolverMultistep):
    raise TypeError(f"start_at slices a DPMSolverMultistep schedule, got {type(scheduler).__name__}")
  where = np.flatnonzero(np.asarray(scheduler.timesteps) == t)
  if where.size != 1:
    raise ValueError(f"t={t} is not a timestep of the {scheduler.num_steps}-step schedule; "
                     f"its timesteps are {[int(s) for s in scheduler.timesteps]}")
  k = int(where[0])
  return dataclasses.replace(
      scheduler, timesteps=scheduler.timesteps[k:], sigmas=scheduler.sigmas[k:],
      alpha_t=scheduler.alpha_t[k:], sigma_t=scheduler.sigma_t[k:], lambdas=scheduler.lambdas[k:],
      max_order=scheduler.max_order[k:])


def forward_noise(x0: np.ndarray, alpha_bar: float, seeds: Sequence[int]) -> jax.Array:
  """The DDPM forward process at one level: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, eps of
  image i from seeds[i] (denoise.noise_for_seeds, as evaluate.py's noise)."""
  if len(seeds) != len(x0):
    raise ValueError(f"one seed per image: {len(x0)} images, {len(seeds)} seeds")
  eps = denoise.noise_for_seeds(seeds, x0.shape[1:])
  return np.sqrt(alpha_bar) * jnp.asarray(x0, jnp.float32) + np.sqrt(1.0 - alpha_bar) * eps


class Denoiser:
  """Noise clean images to timestep t with the model's forward process and denoise them back,
  conditioned on their captions."""

  def __init__(self, folder: str | os.PathLike = ASSETS, guidance: float = GUIDANCE,
               steps: int = STEPS):
    self.folder = os.fspath(folder)
    self.pipe = Text2Image("pixart", self.folder, num_steps=steps, guidance_scale=guidance,
                           max_sequence_length=shapes_model.MAX_SEQUENCE_LENGTH)
    config = self.pipe.scheduler_config
    if config.get("prediction_type") != "v_prediction":
      raise ValueError(f"the one-step x0 below is v-prediction's; {self.folder} predicts "
                       f"{config.get('prediction_type')!r}")
    self.alphas_cumprod = schedulers.training_alphas_cumprod(config)
    self.schedule = self.pipe.scheduler((render.SIZE, render.SIZE, 3))
    self.predict = self.pipe.record.predictor(self.pipe.module, guidance)
    self._jitted = {}

  def noised(self, x0: np.ndarray, t: int, seeds: Sequence[int]) -> jax.Array:
    return forward_noise(x0, float(self.alphas_cumprod[t]), seeds)

  def _program(self, denoiser: str, t: int):
    if (denoiser, t) in self._jitted:
      return self._jitted[denoiser, t]
    if denoiser == "sampler":
      tail = start_at(self.schedule, t)
      # The sampler's level for t is the forward process's: alpha_t^2 = abar_t.
      np.testing.assert_allclose(tail.alpha_t[0] ** 2, self.alphas_cumprod[t], rtol=1e-5)
      fn = lambda params, x, cond: denoise.denoise(self.predict, tail, params, x, cond)
    elif denoiser == "one_step":
      abar = float(self.alphas_cumprod[t])
      fn = lambda params, x, cond: (np.sqrt(abar) * x - np.sqrt(1.0 - abar)
                                    * self.predict(params, x, jnp.float32(t), cond))
    else:
      raise ValueError(f"denoiser must be one of {DENOISERS}, got {denoiser!r}")
    self._jitted[denoiser, t] = jax.jit(fn)
    return self._jitted[denoiser, t]

  def __call__(self, x0: np.ndarray, captions: Sequence[str], t: int, seeds: Sequence[int],
               denoiser: str = "sampler") -> np.ndarray:
    """(N, 32, 32, 3) float32 in the model's range: x0 noised to t and denoised; x0 itself at t=0."""
    if t == 0:
      return np.asarray(x0, np.float32)
    if not 0 < t < len(self.alphas_cumprod):
      raise ValueError(f"t must be in 0..{len(self.alphas_cumprod) - 1}, got {t}")
    cond = jax.tree_util.tree_map(jnp.asarray,
                                  self.pipe.conditioning(list(captions), render.SIZE, render.SIZE))
    out = self._program(denoiser, t)(self.pipe.weights(), self.noised(x0, t, seeds), cond)
    return np.asarray(out, np.float32)


def judge_counts(judge: ShapesJudge, images: np.ndarray, scenes: Sequence[world.Scene]) -> dict:
  """category -> (hits, n): images whose judge head reads the concept their caption names, over
  the images whose caption names one (world.concepts_in: the labels by construction)."""
  heads = judge.predictions(images)
  counts = {}
  for category in world.CATEGORIES:
    rows = [(i, named[category]) for i, named in enumerate(map(world.concepts_in, scenes))
            if category in named]
    if rows:
      read = heads[category].names
      counts[category] = (sum(read[i] == concept for i, concept in rows), len(rows))
  return counts


def check(folder: str | os.PathLike = ASSETS, num: int = 256, ts: Sequence[int] = (100, 300, 500),
          denoiser: str = "sampler", seed: int = 123, split: str = "heldout",
          guidance: float = GUIDANCE, batch: int = 64, progress: bool = False) -> dict:
  """The judge's accuracy per category on clean renders (t = 0) and on renders noised to each t
  and denoised by the model. Scene i and its noise depend only on (seed, i) and i."""
  if denoiser not in DENOISERS:
    raise ValueError(f"denoiser must be one of {DENOISERS}, got {denoiser!r}")
  folder = os.fspath(folder)
  started = time.time()
  scenes = world.scenes(seed, num, split)
  captions = [world.caption(s) for s in scenes]
  clean = render.render_batch(scenes)
  model = Denoiser(folder, guidance)
  judge = ShapesJudge(os.path.join(folder, "judge"))
  rows = []
  for t in [0] + [int(t) for t in ts if int(t) != 0]:
    out = np.concatenate([model(clean[i:i + batch], captions[i:i + batch], t,
                                list(range(i, min(i + batch, num))), denoiser)
                          for i in range(0, num, batch)])
    images = to_uint8(out)
    counts = judge_counts(judge, images, scenes)
    tail = 0 if t == 0 else (start_at(model.schedule, t).num_steps if denoiser == "sampler" else 1)
    accuracy = {c: k / n for c, (k, n) in counts.items()}
    rows.append({
        "t": t, "alpha_bar": 1.0 if t == 0 else float(model.alphas_cumprod[t]),
        "model_evaluations": tail,
        "rmse": float(np.sqrt(np.mean((images.astype(np.float32) / 127.5 - 1 - clean) ** 2))),
        "accuracy": accuracy, "hits": {c: int(k) for c, (k, _) in counts.items()},
        "images": {c: n for c, (_, n) in counts.items()},
        "interval": {c: wilson(k, n) for c, (k, n) in counts.items()},
        "mean": float(np.mean(list(accuracy.values())))})
    if progress:
      print(f"t={t}: {({c: round(a, 3) for c, a in accuracy.items()})}", flush=True)
  sha = lambda *path: files.sha256(os.path.join(folder, *path))
  return {"split": split, "num_images": num, "seed": seed, "denoiser": denoiser,
          "schedule_steps": STEPS, "guidance_scale": guidance,
          "forward_process": "x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, eps from seed i",
          "rows": rows, "seconds": round(time.time() - started, 1),
          "transformer_sha256": sha("transformer", "diffusion_pytorch_model.safetensors"),
          "judge_sha256": sha("judge", "params.safetensors")}


def markdown_table(result: dict) -> str:
  """The model card's table: accuracy per category per t, with the Wilson 95 % interval and the
  number of images under each."""
  cats = [c for c in world.CATEGORIES if c in result["rows"][0]["accuracy"]]
  how = {"sampler": "DPM-Solver++ steps", "one_step": "model evaluations"}[result["denoiser"]]
  lines = ["| t | abar_t | " + how + " | rmse | " + " | ".join(cats) + " | mean |",
           "|---|---|---|---|" + "---|" * len(cats) + "---|"]
  for row in result["rows"]:
    cells = [f"{row['accuracy'][c]:.3f} ({row['interval'][c][0]:.2f}-{row['interval'][c][1]:.2f})"
             for c in cats]
    label = "0 (clean render)" if row["t"] == 0 else str(row["t"])
    lines.append(f"| {label} | {row['alpha_bar']:.3f} | {row['model_evaluations']} | "
                 f"{row['rmse']:.3f} | " + " | ".join(cells) + f" | {row['mean']:.3f} |")
  lines.append("| images | | | | " + " | ".join(str(result["rows"][0]["images"][c]) for c in cats)
               + " | |")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--folder", default=str(ASSETS))
  parser.add_argument("--num", type=int, default=256)
  parser.add_argument("--t", default="100,300,500", help="comma-separated timesteps (0 is always run)")
  parser.add_argument("--denoiser", choices=DENOISERS, default="sampler")
  parser.add_argument("--split", choices=("heldout", "train"), default="heldout")
  parser.add_argument("--seed", type=int, default=123, help="draws the scenes, as evaluate.py's --seed")
  parser.add_argument("--guidance", type=float, default=GUIDANCE)
  parser.add_argument("--out", default=str(RESULT))
  args = parser.parse_args(argv)
  result = check(args.folder, args.num, [int(t) for t in args.t.split(",") if t.strip()],
                 args.denoiser, args.seed, args.split, args.guidance, progress=True)
  result["command"] = "python -m dit_jax.shapes.judge_check " + " ".join(
      argv if argv is not None else __import__("sys").argv[1:])
  files.write_json(args.out, result)
  print(markdown_table(result))


if __name__ == "__main__":
  main()
