"""FLUX.1-dev / FLUX.1-schnell (sampling; the localization sweep swaps the attention's text input).

    python generate.py --config configs/flux.py --config.checkpoint=/path/to/FLUX.1-dev \
        --config.generate.prompt="a dog in the snow"

For schnell: --config.sample.num_steps=4 --config.sample.guidance_scale=0. Localization follows the paper's code
by default: blocks ranked by its score ("paper": to_out.0 with its bias in double blocks, no W_O in
single blocks), and the intervention swaps the pooled CLIP vector along with the attention's text
input in every intervention of the sweep (the rows the verdict reads); --config.sweep.pooled_swap=False
--config.sweep.score_variant=with_wo, in another out_dir, for the project's own choices. The
attention swap: selected blocks' attention reads the neutral trajectory's text input to it. The
control that replaces the whole text stream from the selected blocks onward (not the paper's; rows
"top+residual", ...): --config.sweep.residual_swap=True.
"""
from configs.common import base_config


def get_config():
  # FluxPipeline's defaults for dev: 28 steps, distilled guidance 3.5, T5 at 512 tokens.
  config = base_config("flux", height=1024, width=1024, num_steps=28, guidance_scale=3.5)
  # The paper's code for FLUX (github ArmanZarei/DiT-Knowledge-Localization): its evaluate() in
  # localization_and_intervention/localize_knowledge_and_intervene_flux.py calls the pipeline with
  # replace_pooled_prompt_embeds=True, so pipelines/flux.py gives the intervened run the neutral
  # prompt's pooled CLIP vector; and it ranks blocks by FluxAttnContCalculatorProcessor's score
  # (attention_processor.py), results.VARIANTS' "paper".
  config.sweep.pooled_swap = True
  config.sweep.score_variant = "paper"
  return config
