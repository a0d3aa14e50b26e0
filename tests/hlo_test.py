"""What XLA gets in bfloat16 mode, read off the lowered StableHLO (issue 27): no float32 matmul
where diffusers computes in bf16, no host round-trip in the denoising loop (no host callback, no
conditional: issue 42), and the loop one scan.

Tiny models of every family (config.dtype "bfloat16": bf16 weights and compute, float32 inputs as
the pipeline feeds them) are lowered for "cuda" (cuDNN attention) and "tpu" (XLA attention) from
abstract inputs: no device and no weights. The programs are those localization compiles: the
forward, the guided sampling loop, the vmapped intervention sweep and the concept-scoring loop.

The StableHLO is what every backend compiles. The optimized HLO of this CPU-only jaxlib would not
say what a GPU runs: XLA's CPU backend itself widens bf16 dots to float32.
"""
import functools
import re

import jax
import jax.numpy as jnp
import pytest
from jax._src.cudnn import fused_attention_stablehlo as cudnn

from dit_jax import families
from dit_jax.models import layers
from dit_jax.diffusion import denoise, schedulers
from dit_jax.localize import sweep
from dit_jax.models.interventions import BlockEdit, ConceptProbe, TextAttentionSwap

SD = jax.ShapeDtypeStruct
BF16 = jnp.bfloat16
CUDNN_VERSION = 91000      # all jax reads of the cuDNN library while tracing (tests/accelerator_test.py)
STEPS = 3
# The tiny configs of the parity tests (tests/{pixart,sana,flux,sd3}_test.py), with every option
# that adds a matmul on: PixArt's micro-conditions, SANA's qk norm and positions, FLUX-dev's
# guidance embedding, SD3.5-medium's qk norm and dual attention.
TINY = {
    "pixart": dict(num_attention_heads=2, attention_head_dim=24, num_layers=2, cross_attention_dim=48,
                   sample_size=16, caption_channels=24, use_additional_conditions=True),
    "sana": dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
                 num_layers=2, num_cross_attention_heads=2, cross_attention_head_dim=8,
                 cross_attention_dim=16, caption_channels=12, sample_size=8, patch_size=1,
                 qk_norm="rms_norm_across_heads", interpolation_scale=1.0),
    "flux": dict(patch_size=1, in_channels=8, num_layers=2, num_single_layers=2, attention_head_dim=16,
                 num_attention_heads=2, joint_attention_dim=24, pooled_projection_dim=12,
                 guidance_embeds=True, axes_dims_rope=(4, 6, 6)),
    "sd3": dict(sample_size=16, patch_size=2, in_channels=4, num_layers=3, attention_head_dim=8,
                num_attention_heads=2, joint_attention_dim=24, caption_projection_dim=16,
                pooled_projection_dim=12, out_channels=4, pos_embed_max_size=8, qk_norm="rms_norm",
                dual_attention_layers=(0, 1)),
}
LATENT = {"pixart": (8, 8, 4), "sana": (8, 8, 4), "flux": (4, 4, 2), "sd3": (8, 8, 4)}
FLOW = {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}
SCHEDULERS = {"pixart": {"_class_name": "DPMSolverMultistepScheduler"},
              "sana": {"_class_name": "DPMSolverMultistepScheduler", "use_flow_sigmas": True,
                       "prediction_type": "flow_prediction", "flow_shift": 3.0},
              "flux": {**FLOW, "use_dynamic_shifting": True}, "sd3": FLOW}
TEXT_LEN = 5

# float32 matmuls that diffusers computes in float32 too, by the function whose call makes them.
# Its other float32 math (timestep sinusoids, norm statistics, RoPE, the scheduler's step) is
# elementwise here as there: no matmul to excuse. bf16 operands accumulated into a float32 result
# (attention logits, the concept scores' projection: preferred_element_type) are bf16 matmuls.
F32_AS_IN_DIFFUSERS = {
    # SanaLinearAttnProcessor2_0 casts q, k and v to float32 (`query.float()`, ...) for both
    # matmuls of the linear attention and its normalizer, then back to the input dtype.
    "relu_linear_attention",
}
# Matmul-like ops whose operands decide the compute dtype: dots, convolutions (patch embeddings,
# SANA's Mix-FFN) and cuDNN's fused attention.
MATMULS = re.compile(r"stablehlo\.(dot_general|convolution)|custom_call @__cudnn\$fmha")
# Ops that leave the device: host callbacks are custom calls, infeed/outfeed/send/recv their own ops.
HOST = re.compile(r"custom_call @\S*callback|stablehlo\.(infeed|outfeed|send|recv)\b")
# Conditionals: XLA's GPU runtime copies a conditional's branch index to the host to pick the
# branch, at every step of the loop it sits in.
CONDITIONAL = re.compile(r"stablehlo\.(case|if)\b")


def abstract(tree, dtype=jnp.float32):
  return jax.tree_util.tree_map(lambda x: SD(x.shape, dtype), tree)


@functools.lru_cache(maxsize=None)
def bf16_model(name: str):
  """(module, abstract params) as loading.load(..., dtype=bfloat16) gives them."""
  fam = families.get(name)
  config = fam.config_cls(**TINY[name])
  shapes = jax.eval_shape(lambda: fam.module_cls(config=config).init(
      jax.random.key(0), *fam.example_inputs(config))["params"])
  return fam.module_cls(config=config, dtype=BF16), abstract(shapes, BF16)


def forward_program(name: str):
  module, params = bf16_model(name)
  inputs = abstract(families.get(name).example_inputs(module.config))
  return lambda p, *a: module.apply({"params": p}, *a), (params, *inputs)


def text_cond(name: str, config) -> dict:
  """The loop's cond in float32, as pipe.conditioning gives it (and a negative prompt for CFG)."""
  width = getattr(config, "caption_channels", None) or config.joint_attention_dim
  text = {"caption": SD((1, TEXT_LEN, width), jnp.float32)}
  if name in ("flux", "sd3"):
    text["pooled"] = SD((1, config.pooled_projection_dim), jnp.float32)
  else:
    text["caption_mask"] = SD((1, TEXT_LEN), jnp.float32)
  if name == "flux":            # guidance-distilled: no negative prompt
    return text
  cond = {**text, **{"uncond_" + k: v for k, v in text.items()}}
  if name == "pixart":
    cond.update(resolution=SD((1, 2), jnp.float32), aspect_ratio=SD((1, 1), jnp.float32))
  return cond


def loop_of(name: str, steps: int = STEPS):
  """Text2Image.loop's program: denoise.denoise of the family's guided prediction."""
  module, _ = bf16_model(name)
  fam = families.get(name)
  config = SCHEDULERS[name]
  scheduler = schedulers.from_diffusers(config, steps,
                                        **fam.schedule_kwargs(config, steps, LATENT[name]))
  predict = fam.predictor(module, 3.5 if name == "flux" else 4.5)
  return lambda p, noise, cond: denoise.denoise(predict, scheduler, p, noise, cond)


def loop_program(name: str, steps: int = STEPS):
  module, params = bf16_model(name)
  noise = SD((1, *LATENT[name]), jnp.float32)
  return loop_of(name, steps), (params, noise, text_cond(name, module.config))


def sweep_program(name: str):
  loop, (params, noise, cond) = loop_program(name)
  blocks = bf16_model(name)[0].config.num_blocks
  return (sweep.intervention_sweep(name, loop),
          (params, noise, cond, cond, SD((2, blocks), jnp.bool_), SD((2,), jnp.bool_)))


def scores_program(name: str):
  loop, (params, noise, cond) = loop_program(name)
  return loop, (params, noise, {**cond, "concept": ConceptProbe(SD((1, TEXT_LEN), jnp.float32))})


PROGRAMS = {"forward": forward_program, "loop": loop_program, "sweep": sweep_program,
            "scores": scores_program}
# The sweep is the loop vmapped (the same ops and dtypes, twice the lowering time): slow subset only.
SLOW = pytest.mark.slow


def programs(*names: str) -> list:
  return [pytest.param(n, marks=SLOW) if n == "sweep" else n for n in names]


@pytest.fixture
def cudnn_library(monkeypatch):
  monkeypatch.setattr(cudnn, "check_cudnn_version", lambda: CUDNN_VERSION)


def stablehlo(fn, inputs, platform: str) -> str:
  """The StableHLO of jit(fn) for `platform`, with locations (the call stack of every op)."""
  with layers.attention_overrides(platform=platform):
    lowered = jax.jit(fn).trace(*inputs).lower(lowering_platforms=(platform,))
  return lowered.as_text(debug_info=True)


def callers(text: str, line: str) -> set[str]:
  """The functions on the call stack of an op (the names in its location, followed through every
  #loc reference)."""
  locations = dict(re.findall(r"^(#loc\d+) = (.*)$", text, re.M))
  names, todo, seen = set(), re.findall(r"#loc\d+", line.rsplit(" loc(", 1)[-1]), set()
  while todo:
    ref = todo.pop()
    if ref not in seen:
      seen.add(ref)
      names |= set(re.findall(r'"([^"/:]+)"\(', locations.get(ref, "")))
      todo += re.findall(r"#loc\d+", locations.get(ref, ""))
  return names


def operand_types(line: str) -> list[str]:
  """Element types of an op's operands, from its signature `: (tensor<2x8xbf16>, ...) -> ...`."""
  signature = line.rsplit(" : (", 1)[1].split(") -> ")[0]
  return re.findall(r"x?([a-z]+\d*)>", signature)


def float32_matmuls(text: str) -> list[str]:
  """Matmuls with a float32 operand that diffusers does not compute in float32 either."""
  found = []
  for line in text.splitlines():
    if MATMULS.search(line) and "f32" in operand_types(line):
      if not callers(text, line) & F32_AS_IN_DIFFUSERS:
        found.append(line.strip()[:300])
  return found


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("program", programs(*sorted(PROGRAMS)))
@pytest.mark.parametrize("name", sorted(TINY))
def test_bf16_programs_have_no_float32_matmul(cudnn_library, name, program, platform):
  text = stablehlo(*PROGRAMS[program](name), platform)
  assert MATMULS.search(text)
  assert float32_matmuls(text) == []
  if platform == "cuda":   # softmax attention on cuDNN's fused kernel, its operands checked too
    assert "__cudnn$fmha" in text


def test_the_float32_exception_is_only_sanas_linear_attention(cudnn_library):
  """SANA's linear attention does run float32 matmuls (as diffusers' does), and only it."""
  text = stablehlo(*forward_program("sana"), "tpu")
  excused = [line for line in text.splitlines()
             if MATMULS.search(line) and "f32" in operand_types(line)]
  assert excused and all(callers(text, line) & F32_AS_IN_DIFFUSERS for line in excused)
  assert len(excused) == 3 * TINY["sana"]["num_layers"]   # K^T V, its product with Q, normalizer


@pytest.mark.parametrize("program", programs("loop", "sweep", "scores"))
@pytest.mark.parametrize("name", sorted(TINY))
def test_the_denoising_loop_never_leaves_the_device(name, program):
  # Lowered for this machine's CPU: a host callback lowers for a backend that is present only
  # (for "cuda" a CPU-only jaxlib has no lowering of it at all).
  text = stablehlo(*PROGRAMS[program](name), "cpu")
  assert not HOST.search(text), HOST.search(text).group(0)
  assert "has_side_effect = true" not in text     # no custom call the compiler must keep in order
  assert text.count("stablehlo.while") == 1       # the scan over the steps, nothing unrolled
  # No conditional (e.g. the solver order of a step): each step the same ops.
  assert [line.strip()[:120] for line in text.splitlines() if CONDITIONAL.search(line)] == []


def in_loop(text: str) -> set[int]:
  """Numbers of the lines a while loop runs at every iteration: its regions (the lines nested
  below the while op), and the functions called from them, transitively."""
  lines = text.splitlines()
  functions, owner = {}, None
  for n, line in enumerate(lines):
    found = re.match(r"\s*func\.func (?:public |private )?@([^(\s]+)\(", line)
    owner = found.group(1) if found else owner
    functions.setdefault(owner, []).append(n)
  inside, depth = set(), None
  for n, line in enumerate(lines):
    indent = len(line) - len(line.lstrip())
    if depth is None:
      depth = indent if "stablehlo.while" in line else None
    elif indent == depth and line.lstrip().startswith("}") and not line.lstrip().startswith("} do"):
      depth = None      # the while op's closing brace
    else:
      inside.add(n)
  todo = list(inside)
  while todo:
    for callee in re.findall(r"call @([^(\s]+)\(", lines[todo.pop()]):
      new = set(functions.get(callee, [])) - inside
      inside |= new
      todo += new
  return inside


CAPTION_PATH = ("pixart", "sana")   # families whose captions go through layers of their own


@pytest.mark.parametrize("name", CAPTION_PATH)
def test_the_caption_path_runs_once_before_the_loop(name):
  """The caption projection depends on the prompt alone: computed before the loop, not at every
  step (issue 42). Its first matmul is the one that reads text-encoder states."""
  text = stablehlo(*loop_program(name), "cpu")
  width = TINY[name]["caption_channels"]
  projections = [n for n, line in enumerate(text.splitlines()) if "stablehlo.dot_general" in line
                 and f"x{TEXT_LEN}x{width}x" in line.rsplit(" : (", 1)[1]]
  assert projections and in_loop(text)
  assert [text.splitlines()[n].strip()[:160] for n in projections if n in in_loop(text)] == []


def primitives(jaxpr) -> list[str]:
  """Every primitive of a jaxpr, inner jaxprs (scan bodies, custom rules, pjit) included."""
  names = []
  for eqn in jaxpr.eqns:
    names.append(eqn.primitive.name)
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else [value]:
        sub = getattr(sub, "jaxpr", sub)      # a ClosedJaxpr's jaxpr
        if hasattr(sub, "eqns"):
          names += primitives(sub)
  return names


@pytest.mark.parametrize("name", sorted(TINY))
def test_the_denoising_loop_is_one_scan(name):
  fn, inputs = loop_program(name)
  jaxpr = jax.make_jaxpr(fn)(*inputs).jaxpr
  loops = [e for e in jaxpr.eqns if e.primitive.name in ("scan", "while")]
  assert len(loops) == 1 and loops[0].params["length"] == STEPS, [e.primitive.name for e in jaxpr.eqns]
  # Outside the scan only setup (the initial noise scale; PixArt's and SANA's caption path, two
  # matmuls for each of the prompt's and the negative prompt's captions): every model evaluation
  # is inside.
  outside = [e.primitive.name for e in jaxpr.eqns if e is not loops[0]]
  assert outside.count("dot_general") == (4 if name in CAPTION_PATH else 0) and "scan" not in outside, outside
  # The program does not grow with the step count: the steps are iterations, not copies.
  more, _ = loop_program(name, steps=2 * STEPS)
  assert (len(primitives(jax.make_jaxpr(more)(*inputs).jaxpr))
          == len(primitives(jaxpr)))


def edited_forward_program(name: str):
  """The forward under a BlockEdit of every block that selects nothing (abstract masks)."""
  module, params = bf16_model(name)
  inputs = abstract(families.get(name).example_inputs(module.config))
  blocks, rows = module.config.num_blocks, inputs[0].shape[0]
  edit = BlockEdit(SD((blocks,), jnp.bool_), SD((blocks,), jnp.bool_), SD((rows,), jnp.int32))
  return lambda p, e, *a: module.apply({"params": p}, *a, block_edit=e), (params, edit, *inputs)


@pytest.mark.parametrize("name", sorted(TINY))
def test_block_outputs_have_fusion_barriers_only_under_an_edit(name):
  """Barriers around a block's edit keep an edit that selects nothing from changing how XLA fuses
  (and rounds); without an edit they would only stop fusion across blocks (issue 42). FLUX's and
  SD3's text inputs keep theirs: plain sampling and an empty text swap agree bit for bit
  (tests/flux_test.py::test_text_residual_swap)."""
  count = lambda program: stablehlo(*program, "cpu").count("stablehlo.optimization_barrier")
  plain = count(forward_program(name))
  assert count(edited_forward_program(name)) - plain == 2 * bf16_model(name)[0].config.num_blocks
  if name in ("pixart", "sana"):    # no text barriers either: none at all in plain sampling
    assert plain == count(loop_program(name)) == 0


# Projections per block (issue 42): one matmul for Q, K and V of a self-attention, one for K and
# V of a cross-attention, FLUX's image and text QKV one each, a FLUX single block's [QKV | MLP] one
# (plus its modulation and proj_out). Softmax
# attention is cuDNN's fused call on cuda, so every dot_general left is a projection (and SANA's
# three float32 matmuls of its linear attention).
BLOCK_MATMULS = {"pixart": 7, "sana": 5 + 3, "flux_double": 10, "flux_single": 3, "sd3": 10}
# (family, config change that adds one block of the kind) and the config it adds it to: the SD3
# block added is a joint block that is neither the last (context_pre_only) nor a dual-attention one.
ADD_A_BLOCK = {"pixart": ("pixart", "num_layers"), "sana": ("sana", "num_layers"),
               "flux_double": ("flux", "num_layers"), "flux_single": ("flux", "num_single_layers"),
               "sd3": ("sd3", "num_layers")}


def dot_generals(name: str, swap: bool = False, **changes) -> int:
  """Matmuls in the forward program; with `swap`, FLUX's under a TextAttentionSwap."""
  fam = families.get(name)
  config = fam.config_cls(**{**TINY[name], **changes})
  shapes = jax.eval_shape(lambda: fam.module_cls(config=config).init(
      jax.random.key(0), *fam.example_inputs(config))["params"])
  module = fam.module_cls(config=config, dtype=BF16)
  params, inputs = abstract(shapes, BF16), abstract(fam.example_inputs(config))
  program = (lambda p, *a: module.apply({"params": p}, *a)), (params, *inputs)
  if swap:
    text_swap = TextAttentionSwap(SD((config.num_blocks,), jnp.bool_),
                                  SD((inputs[0].shape[0],), jnp.int32))
    program = (lambda p, s, *a: module.apply({"params": p}, *a, text_swap=s),
               (params, text_swap, *inputs))
  return stablehlo(*program, "cuda").count("stablehlo.dot_general")


@pytest.mark.parametrize("kind", sorted(BLOCK_MATMULS))
def test_matmuls_per_block(cudnn_library, kind):
  name, field = ADD_A_BLOCK[kind]
  blocks = TINY[name][field]
  added = dot_generals(name, **{field: blocks + 1}) - dot_generals(name, **{field: blocks})
  assert added == BLOCK_MATMULS[kind]


def test_the_flux_attention_swap_adds_no_matmul(cudnn_library):
  """A single block's [QKV | MLP] stays one matmul under the swap, which moves the text rows of Q,
  K and V after it: a second matmul rounded an empty swap differently from no swap on some CPUs
  (tests/flux_swap_test.py::test_no_selection_is_the_plain_forward_bit_for_bit)."""
  assert dot_generals("flux", swap=True) == dot_generals("flux")


def compiled_loop_body(text: str) -> list[str]:
  """The lines of an optimized HLO module's while loop body and of every computation it calls
  (fusions, reductions, nested loops), transitively."""
  computations, name = {}, None
  for line in text.splitlines():
    found = re.match(r"(?:ENTRY )?%?([\w.\-]+) \(.*\) -> .* \{$", line)
    if found:
      name = found.group(1)
    elif name is not None:
      computations.setdefault(name, []).append(line)
  bodies = [b for lines in computations.values() for line in lines
            for b in re.findall(r"body=%?([\w.\-]+)", line)]
  assert len(bodies) == 1, bodies
  seen, todo = set(), bodies
  while todo:
    current = todo.pop()
    if current in seen or current not in computations:
      continue
    seen.add(current)
    for line in computations[current]:
      todo += re.findall(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)", line)
  return [line for c in seen for line in computations[c]]


@pytest.mark.parametrize("program", ["loop", "sweep"])
@pytest.mark.parametrize("name", CAPTION_PATH)
def test_cross_attention_keys_and_values_are_computed_before_the_loop(name, program):
  """K and V of every cross-attention read the caption alone, the same at every step (issue 42).
  The program computes them in each step's block; XLA's loop-invariant code motion takes them out
  of the compiled CPU loop, which this reads (the GPU pipeline runs the same pass): no matmul left
  in the loop gives a caption-shaped result (TEXT_LEN rows per prompt; no image-token count or
  width of these tiny models is a multiple of it). In a
  sweep too, where each block picks its caption (the prompt's or the swapped one) by its mask."""
  fn, inputs = (loop_program if program == "loop" else sweep_program)(name)
  text = jax.jit(fn).lower(*inputs).compile().as_text()
  shaped = []
  for line in compiled_loop_body(text):
    found = re.search(r"= \w+\[([\d,]+)\]\{[^}]*\} (?:dot|convolution)\(", line)
    # Rows: the caption's tokens times the rows of prompts (CFG's two, a sweep's interventions).
    if found and [int(d) for d in found.group(1).split(",")][-2] % TEXT_LEN == 0:
      shaped.append(line.strip()[:160])
  assert shaped == []
