"""dit_jax: find where knowledge lives inside text-to-image Diffusion Transformers, and edit it there."""
__version__ = "0.1.0"
