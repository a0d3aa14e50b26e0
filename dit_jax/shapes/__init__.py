"""The Shapes world: a procedurally rendered world with captions whose ground truth is known.

world   scenes, the six knowledge categories, captions and neutral captions, held-out combinations
render  Scene -> 32x32 RGB image in [-1, 1]
text    word-level tokenizer + tiny frozen T5 encoder in the transformers on-disk format
judge   CNN classifier with one head per category (the knowledge-presence judge)

Built assets live in assets/shapes/ (tokenizer/, text_encoder/, judge/).
"""
