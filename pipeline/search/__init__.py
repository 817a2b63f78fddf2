"""``pipeline search``: the most accurate model within a latency/size/RAM budget, measured.

Each trial (a KerasTuner trial, so the search resumes from its directory and can run as a
chief with workers) trains a zoo model variant briefly, optionally prunes it, quantizes it
(int8 by default), times it with the same code as ``pipeline bench`` (in a fresh process
that loads only edge_runtime, or on ``--device`` over SSH) and scores its **int8 artifact**
on the validation split. The objective is that accuracy when the artifact fits the budgets,
and below every fitting trial when it does not. Before a candidate is trained, its untrained
twin is measured (``Screen``): architectures over budget are never trained. The test split
is used once: for the winner (made a normal run directory that later stages continue from)
and for the zoo model's default, trained in the same search as the baseline, and the two are
timed side by side.

One module per concern: ``space`` (the space, the options, a candidate's model), ``timer``
(timing where the trials run, the relative budget, pooled timings), ``screening`` (untrained
twins), ``trials`` (the KerasTuner tuner and one trial), ``winner`` (re-scoring by
cross-validation, the winner's run, the baseline), ``summary`` (what the search says and
writes), ``command`` (the command's work on its directory).
"""
from pipeline.search.command import resumes, search
from pipeline.search.screening import Screen
from pipeline.search.space import COMMON_SPACE, MARKER, SPACES, SearchOptions, architecture, options_from_config
from pipeline.search.summary import choice_text, describe, test_figure
from pipeline.search.timer import BUDGET_FILE, Timer

__all__ = ["BUDGET_FILE", "COMMON_SPACE", "MARKER", "SPACES", "Screen", "SearchOptions", "Timer", "architecture",
           "choice_text", "describe", "options_from_config", "resumes", "search", "test_figure"]
