"""The long end-to-end cases, kept out of the CI suite so that it stays short on 2 slow cores
(tests/ keeps one fast test of each of their paths; see docs/benchmarks.md). Run them with

    python -m pytest -q -p no:cacheprovider benchmarks/e2e

They share the suite's fixtures (the trained seed CNN, digits, the loopback SSH server)."""
from tests.conftest import _shared_runs_are_left_as_they_were, digits, trained_run  # noqa: F401
from tests.device.test_remote import default_remote_dir, sshd  # noqa: F401
from tests.running.test_run import small_run  # noqa: F401
