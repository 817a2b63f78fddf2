"""What the hostile cases share: the CLI as a user calls it, the one-error-line check, a
folder's snapshot, and another process holding a directory's lock."""
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()
PROJECT = Path(__file__).resolve().parents[2]
PIPELINE = [sys.executable, "-m", "pipeline.launcher"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result, code, starts: str = "error: "):
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(starts), result.stderr
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class HeldLock:
    """Another process holding a directory's lock until released (deterministic: it says
    when it holds the lock)."""

    def __init__(self, directory: Path, name: str = ".lock"):
        code = ("import sys; from pathlib import Path; from pipeline.core.rundir import locked\n"
                "with locked(Path(sys.argv[1]), name=sys.argv[2]):\n"
                "    print('held', flush=True); sys.stdin.read()")
        self.process = subprocess.Popen([sys.executable, "-c", code, str(directory), name, "pipeline", "run"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=PROJECT)
        assert self.process.stdout.readline().strip() == "held"

    def release(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)


