"""Checkpoints by Hub id (issue 28): resolved offline from a Hugging Face cache built here by hand,
in huggingface_hub's layout (models--owner--name/ with blobs/, snapshots/<commit>/ and refs/), from
the tiny pipelines the other tests make; nothing reaches the network."""
import hashlib
import json
import os
import re
import shutil

import numpy as np
import pytest

from configs import pixart as pixart_config
from dit_jax.pipeline import hub, loading, checks
from dit_jax.localize import judges
from dit_jax import provenance
from dit_jax.train import defaults
from dit_jax.localize import job as localize_job
from dit_jax.train import job as train_job
from tests.judges_test import clip_folder  # noqa: F401  (the tiny CLIP folder fixture)

PIXART = "PixArt-alpha/PixArt-XL-2-512x512"
CLIP = "openai/clip-vit-base-patch32"
MAIN, V2 = "a" * 40, "b" * 40


def build_cache(hub_dir, repo_id, snapshots, refs):
  """A Hub cache as huggingface_hub writes it: each file's content once in blobs/, linked from
  snapshots/<commit>/<path>; refs/<revision> holds the commit. snapshots: commit -> the folder of
  files it holds."""
  repo = hub_dir / ("models--" + repo_id.replace("/", "--"))
  for commit, source in snapshots.items():
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
      blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
      blob.parent.mkdir(parents=True, exist_ok=True)
      if not blob.exists():
        shutil.copy2(file, blob)
      link = repo / "snapshots" / commit / file.relative_to(source)
      link.parent.mkdir(parents=True, exist_ok=True)
      link.symlink_to(os.path.relpath(blob, link.parent))
  for name, commit in refs.items():
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / name).write_text(commit)
  return repo


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory):
  from tests.trainer_test import build_pipeline
  folder = tmp_path_factory.mktemp("pixart_pipe")
  build_pipeline("pixart", folder)
  return folder


@pytest.fixture(scope="module")
def tuned_folder(pipeline_folder, tmp_path_factory):
  """The pipeline with other transformer weights: what another revision holds."""
  from safetensors.numpy import load_file, save_file
  folder = tmp_path_factory.mktemp("pixart_v2") / "pipe"
  shutil.copytree(pipeline_folder, folder)
  weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
  save_file({k: v + np.float32(0.01) for k, v in load_file(weights).items()}, weights)
  return folder


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
  """An empty Hub cache under HF_HOME, offline."""
  monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
  for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  (tmp_path / "hf" / "hub").mkdir(parents=True)
  return tmp_path / "hf" / "hub"


@pytest.fixture
def cached(hub_dir, pipeline_folder, tuned_folder):
  """PIXART in the cache: main and tag v2 (other transformer weights)."""
  repo = build_cache(hub_dir, PIXART, {MAIN: pipeline_folder, V2: tuned_folder},
                     {"main": MAIN, "v2": V2})
  return repo / "snapshots"


def pixart(checkpoint, **overrides):
  config = pixart_config.get_config()
  config.update(dict(checkpoint=checkpoint, dtype="float32", **overrides))
  return config


def test_a_hub_id_resolves_offline_to_its_cached_snapshot(cached, pipeline_folder):
  config = pixart(PIXART)
  checks.require_checkpoint(config)
  assert config.checkpoint == str(cached / MAIN)
  checks.require_checkpoint(config)                       # once resolved it stays (a local path)
  assert config.checkpoint == str(cached / MAIN)
  _, params = loading.load(config.checkpoint, "pixart")   # the loaders read the symlinks
  _, expected = loading.load(str(pipeline_folder), "pixart")
  np.testing.assert_array_equal(params["proj_out"]["kernel"], expected["proj_out"]["kernel"])


def test_hf_hub_cache_names_the_cache_too(hub_dir, pipeline_folder, tmp_path, monkeypatch):
  other = tmp_path / "elsewhere"
  build_cache(other, PIXART, {MAIN: pipeline_folder}, {"main": MAIN})
  monkeypatch.setenv("HF_HUB_CACHE", str(other))        # wins over HF_HOME, as in huggingface_hub
  config = pixart(PIXART)
  checks.require_checkpoint(config)
  repo = other / "models--PixArt-alpha--PixArt-XL-2-512x512"
  assert config.checkpoint == str(repo / "snapshots" / MAIN)


def test_revision_resolves_from_its_ref(cached):
  config = pixart(PIXART, revision="v2")
  checks.require_checkpoint(config)
  assert config.checkpoint == str(cached / V2)
  checks.require_checkpoint(config)   # again (the trainer does): a snapshot folder keeps its revision
  assert config.checkpoint == str(cached / V2)
  by_commit = pixart(PIXART, revision=MAIN)
  checks.require_checkpoint(by_commit)
  assert by_commit.checkpoint == str(cached / MAIN)


def test_an_id_missing_offline_names_the_id_the_cache_and_the_fix(hub_dir):
  config = pixart("PixArt-alpha/PixArt-Sigma-XL-2-1024-MS")
  with pytest.raises(SystemExit) as error:
    checks.require_checkpoint(config)
  message = str(error.value)
  assert "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS" in message and str(hub_dir) in message
  assert "HF_HUB_OFFLINE" in message and "hf download" in message


def test_an_unknown_revision_offline_is_named(cached):
  with pytest.raises(SystemExit, match=r"PixArt-XL-2-512x512 \(revision v3\) is not a local path"):
    checks.require_checkpoint(pixart(PIXART, revision="v3"))


def test_a_snapshot_without_a_component_the_job_reads_is_refused(hub_dir, pipeline_folder,
                                                                   tmp_path):
  partial = tmp_path / "partial"
  shutil.copytree(pipeline_folder, partial, ignore=shutil.ignore_patterns("vae"))
  build_cache(hub_dir, PIXART, {MAIN: partial}, {"main": MAIN})
  with pytest.raises(SystemExit, match=r"lacks vae/.*hf download PixArt-alpha/PixArt-XL-2-512x512 "
                                       r"--include 'vae/\*'"):
    checks.require_checkpoint(pixart(PIXART))


def test_a_local_path_always_wins(cached, pipeline_folder, tmp_path, monkeypatch):
  local = tmp_path / PIXART                               # a relative path shaped like the id
  local.parent.mkdir()
  local.symlink_to(pipeline_folder)
  monkeypatch.chdir(tmp_path)
  config = pixart(PIXART)
  checks.require_checkpoint(config)
  assert config.checkpoint == PIXART
  with pytest.raises(SystemExit, match="revision='v2' picks a version of a Hub id, but "
                                       "PixArt-alpha/PixArt-XL-2-512x512 is a local path"):
    checks.require_checkpoint(pixart(PIXART, revision="v2"))


class Reached(Exception):
  """Raised by a stand-in to stop a job where it was observed."""


def test_localize_builds_its_pipeline_from_the_resolved_folder(cached, tmp_path, monkeypatch):
  seen = []

  def pipeline(model, folder, **kwargs):
    seen.append(folder)
    raise Reached

  monkeypatch.setattr(localize_job, "Text2Image", pipeline)
  with pytest.raises(Reached):
    localize_job.run(pixart(PIXART), tmp_path / "out")
  assert seen == [str(cached / MAIN)]


def test_train_fingerprints_the_weights_of_the_resolved_revision(cached, tmp_path, monkeypatch):
  seen = []
  monkeypatch.setitem(train_job.TASKS, "probe",
                      lambda config, workdir: seen.append(config.checkpoint))
  monkeypatch.setitem(train_job.WEIGHTS, "probe", "checkpoint")
  fingerprints = {}
  for revision, commit in (("", MAIN), ("v2", V2)):
    config = defaults.train_config("pixart", "personalization", 16, 2, 4.5)
    config.update(dict(task="probe", checkpoint=PIXART, revision=revision))
    workdir = tmp_path / (revision or "main")
    train_job.run(config, workdir)
    recorded = json.loads((workdir / provenance.RECORD).read_text())["run"]
    assert seen[-1] == recorded["checkpoint"] == str(cached / commit)
    assert recorded["weights"] == provenance.weights_fingerprint(str(cached / commit))
    assert "revision" not in recorded   # in the checkpoint's commit; older workdirs lack the key
    fingerprints[commit] = recorded["weights"]
  assert fingerprints[MAIN] != fingerprints[V2]             # the transformers differ
  assert fingerprints[MAIN] != provenance.weights_fingerprint(str(tmp_path / "absent"))


def test_the_clip_judge_takes_a_hub_id(hub_dir, clip_folder):  # noqa: F811
  build_cache(hub_dir, CLIP, {MAIN: clip_folder}, {"main": MAIN})
  judge = judges.make_judge("clip", folder=CLIP)
  snapshot = hub_dir / "models--openai--clip-vit-base-patch32" / "snapshots" / MAIN
  assert judge.folder == snapshot
  local = judges.make_judge("clip", folder=str(clip_folder))
  assert judge.describe()["files"] == local.describe()["files"]
  missing = f"clip-vit-large-patch14 is not a local path.*{re.escape(str(hub_dir))}"
  with pytest.raises(ValueError, match=missing):
    judges.make_judge("clip", folder="openai/clip-vit-large-patch14")


# A published pipeline's listing: the original single files at the top, both weight formats in a
# folder, precision variants, a Flax copy.
FLUX_FILES = [
    ".gitattributes", "README.md", "flux1-dev.safetensors", "ae.safetensors", "dev_grid.jpg",
    "model_index.json", "scheduler/scheduler_config.json",
    "text_encoder/config.json", "text_encoder/model.safetensors", "text_encoder/pytorch_model.bin",
    "text_encoder/flax_model.msgpack", "text_encoder/model.fp16.safetensors",
    "text_encoder_2/config.json", "text_encoder_2/model.safetensors.index.json",
    "text_encoder_2/model-00001-of-00002.safetensors",
    "text_encoder_2/model-00002-of-00002.safetensors",
    "text_encoder_2/pytorch_model.bin.index.json",
    "text_encoder_2/pytorch_model-00001-of-00002.bin",
    "text_encoder_2/model.fp16-00001-of-00002.safetensors",
    "tokenizer/merges.txt", "tokenizer/vocab.json", "tokenizer/tokenizer_config.json",
    "tokenizer_2/spiece.model", "tokenizer_2/tokenizer.json",
    "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors.index.json",
    "transformer/diffusion_pytorch_model-00001-of-00003.safetensors",
    "vae/config.json", "vae/diffusion_pytorch_model.bin",
]


def test_only_the_files_a_job_reads_are_selected():
  from dit_jax import families
  components = hub.pipeline_components(families.get("flux"))
  chosen = hub.select_files(FLUX_FILES, components, ("model_index.json",))
  assert sorted(chosen) == sorted([
      "model_index.json", "scheduler/scheduler_config.json",
      "text_encoder/config.json", "text_encoder/model.safetensors",
      "text_encoder_2/config.json", "text_encoder_2/model.safetensors.index.json",
      "text_encoder_2/model-00001-of-00002.safetensors",
      "text_encoder_2/model-00002-of-00002.safetensors",
      "tokenizer/merges.txt", "tokenizer/vocab.json", "tokenizer/tokenizer_config.json",
      "tokenizer_2/spiece.model", "tokenizer_2/tokenizer.json",
      "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors.index.json",
      "transformer/diffusion_pytorch_model-00001-of-00003.safetensors",
      "vae/config.json", "vae/diffusion_pytorch_model.bin"])       # .bin: the only format there
  no_vae = hub.pipeline_components(families.get("flux"), decode=False)
  assert not any(f.startswith("vae/") for f in hub.select_files(FLUX_FILES, no_vae))
  clip = ["config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5",
          "flax_model.msgpack", "open_clip_model.safetensors", "preprocessor_config.json",
          "tokenizer.json", "README.md"]
  assert sorted(hub.select_files(clip, ("",))) == ["config.json", "model.safetensors",
                                                   "preprocessor_config.json", "tokenizer.json"]


def test_online_only_the_selected_files_are_fetched(cached, monkeypatch):
  import huggingface_hub
  monkeypatch.delenv("HF_HUB_OFFLINE")
  monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
  calls = []
  monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files",
                      lambda self, repo_id, revision=None: FLUX_FILES)
  fetch = lambda repo_id, **kwargs: calls.append((repo_id, kwargs)) or str(cached / MAIN)
  monkeypatch.setattr(huggingface_hub, "snapshot_download", fetch)   # stands in for the download
  config = pixart(PIXART, revision="v2")
  checks.require_checkpoint(config)
  repo_id, kwargs = calls[0]
  assert (repo_id, kwargs["revision"], config.checkpoint) == (PIXART, "v2", str(cached / MAIN))
  assert "flux1-dev.safetensors" not in kwargs["allow_patterns"]
  assert "text_encoder/model.safetensors" in kwargs["allow_patterns"]
  assert "text_encoder/pytorch_model.bin" not in kwargs["allow_patterns"]
