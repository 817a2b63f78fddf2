"""The device package builds from this repository as edge_runtime alone: no ``pipeline/``,
its own ``edge-runtime`` command, numpy and LiteRT as its only requirements."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "packages" / "edge-runtime"


def test_the_device_wheel_holds_edge_runtime_alone(tmp_path):
    pytest.importorskip("hatchling")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q",
                    "-w", str(tmp_path), str(PACKAGE)], check=True, timeout=300)
    wheel, = tmp_path.glob("edge_runtime-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in names}
    assert packages == {"edge_runtime", wheel.name.split("-py3")[0] + ".dist-info"}
    source = Path(__file__).resolve().parents[2] / "edge_runtime"
    assert sorted(n for n in names if n.startswith("edge_runtime/")) == sorted(
        f"edge_runtime/{p.name}" for p in source.glob("*.py"))
    info = next(n for n in names if n.endswith("METADATA"))
    metadata = zipfile.ZipFile(wheel).read(info).decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert [r for r in requires if "extra ==" not in r] == ["ai-edge-litert<3,>=2.0", "numpy<3,>=1.26"]
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "edge-runtime = edge_runtime.cli:console" in zipfile.ZipFile(wheel).read(entry).decode()
