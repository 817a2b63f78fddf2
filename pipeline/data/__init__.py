"""Data sets: the registry and loaders (``loaders``: digits, MNIST, npz, IDX, image
folders), the in-memory ``Dataset`` and its splits, the decode cache, streamed batches for
training, and the run context: what a stage after training reads from a run directory (its
model and its data, reloaded exactly and checked against their recorded hashes)."""
