"""Checkpoints by Hugging Face Hub id, as diffusers users type them.

    folder = hub.resolve_pipeline("PixArt-alpha/PixArt-XL-2-512x512", "pixart")   # a local folder
    folder = hub.resolve_folder("openai/clip-vit-base-patch32")                   # the CLIP judge's

A path that exists locally always wins. A string shaped "owner/name" that is no local path is a Hub
id: huggingface_hub fetches it into its cache (HF_HOME, HF_HUB_CACHE) and the snapshot folder there
is returned, so every later reader (the loaders, the weights fingerprint) gets a plain path. Only
the files a job reads come down: a pipeline's model_index.json and its components' folders (not the
original single files some repositories also hold at the top, such as FLUX.1-dev's 24 GB
flux1-dev.safetensors), one weight format per folder, no fp16/bf16 variants. With HF_HUB_OFFLINE=1
the cache alone answers, and an id it lacks is an error naming the id, the cache and the fix.
"""
from __future__ import annotations

import json
import os
import posixpath
import re

# Owner and name: letters, digits, "-", "_", "."; "--" and ".." are not allowed on the Hub.
HUB_ID = re.compile(r"[\w][\w.-]*/[\w][\w.-]*")
# Weight files diffusers and transformers read, by name; other names (open_clip_*.safetensors,
# flux1-dev.safetensors) are single-file checkpoints for other tools.
WEIGHT_NAMES = ("diffusion_pytorch_model", "model", "pytorch_model")
# Formats no loader here reads (Flax, TensorFlow, ONNX, original checkpoints).
OTHER_WEIGHTS = (".msgpack", ".h5", ".onnx", ".onnx_data", ".pb", ".ckpt", ".pt", ".pth", ".ot",
                 ".tflite", ".gguf")
# Precision variants ("model.fp16.safetensors", "model.fp16-00001-of-00002.safetensors"): loaders
# read them only when asked for the variant, which no job here does.
VARIANT = re.compile(r"\.(fp16|bf16|fp32)[.-]")
SKIPPED = (".md", ".png", ".jpg", ".jpeg", ".gif", ".webp", ".pdf")   # model cards and their images


class HubError(ValueError):
  """A Hub id that cannot be resolved: not in the cache offline, unknown, gated, incomplete."""


def is_hub_id(spec: str) -> bool:
  return bool(HUB_ID.fullmatch(spec)) and ".." not in spec and "--" not in spec


def cache_dir() -> str:
  """huggingface_hub's cache folder, read from the environment now (its own constants are read
  once, at import): HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
  home = os.getenv("HF_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "huggingface"))
  hub = os.getenv("HF_HUB_CACHE", os.getenv("HUGGINGFACE_HUB_CACHE", os.path.join(home, "hub")))
  return os.path.expandvars(os.path.expanduser(hub))


def offline() -> bool:
  from huggingface_hub import constants
  flag = os.getenv("HF_HUB_OFFLINE") or os.getenv("TRANSFORMERS_OFFLINE") or ""
  return flag.upper() in ("1", "ON", "YES", "TRUE") or constants.HF_HUB_OFFLINE


def in_cache(path: str) -> bool:
  """Is `path` a snapshot folder of a Hub cache (.../models--owner--name/snapshots/<commit>)?"""
  parent = os.path.dirname(os.path.abspath(path))
  return (os.path.basename(parent) == "snapshots"
          and os.path.basename(os.path.dirname(parent)).startswith("models--"))


def pipeline_components(family, decode: bool = True) -> tuple[str, ...]:
  """The pipeline folders a job reads: the transformer (pipeline.Text2Image, loading.load), the
  scheduler, the family's text encoders and tokenizers (text.PromptEncoder), and the VAE when the
  job turns latents into images or images into latents."""
  return ("transformer", "scheduler", *family.text_components) + (("vae",) if decode else ())


def weight_format(name: str) -> str | None:
  """The weight format of a file or its shard index ("safetensors", "bin", "other"); None for a
  small file (config, tokenizer)."""
  if name.endswith(".safetensors") or ".safetensors.index" in name:
    return "safetensors"
  if name.endswith(".bin") or ".bin.index" in name:
    return "bin"
  return "other" if name.endswith(OTHER_WEIGHTS) else None


def select_files(repo_files, folders, top_files=()) -> list[str]:
  """The files of `folders` ("" is the top of the repository) a loader reads, and `top_files`:
  small files (configs, tokenizers), and weights by their loader names in one format per folder,
  safetensors where the folder has them (loaders prefer them), else PyTorch .bin."""
  chosen = [f for f in repo_files if f in top_files]
  for folder in folders:
    inside = [f for f in repo_files if posixpath.dirname(f) == folder and f not in chosen
              and not VARIANT.search(posixpath.basename(f))
              and not posixpath.basename(f).startswith(".") and not f.lower().endswith(SKIPPED)]
    weights = [f for f in inside
               if weight_format(f) and posixpath.basename(f).startswith(WEIGHT_NAMES)]
    kind = "safetensors" if any(weight_format(f) == "safetensors" for f in weights) else "bin"
    chosen += [f for f in inside if weight_format(f) is None
               or (f in weights and weight_format(f) == kind)]
  return chosen


def resolve_pipeline(spec: str, model: str, revision: str | None = None,
                     decode: bool = True) -> str:
  """The local folder of a diffusers pipeline: `spec` itself when it exists, else the snapshot of
  Hub id `spec` at `revision` (None: main) holding the components a job of family `model` reads."""
  from dit_jax import families
  if not _is_remote(spec, revision):
    return spec
  components = pipeline_components(families.get(model), decode)
  select = lambda files: select_files(files, components, ("model_index.json",))
  folder = _snapshot(spec, revision, select, marker="model_index.json")
  _check_pipeline(folder, spec, revision, components)
  return folder


def resolve_folder(spec: str, revision: str | None = None) -> str:
  """The local folder of a transformers model (the CLIP judge's): `spec` itself when it exists,
  else the snapshot of Hub id `spec` holding the files at the top of the repository."""
  if not _is_remote(spec, revision):
    return spec
  return _snapshot(spec, revision, lambda files: select_files(files, ("",)), marker="config.json")


def _is_remote(spec: str, revision: str | None) -> bool:
  """True for a Hub id; False for a local path (which wins) or what is neither (the loaders then
  name the missing path). A revision pins a Hub id, so it refuses a local folder of other origin."""
  if os.path.exists(spec):
    if revision and not in_cache(spec):
      raise HubError(f"revision={revision!r} picks a version of a Hub id, but {spec} is a local "
                     "path: drop the revision, or pass the Hub id (owner/name)")
    return False
  return is_hub_id(spec)


def _snapshot(repo_id: str, revision: str | None, select, marker: str) -> str:
  """The cache's snapshot folder of `repo_id`, fetched (the files `select(repo files)` names) unless
  offline; offline, or with the Hub out of reach, the cached snapshot (it must hold `marker`)."""
  import huggingface_hub
  from huggingface_hub import errors
  cache, unreachable = cache_dir(), None
  if not offline():
    try:
      files = huggingface_hub.HfApi().list_repo_files(repo_id, revision=revision)
      return huggingface_hub.snapshot_download(repo_id, revision=revision, cache_dir=cache,
                                               allow_patterns=select(files))
    except errors.GatedRepoError as error:
      raise HubError(f"{repo_id} is gated on the Hugging Face Hub: accept its license at "
                     f"https://huggingface.co/{repo_id} and log in (`hf auth login`, or HF_TOKEN)"
                     ) from error
    except errors.RepositoryNotFoundError as error:
      raise HubError(f"{repo_id} is neither a local path nor a repository on the Hugging Face Hub "
                     "(a private one needs `hf auth login` or HF_TOKEN)") from error
    except errors.RevisionNotFoundError as error:
      raise HubError(f"{repo_id} has no revision {revision!r} on the Hugging Face Hub: give a "
                     "branch, tag or commit (config.revision)") from error
    except Exception as error:   # no connection, Hub down: the cache may still hold it
      unreachable = error
  try:
    return huggingface_hub.snapshot_download(repo_id, revision=revision, cache_dir=cache,
                                             local_files_only=True, allow_patterns=[marker])
  except errors.LocalEntryNotFoundError as error:   # also a snapshot known to lack `marker`
    why = (f"the Hub could not be reached ({type(unreachable).__name__}: {unreachable})"
           if unreachable else "HF_HUB_OFFLINE is set")
    raise HubError(
        f"{repo_id}{_at(revision)} is not a local path, and the Hugging Face cache {cache} holds "
        f"no snapshot of it; {why}. Download it once with network access (unset HF_HUB_OFFLINE; "
        f"`{_download_command(repo_id, revision)}` also works), point HF_HOME or HF_HUB_CACHE at a "
        "cache that holds it, or pass a local folder") from error


def _check_pipeline(folder: str, repo_id: str, revision: str | None, components) -> None:
  """Refuse a snapshot that is no pipeline, or that lacks a component the job reads (a cache filled
  for another job), before a loader fails on it, or the VAE's absence makes pixels of latents."""
  index = os.path.join(folder, "model_index.json")
  if not os.path.isfile(index):
    raise HubError(f"{repo_id}{_at(revision)} is no diffusers pipeline: {folder} has no "
                   "model_index.json, which a pipeline repository holds beside its transformer/, "
                   "scheduler/, text_encoder/ ... folders")
  with open(index) as f:
    listed = {name for name, value in json.load(f).items()
              if isinstance(value, list) and value[0] is not None}
  missing = [c for c in components if c in listed and not os.path.isdir(os.path.join(folder, c))]
  if missing:
    folders = ", ".join(f"{c}/" for c in missing)
    raise HubError(f"the cached snapshot of {repo_id}{_at(revision)} in {cache_dir()} lacks "
                   f"{folders}, which the job reads: fetch it once with network access (unset "
                   f"HF_HUB_OFFLINE), e.g. `{_download_command(repo_id, revision, missing)}`")


def _at(revision: str | None) -> str:
  return f" (revision {revision})" if revision else ""


def _download_command(repo_id: str, revision: str | None, folders=()) -> str:
  """The huggingface_hub command line that fills the cache (of `folders` only, when given)."""
  return " ".join([f"hf download {repo_id}", *(f"--include '{c}/*'" for c in folders),
                   *([f"--revision {revision}"] if revision else [])])
