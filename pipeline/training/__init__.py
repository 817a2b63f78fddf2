"""Making a run's model: ``train`` (fit and evaluate on the run's data, any Keras backend),
``import_model`` (a model the user has), and what training needs around it: checkpoints and
resume, distribution over devices and machines, throughput, and the collapse check."""
