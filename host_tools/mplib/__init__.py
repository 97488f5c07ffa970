"""micropython-lib packages for the device, fetched and checked: `python -m host_tools.mplib`."""
