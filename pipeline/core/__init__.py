"""Foundations every other package stands on: the project's errors and exit codes, safe
writes (``fsutil``), the run directory and its lock (``rundir``), the schemas records are read
back with, numeric limits on user input, statistics (intervals, tests), model I/O and the
Keras backend, and the training recipe (loss, optimizer, schedule) that training,
fine-tuning and search share. Nothing here imports a stage."""
