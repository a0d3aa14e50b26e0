"""The Shapes world: a procedurally rendered world with captions whose ground truth is known.

world   scenes, the six knowledge categories, captions and neutral captions, held-out combinations
render  Scene -> 32x32 RGB image in [-1, 1]
text    word-level tokenizer + tiny frozen T5 encoder in the transformers on-disk format
classifier  CNN with one head per category, behind the Shapes judge
plugin  the world as a client of the core: registers the "shapes" judge and knowledge set

The shipped assets (the model as a PixArt pipeline folder, the classifier, the model card) live in
the package, at ASSETS, so an installed package finds them wherever it runs from.
"""
import pathlib

ASSETS = pathlib.Path(__file__).resolve().parent / "assets"
