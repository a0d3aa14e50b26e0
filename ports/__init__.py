"""PyTorch <-> Flax weight conversion: the one rule (checkpoints.py: a Flax parameter path is
diffusers' state-dict key, Linear kernels transposed, conv kernels OIHW <-> HWIO; tensors streamed one
at a time from safetensors) and, per family, the original single-file layouts (pixart.py, sana.py,
flux.py, sd3.py). Name maps and layout rules are data and NumPy: this package imports nothing from
dit_jax, whose loading (dit_jax/pipeline/loading.py) imports it. The command line is convert.py at the
repository root."""
