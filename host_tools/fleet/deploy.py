"""`deploy`: put the compiled firmware (make mpy), micropython-lib (.mplib) and a device folder
(written by `provision`) on a board with mpremote; --dry-run prints the commands instead.
"""
import os
import subprocess
import sys

from host_tools.errors import CliError
from host_tools.fleet.provision import BOARD_DATA, DEFAULT_DEVICE_DIR
from host_tools.processes import REPO


def add_commands(sub):
    p = sub.add_parser("deploy", help="copy firmware and a device folder to a board with mpremote")
    p.add_argument("--device-dir", default=DEFAULT_DEVICE_DIR, help="device folder (default %(default)s)")
    p.add_argument("--port", default="auto", help="serial port of the board (default: mpremote's auto)")
    p.add_argument("--dry-run", action="store_true", help="print the mpremote commands, run nothing")
    p.set_defaults(func=cmd_deploy)


def deploy_plan(repo, device_dir, port="auto"):
    """The mpremote command lines that put firmware, libraries and the device folder on a board."""
    mpy = os.path.join(repo, "build", "mpy")
    for need, hint in ((os.path.join(mpy, "firmware"), "run make mpy first"),
                       (os.path.join(repo, ".mplib", "umqtt", "simple.py"), "run make setup first"),
                       (os.path.join(device_dir, "secrets.json"), "run python -m host_tools provision first")):
        if not os.path.exists(need):
            raise CliError(f"{need} is missing: {hint}")
    base = [sys.executable, "-m", "mpremote", "connect", port]
    plan = [base + ["fs", "mkdir", ":lib"], base + ["fs", "mkdir", ":lib/umqtt"],
            base + ["fs", "mkdir", ":lib/urequests"],
            base + ["fs", "mkdir", ":" + BOARD_DATA]]
    plan.append(base + ["fs", "cp", "-r", os.path.join(mpy, "firmware"), ":"])
    # urequests (over-the-air downloads) imports `ussl`, which current MicroPython lacks: the shim
    for name in ("umqtt/simple.py", "urequests/__init__.py", "ussl.py"):
        src = os.path.join(repo, ".mplib", name)
        if os.path.exists(src):
            plan.append(base + ["fs", "cp", src, ":lib/" + name])
    for name in ("config.json", "secrets.json", "ca.der", "ca.json"):
        if name != "ca.json" or os.path.exists(os.path.join(device_dir, name)):   # older folders have no ca.json
            plan.append(base + ["fs", "cp", os.path.join(device_dir, name), ":" + BOARD_DATA + "/" + name])
    # ota_boot selects the firmware version at boot; an over-the-air update never replaces it
    plan.append(base + ["fs", "cp", os.path.join(mpy, "ota_boot.mpy"), ":"])
    plan.append(base + ["fs", "cp", os.path.join(repo, "boot.py"), os.path.join(repo, "main.py"), ":"])
    plan.append(base + ["reset"])
    return plan


def cmd_deploy(args):
    plan = deploy_plan(REPO, args.device_dir, args.port)
    for argv in plan:
        if args.dry_run:
            print(" ".join(argv[1:]))
            continue
        r = subprocess.run(argv)
        # mkdir of a folder that exists fails harmlessly; anything else stops the deploy
        if r.returncode != 0 and "mkdir" not in argv:
            raise CliError(f"mpremote failed ({' '.join(argv[3:])}): is the board connected on {args.port}?")
