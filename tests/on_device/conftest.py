# These tests run on the device (or the emulated Raspberry Pi that tests/device/test_arm64.py
# starts), against artifacts and x86 reference outputs that the host prepared.
import os

if not os.environ.get("EDGE_DEVICE_ARTIFACTS"):
    collect_ignore_glob = ["test_*.py"]
