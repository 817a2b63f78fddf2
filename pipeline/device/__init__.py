"""Measuring on a device: ``bench`` (latency of every artifact here or over SSH), ``timing``
(interleaved rounds, percentiles, the noise between two measurements), ``remote`` (the SSH
device and its runtime) and ``figures`` (accuracy against latency, drawn from those
measurements)."""
