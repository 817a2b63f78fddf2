"""The ``pipeline run`` configuration: its typed sections and their defaults (``sections``),
reading a YAML or TOML file with ``--set`` overrides, and the check of every value against
what its stage allows (``load``). The defaults of every command come from here."""
