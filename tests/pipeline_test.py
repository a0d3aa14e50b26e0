"""Sampling in JAX vs diffusers' own pipelines, from the same noise, on tiny random components."""
import jax
import numpy as np
import pytest
import torch

from dit_jax import families
from dit_jax.diffusion import denoise
from dit_jax.families import flux as flux_family
from dit_jax.pipeline.text2image import Text2Image
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


def assert_latents_match(family, folder, pipe, steps, guidance, size, to_pipe=lambda x: x,
                         from_pipe=lambda x: x, images=False, **pipe_kwargs):
  """Final latents of `pipe` (output_type="latent") and of Text2Image from the same noise; every
  tiny VAE here downsamples 2x and has 4 latent channels. With `images`, the decoded images too
  (output_type="np"). Returns our latents, NHWC."""
  noise = torch.randn(len(PROMPTS), 4, size // 2, size // 2, generator=torch.Generator().manual_seed(0))
  run = lambda output_type: pipe(
      PROMPTS, num_inference_steps=steps, guidance_scale=guidance, height=size, width=size,
      latents=to_pipe(noise.clone()), output_type=output_type, max_sequence_length=12,
      **pipe_kwargs).images
  with torch.no_grad():
    expected = run("latent")
  ours = Text2Image(family, str(folder), num_steps=steps, guidance_scale=guidance,
                    max_sequence_length=12)
  latents = ours.latents(PROMPTS, seeds=[0, 1], height=size, width=size,
                         noise=nchw_to_nhwc(noise.numpy()))
  err = rel_error(latents, nchw_to_nhwc(from_pipe(expected).numpy()))
  print(f"{family} final latents rel. error vs diffusers: {err:.2e}")
  assert err < 1e-4, err
  if images:
    with torch.no_grad():
      expected_images = run("np")                            # [0, 1], NHWC
    decoded = np.clip(ours.codec.decode(latents) / 2 + 0.5, 0, 1)
    err = rel_error(decoded, expected_images)
    print(f"{family} decoded images rel. error vs diffusers: {err:.2e}")
    assert err < 1e-4, err
  return latents


@pytest.mark.parametrize("steps,guidance", [(5, 4.5), (8, 1.0)])
def test_pixart_pipeline_latents_match_diffusers(pixart_folder, steps, guidance):
  folder, pipe = pixart_folder
  assert_latents_match("pixart", folder, pipe, steps, guidance, size=16,   # 8x8 latents
                       use_resolution_binning=False, clean_caption=False)


def test_prompt_cache_and_concept_positions(pixart_folder, tmp_path):
  from dit_jax.diffusion.text import PromptEncoder
  folder, pipe = pixart_folder
  first = PromptEncoder(families.get("pixart"), str(folder), cache_dir=str(tmp_path), max_sequence_length=12)
  encoded = first(PROMPTS)
  with torch.no_grad():
    expected, mask, _, _ = pipe.encode_prompt(PROMPTS, do_classifier_free_guidance=False,
                                              max_sequence_length=12, clean_caption=False)
  np.testing.assert_array_equal(encoded["caption"], expected.numpy())
  np.testing.assert_array_equal(encoded["caption_mask"], mask.numpy())
  # A second encoder over the same folder answers from the cache without loading the text encoder.
  second = PromptEncoder(families.get("pixart"), str(folder), cache_dir=str(tmp_path), max_sequence_length=12)
  np.testing.assert_array_equal(second(PROMPTS[::-1])["caption"], encoded["caption"][::-1])
  assert second._pipeline is None
  concept = second.concept_mask(PROMPTS, ["dog", "van gogh"])
  assert concept.shape == (2, 12)
  assert np.flatnonzero(concept[0]).tolist() == [1]        # a | dog | in ...
  assert np.flatnonzero(concept[1]).tolist() == [7, 8]     # ... of | van | gogh


def test_missing_component_is_named(pixart_folder, tmp_path):
  import shutil
  from dit_jax.diffusion.text import PromptEncoder
  folder, _ = pixart_folder
  broken = tmp_path / "broken"
  shutil.copytree(folder, broken)
  shutil.rmtree(broken / "text_encoder")
  with pytest.raises(FileNotFoundError, match=r"no text_encoder/ folder"):
    PromptEncoder(families.get("pixart"), str(broken))


@pytest.mark.slow
def test_use_transformer_swaps_weights_and_refuses_another_architecture(pixart_folder, tmp_path):
  folder, _ = pixart_folder
  other = tmp_path / "other"
  tiny_torch_model(seed=5, sample_size=128, use_additional_conditions=True).save_pretrained(other)
  run = lambda pipe: pipe.latents(PROMPTS, [0, 1], 16, 16)
  pipe = Text2Image("pixart", str(folder), num_steps=3, max_sequence_length=12)
  own = run(pipe)
  pipe.use_transformer(str(other))
  swapped = run(pipe)
  np.testing.assert_array_equal(
      swapped, run(Text2Image("pixart", str(folder), num_steps=3, max_sequence_length=12,
                              transformer=str(other))))
  assert rel_error(swapped, own) > 1e-2
  pipe.use_transformer(None)
  np.testing.assert_array_equal(run(pipe), own)
  bigger = tmp_path / "bigger"
  tiny_torch_model(num_layers=4, sample_size=128, use_additional_conditions=True).save_pretrained(bigger)
  with pytest.raises(ValueError, match="different architecture"):
    pipe.use_transformer(str(bigger))


def host_leaves(params) -> list[str]:
  """Paths of the leaves that are not device arrays (a host array a jitted call would copy)."""
  import jax
  return [jax.tree_util.keystr(path) for path, x in jax.tree_util.tree_leaves_with_path(params)
          if not isinstance(x, jax.Array) or not x.devices()]


def test_compiled_programs_get_weights_already_on_the_device(pixart_folder):
  """Every call of the pipeline's jitted programs (denoise, the intervention sweep) is given the
  weights as device arrays: host ones would be copied from host memory at every call."""
  from dit_jax.localize import sweep
  folder, _ = pixart_folder
  pipe = Text2Image("pixart", str(folder), num_steps=2, max_sequence_length=12)
  given, program = [], pipe.program

  def recording(key, build):
    compiled = program(key, build)
    return lambda params, *args: given.append((key[0], params)) or compiled(params, *args)

  pipe.program = recording
  pipe.latents(PROMPTS[:1], [0], 16, 16)
  pipe.latents(PROMPTS[:1], [1], 16, 16)
  plan = [sweep.Intervention("single", 1, (0,))]
  sweep.run_interventions(pipe, PROMPTS[:1], ["a cat in the snow"], [0], (16, 16), plan)
  assert [name for name, _ in given] == ["denoise", "denoise", "sweep"]
  for name, params in given:
    assert host_leaves(params) == [], f"{name} got host weights: {host_leaves(params)[:3]}"
  # Placed once: every call gets the same device buffers, not a fresh copy.
  assert len({id(params) for _, params in given}) == 1
  # A trainer's pipeline gives its device copy back once it has sampled (class images).
  pipe.release_weights()
  assert host_leaves(pipe.params) and not any(
      isinstance(x, jax.Array) for x in jax.tree_util.tree_leaves(pipe.params))


def run_generate(folder, out, tmp_path, seeds):
  import subprocess
  import sys
  return subprocess.run(
      [sys.executable, "generate.py", "--config", "configs/pixart.py",
       f"--config.checkpoint={folder}", "--config.generate.prompt=a dog in the snow", "--config.dtype=float32",
       "--config.sample.num_steps=2", "--config.sample.height=16", "--config.sample.width=16", f"--config.sample.seeds={seeds}",
       f"--config.generate.out_dir={out}", f"--config.generate.cache_dir={tmp_path / 'cache'}"],
      cwd=REPO, capture_output=True, text=True)


@pytest.mark.slow
def test_generate_cli_writes_pngs(pixart_folder, tmp_path):
  import json
  from PIL import Image
  folder, _ = pixart_folder
  out = tmp_path / "images"
  result = run_generate(folder, out, tmp_path, "(0, 1)")
  assert result.returncode == 0, result.stderr[-2000:]
  images = sorted(p.name for p in out.glob("*.png"))
  assert images == ["0000_0.png", "0000_1.png"]
  pixels = [np.asarray(Image.open(out / name)) for name in images]
  assert pixels[0].shape == (16, 16, 3)
  assert not np.array_equal(pixels[0], pixels[1])   # seeds differ
  # A second run replaces the images the first wrote, and leaves the user's own files alone.
  Image.fromarray(pixels[0]).save(out / "mine.png")
  result = run_generate(folder, out, tmp_path, "(2,)")
  assert result.returncode == 0, result.stderr[-2000:]
  assert sorted(p.name for p in out.glob("*.png")) == ["0000_2.png", "mine.png"]
  record = json.loads((out / "prompts.json").read_text())
  assert record["prompts"] == ["a dog in the snow"] and record["images"] == ["0000_2.png"]


def test_generate_cli_without_seeds_fails_and_names_them(pixart_folder, tmp_path):
  folder, _ = pixart_folder
  result = run_generate(folder, tmp_path / "images", tmp_path, "()")
  assert result.returncode != 0
  assert "config.sample.seeds is empty" in result.stderr, result.stderr[-2000:]


def test_pipeline_refuses_an_empty_prompt_list(pixart_folder):
  folder, _ = pixart_folder
  pipe = Text2Image("pixart", str(folder), num_steps=2, max_sequence_length=12)
  for call in (lambda: pipe([], [], 16, 16), lambda: pipe.generate([], 16, 16)):
    with pytest.raises(ValueError, match="no prompts"):
      call()


# ---------------------------------------------------------------------------------------------
# FLUX.1: dev (guidance embeds, resolution-dependent shift) and schnell (neither).


def word_tokenizer(folder, max_length):
  from transformers import AutoTokenizer
  save_word_tokenizer(folder)
  tokenizer = AutoTokenizer.from_pretrained(folder)
  tokenizer.model_max_length = max_length   # CLIP's tokenizer_max_length (FluxPipeline reads it)
  return tokenizer


def tiny_clip(hidden=12):
  from transformers import CLIPTextConfig, CLIPTextModel
  torch.manual_seed(5)
  return CLIPTextModel(CLIPTextConfig(vocab_size=32, hidden_size=hidden, intermediate_size=24,
                                     num_hidden_layers=2, num_attention_heads=2,
                                     max_position_embeddings=16, pad_token_id=0, bos_token_id=0,
                                     eos_token_id=1)).eval()


FLUX_SCHEDULERS = {
    "dev": dict(shift=3.0, use_dynamic_shifting=True, base_image_seq_len=256, max_image_seq_len=4096,
                base_shift=0.5, max_shift=1.15),
    "schnell": dict(shift=1.0, use_dynamic_shifting=False),
}


@pytest.fixture(scope="module", params=sorted(FLUX_SCHEDULERS))
def flux_folder(request, tmp_path_factory):
  from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline
  from tests import flux_test
  folder = tmp_path_factory.mktemp(f"flux_{request.param}")
  vae = tiny_kl_vae()
  vae.register_to_config(shift_factor=0.1, scaling_factor=0.5)
  pipe = FluxPipeline(
      tokenizer=word_tokenizer(folder / "tok", 16), text_encoder=tiny_clip(),
      tokenizer_2=word_tokenizer(folder / "tok_2", 512), text_encoder_2=tiny_t5(),
      vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULERS[request.param]),
      transformer=flux_test.tiny_torch_model(request.param == "dev", in_channels=16))
  pipe.save_pretrained(folder)
  return folder, pipe


@pytest.mark.slow
def test_flux_pipeline_latents_match_diffusers(flux_folder):
  from diffusers import FluxPipeline
  folder, pipe = flux_folder
  # diffusers' FLUX latents are packed: 8x8x4 latents as 4x4 tokens of 16 channels.
  latents = assert_latents_match(
      "flux", folder, pipe, 4, 3.5, size=16,
      to_pipe=lambda x: FluxPipeline._pack_latents(x, len(PROMPTS), 4, 8, 8),
      from_pipe=lambda x: FluxPipeline._unpack_latents(x, 16, 16, pipe.vae_scale_factor), images=True)
  nchw = torch.from_numpy(np.ascontiguousarray(latents.transpose(0, 3, 1, 2)))
  np.testing.assert_array_equal(flux_family.pack_latents(latents),
                                FluxPipeline._pack_latents(nchw, len(PROMPTS), 4, 8, 8).numpy())


@pytest.mark.slow   # ~14 s: compiles the loop twice
@pytest.mark.parametrize("flux_folder", ["dev"], indirect=True)
def test_flux_cond_carries_swap_and_concept(flux_folder):
  from dit_jax.models.interventions import ConceptProbe, TextAttentionSwap
  folder, _ = flux_folder
  ours = Text2Image("flux", str(folder), num_steps=2, max_sequence_length=12)
  prompts = ["a dog in the snow", "a cat in the snow"]   # row 1: the neutral prompt of row 0
  noise = np.repeat(np.asarray(denoise.noise_for_seeds([0], ours.latent_shape(16, 16))), 2, axis=0)
  cond = ours.conditioning(prompts, 16, 16)
  plain = ours.latents(prompts, [0, 0], 16, 16, noise=noise)
  concept = ours.encoder.concept_mask(prompts, ["dog", "cat"])
  latents, scores = ours.denoise(noise, dict(cond, concept=ConceptProbe(concept)))
  assert scores.shape == (2, 2, ours.module.config.num_blocks, 3)   # steps, batch, blocks, VARIANTS
  assert np.all(np.asarray(scores) > 0)
  np.testing.assert_allclose(np.asarray(latents), plain, rtol=0, atol=1e-6)   # scoring changes nothing
  swap = TextAttentionSwap(np.ones(ours.module.config.num_blocks, bool), np.array([1, 1], np.int32))
  swapped = np.asarray(ours.denoise(noise, dict(cond, text_swap=swap)))
  np.testing.assert_allclose(swapped[1], plain[1], rtol=0, atol=1e-6)   # the neutral row: untouched
  assert rel_error(swapped[0], plain[0]) > 1e-3


# ---------------------------------------------------------------------------------------------
# SANA: Gemma-2 text encoder behind the complex human instruction, AutoencoderDC, flow DPM-Solver++.

SANA_SCHEDULER = dict(algorithm_type="dpmsolver++", solver_order=2, prediction_type="flow_prediction",
                      use_flow_sigmas=True, flow_shift=3.0, final_sigmas_type="zero",
                      lower_order_final=True, timestep_spacing="linspace")


def tiny_gemma2(hidden=12):
  from transformers import Gemma2Config, Gemma2Model
  torch.manual_seed(6)
  return Gemma2Model(Gemma2Config(vocab_size=32, hidden_size=hidden, intermediate_size=24,
                                  num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                  head_dim=8, pad_token_id=0, eos_token_id=1, bos_token_id=2)).eval()


def tiny_dc_vae():
  from diffusers import AutoencoderDC
  torch.manual_seed(7)
  two = lambda v: (v, v)
  return AutoencoderDC(in_channels=3, latent_channels=4, attention_head_dim=4,
                       encoder_block_out_channels=(8, 16), decoder_block_out_channels=(8, 16),
                       encoder_layers_per_block=two(1), decoder_layers_per_block=two(1),
                       encoder_qkv_multiscales=two(()), decoder_qkv_multiscales=two(()),
                       scaling_factor=0.41).eval()


@pytest.fixture(scope="module")
def sana_folder(tmp_path_factory):
  from diffusers import DPMSolverMultistepScheduler, SanaPipeline
  from transformers import AutoTokenizer
  from tests import sana_test
  folder = tmp_path_factory.mktemp("sana_pipe")
  save_word_tokenizer(folder / "tok")
  pipe = SanaPipeline(tokenizer=AutoTokenizer.from_pretrained(folder / "tok"), text_encoder=tiny_gemma2(),
                      vae=tiny_dc_vae(), transformer=sana_test.diffusers_model({}),
                      scheduler=DPMSolverMultistepScheduler(**SANA_SCHEDULER))
  pipe.save_pretrained(folder)
  return folder, pipe


@pytest.mark.slow
@pytest.mark.parametrize("steps,guidance", [(5, 4.5), (8, 1.0)])
def test_sana_pipeline_latents_match_diffusers(sana_folder, steps, guidance):
  folder, pipe = sana_folder
  # SANA's pipeline wants multiples of 32 pixels: 16x16 latents.
  assert_latents_match("sana", folder, pipe, steps, guidance, size=32, images=steps == 5,
                       use_resolution_binning=False)


def test_sana_concept_positions_after_instruction(sana_folder):
  """The concept mask marks the concept's tokens among those the pipeline keeps: the instruction
  prefix, then the first token and the last max_sequence_length - 1 (select_index)."""
  from dit_jax.diffusion.text import PromptEncoder
  folder, _ = sana_folder
  encoder = PromptEncoder(families.get("sana"), str(folder), max_sequence_length=12)
  fed = []
  encoder.pipeline.text_encoder.register_forward_pre_hook(lambda m, args: fed.append(args[0]))
  encoded = encoder(PROMPTS)
  assert encoded["caption"].shape == (2, 12, 12)
  kept = fed[0][:, [0] + list(range(-11, 0))].numpy()      # the pipeline's select_index
  mask = encoder.concept_mask(PROMPTS, ["dog", "van gogh"])
  vocab = encoder.tokenizer.get_vocab()
  assert fed[0].shape[1] > 12 + 100                           # the instruction is really there
  np.testing.assert_array_equal(mask[0], kept[0] == vocab["dog"])
  np.testing.assert_array_equal(mask[1], np.isin(kept[1], [vocab["van"], vocab["gogh"]]))
  assert mask[1].sum() == 2
  # The negative prompt is encoded without the instruction: max_sequence_length tokens, none cut.
  assert encoder([""], negative=True)["caption"].shape == (1, 12, 12)
