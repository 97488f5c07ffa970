"""The device harness: the real firmware on the unix MicroPython as a watched subprocess.

It lives in host_tools/harness/device_process.py, where the demo and the benchmark use it too.
"""
from host_tools.harness.device_process import REPO, DeviceProcess, micropypath, micropython  # noqa: F401
