"""The physics of one training step: FLOPs, bytes, seconds. Plain functions over plain numbers or numpy
arrays (so that the search can evaluate thousands of layouts at once)."""
