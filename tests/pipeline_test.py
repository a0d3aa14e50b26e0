"""Sampling in JAX vs diffusers' own pipelines, from the same noise, on tiny random components."""
import numpy as np
import pytest
import torch

from dit_jax.pipeline import Text2Image
from tests.pixart_test import REPO, tiny_torch_model
from tests.testutil import nchw_to_nhwc, rel_error, save_word_tokenizer

PROMPTS = ["a dog in the snow", "a red car in the style of van gogh"]


def tiny_t5(d_model=24):
  from transformers import T5Config, T5EncoderModel
  torch.manual_seed(3)
  return T5EncoderModel(T5Config(vocab_size=32, d_model=d_model, d_ff=48, num_layers=2, num_heads=2,
                                 d_kv=12, relative_attention_num_buckets=8)).eval()


def tiny_kl_vae():
  from diffusers import AutoencoderKL
  torch.manual_seed(4)
  return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                       up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 16],
                       latent_channels=4, norm_num_groups=4, sample_size=32).eval()


# sample_size 128 is what makes diffusers' pipeline pass PixArt's micro-conditions; the 8x8 test
# latents then use interpolated positions, as any non-default resolution does.
@pytest.fixture(scope="module")
def pixart_folder(tmp_path_factory):
  from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline
  from transformers import AutoTokenizer
  folder = tmp_path_factory.mktemp("pixart_pipe")
  save_word_tokenizer(folder / "tok")
  pipe = PixArtAlphaPipeline(tokenizer=AutoTokenizer.from_pretrained(folder / "tok"),
                             text_encoder=tiny_t5(), vae=tiny_kl_vae(),
                             transformer=tiny_torch_model(sample_size=128, use_additional_conditions=True),
                             scheduler=DPMSolverMultistepScheduler())
  pipe.save_pretrained(folder)
  return folder, pipe


@pytest.mark.parametrize("steps,guidance", [(5, 4.5), (8, 1.0)])
def test_pixart_pipeline_latents_match_diffusers(pixart_folder, steps, guidance):
  folder, pipe = pixart_folder
  height = width = 16   # 8x8 latents through a 2x VAE
  noise = torch.randn(len(PROMPTS), 4, 8, 8, generator=torch.Generator().manual_seed(0))
  with torch.no_grad():
    expected = pipe(PROMPTS, num_inference_steps=steps, guidance_scale=guidance, height=height,
                    width=width, latents=noise.clone(), output_type="latent",
                    use_resolution_binning=False, clean_caption=False, max_sequence_length=12).images
  ours = Text2Image("pixart", str(folder), num_steps=steps, guidance_scale=guidance,
                    max_sequence_length=12)
  latents = ours.latents(PROMPTS, seeds=[0, 1], height=height, width=width,
                         noise=nchw_to_nhwc(noise.numpy()))
  err = rel_error(latents, nchw_to_nhwc(expected.numpy()))
  print(f"final latents rel. error vs diffusers: {err:.2e}")
  assert err < 1e-4, err


def test_prompt_cache_and_concept_positions(pixart_folder, tmp_path):
  from dit_jax.text import PromptEncoder
  folder, pipe = pixart_folder
  first = PromptEncoder("pixart", str(folder), cache_dir=str(tmp_path), max_sequence_length=12)
  encoded = first(PROMPTS)
  with torch.no_grad():
    expected, mask, _, _ = pipe.encode_prompt(PROMPTS, do_classifier_free_guidance=False,
                                              max_sequence_length=12, clean_caption=False)
  np.testing.assert_array_equal(encoded["caption"], expected.numpy())
  np.testing.assert_array_equal(encoded["caption_mask"], mask.numpy())
  # A second encoder over the same folder answers from the cache without loading the text encoder.
  second = PromptEncoder("pixart", str(folder), cache_dir=str(tmp_path), max_sequence_length=12)
  np.testing.assert_array_equal(second(PROMPTS[::-1])["caption"], encoded["caption"][::-1])
  assert second._pipeline is None
  concept = second.concept_mask(PROMPTS, ["dog", "van gogh"])
  assert concept.shape == (2, 12)
  assert np.flatnonzero(concept[0]).tolist() == [1]        # a | dog | in ...
  assert np.flatnonzero(concept[1]).tolist() == [7, 8]     # ... of | van | gogh


def test_missing_component_is_named(pixart_folder, tmp_path):
  import shutil
  from dit_jax.text import PromptEncoder
  folder, _ = pixart_folder
  broken = tmp_path / "broken"
  shutil.copytree(folder, broken)
  shutil.rmtree(broken / "text_encoder")
  with pytest.raises(FileNotFoundError, match=r"no text_encoder/ folder"):
    PromptEncoder("pixart", str(broken))


def test_generate_cli_writes_pngs(pixart_folder, tmp_path):
  import subprocess
  import sys
  from PIL import Image
  folder, _ = pixart_folder
  out = tmp_path / "images"
  result = subprocess.run(
      [sys.executable, "-m", "dit_jax.generate", "--config", "configs/pixart.py",
       f"--config.checkpoint={folder}", "--config.prompt=a dog in the snow", "--config.dtype=float32",
       "--config.sample.num_steps=2", "--config.sample.height=16", "--config.sample.width=16",
       "--config.sample.seeds=0,1", f"--config.sample.out_dir={out}",
       f"--config.sample.cache_dir={tmp_path / 'cache'}"],
      cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-2000:]
  images = sorted(p.name for p in out.glob("*.png"))
  assert images == ["0000_0.png", "0000_1.png"]
  pixels = [np.asarray(Image.open(out / name)) for name in images]
  assert pixels[0].shape == (16, 16, 3)
  assert not np.array_equal(pixels[0], pixels[1])   # seeds differ
