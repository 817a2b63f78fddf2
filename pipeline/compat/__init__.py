"""Every use of another library's internals, in one place: Keras (archives, dtype
policies, seeding), TensorFlow (the converter's per-tensor Dense weights) and KerasTuner
(oracle state, the chief's exit, the retry queue). A library upgrade that breaks one of them
breaks here, and ``tests/compat`` says which."""
