"""DreamBooth on FLUX.1-dev / schnell: the selected blocks learn a subject from a folder of photos.

    python train.py --config configs/flux_dreambooth.py --config.checkpoint=/path/to/pipeline \
        --config.instance_dir=photos/ --config.blocks=runs/localize_flux/scores.json --config.k=4 \
        --config.localized_concept="a dog" --config.lora_rank=16

See README ("Fine-tuning real models") for the memory to expect.
"""
from dit_jax.train.defaults import dreambooth, train_config


def get_config():
  return dreambooth(train_config("flux", "personalization", resolution=1024, num_steps=28,
                                 guidance_scale=3.5))
