"""Composing the stages: ``orchestrator`` (``pipeline run``: every stage from one config,
sweeps and variants), ``stage_cache`` (what each stage recorded, so a rerun skips what is
current), ``report`` and ``report_plots`` (report.md / report.html / report.json)."""
