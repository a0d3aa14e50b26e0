"""PyTorch <-> Flax weight conversion for the DiT backbones (one module per model family)."""
