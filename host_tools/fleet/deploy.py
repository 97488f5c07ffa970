"""`deploy`: put the firmware and a device folder (written by `provision`) on a board, in ONE
mpremote session (commands chained with `+`); --dry-run prints that command instead, ready to
paste into a shell.

What goes on the board depends on its image:
- a stock MicroPython image (default): the firmware as .mpy files (make mpy: build/mpy/firmware),
  ota_boot.mpy (main.py's version selector for over-the-air updates) and the tested
  micropython-lib packages in /lib (umqtt.simple, urequests and its ussl shim), which boot.py
  puts ahead of what the image freezes;
- --frozen, an image built with firmware/manifest.py (see README): the image already holds the
  firmware, ota_boot and those packages, so none is copied, and copies an earlier deploy left are removed
  (files on the board's filesystem would win over the frozen modules).
Always: the device folder into /data, boot.py and main.py, then a reset.

One session, because every mpremote connection starts with Ctrl-C: the app stops and leaves the
watchdog running (an ESP32 cannot stop it; the app parks it at its longest timeout, see
firmware/hal/README.md), and each new connection would stop the board again.
"""
import os
import shlex
import subprocess
import sys

from host_tools.errors import CliError
from host_tools.fleet.provision import BOARD_DATA, DEFAULT_DEVICE_DIR
from host_tools.processes import REPO

DEVICE_FILES = ("config.json", "secrets.json", "ca.der", "ca.json")   # older folders have no ca.json

# Run on the board first (mpremote exec, in /): the data folder, and no firmware or umqtt copies
# left from an earlier deploy: a removed module must not linger, and with --frozen nothing on the
# filesystem may shadow the image's modules. Relative paths, so a test can run it in a folder.
_PREPARE = """import os
def rm(p):
    try:
        st = os.stat(p)
    except OSError:
        return
    if st[0] & 0x4000:
        for e in os.ilistdir(p):
            rm(p + "/" + e[0])
        os.rmdir(p)
    else:
        os.remove(p)
rm("firmware")
rm("ota_boot.mpy")
rm("lib/umqtt")
rm("lib/urequests")
rm("lib/ussl.mpy")
try:
    os.mkdir("%s")
except OSError:
    pass
print("deploy: board prepared")""" % BOARD_DATA.lstrip("/")


def add_commands(sub):
    p = sub.add_parser("deploy", help="copy firmware and a device folder to a board with mpremote")
    p.add_argument("--device-dir", default=DEFAULT_DEVICE_DIR, help="device folder (default %(default)s)")
    p.add_argument("--port", default="auto", help="serial port of the board (default: mpremote's auto)")
    p.add_argument("--frozen", action="store_true",
                   help="the board runs an image built with firmware/manifest.py: copy no firmware")
    p.add_argument("--dry-run", action="store_true", help="print the mpremote command, run nothing")
    p.set_defaults(func=cmd_deploy)


def deploy_plan(repo, device_dir, port="auto", frozen=False):
    """The steps of the one mpremote session, each a list of mpremote arguments.

    The command line is `python -m mpremote connect PORT` followed by the steps joined with
    `+` (see command())."""
    mpy = os.path.join(repo, "build", "mpy")
    needs = [(os.path.join(device_dir, "secrets.json"), "run python -m host_tools provision first")]
    if not frozen:
        needs += [(os.path.join(mpy, "firmware"), "run make mpy first"),
                  (os.path.join(mpy, "lib", "umqtt", "simple.mpy"), "run make mpy first")]
    for need, hint in needs:
        if not os.path.exists(need):
            raise CliError(f"{need} is missing: {hint}")
    steps = [["exec", _PREPARE]]
    if not frozen:
        steps.append(["fs", "cp", "-r", os.path.join(mpy, "firmware"), ":"])
        steps.append(["fs", "cp", "-r", os.path.join(mpy, "lib"), ":"])
        # ota_boot selects the firmware version at boot; an over-the-air update never replaces it
        steps.append(["fs", "cp", os.path.join(mpy, "ota_boot.mpy"), ":"])
    names = [n for n in DEVICE_FILES if n != "ca.json" or os.path.exists(os.path.join(device_dir, n))]
    steps.append(["fs", "cp", *(os.path.join(device_dir, n) for n in names), ":" + BOARD_DATA + "/"])
    steps.append(["fs", "cp", os.path.join(repo, "boot.py"), os.path.join(repo, "main.py"), ":"])
    steps.append(["reset"])
    return steps


def command(steps, port="auto"):
    """The one mpremote command line (argv) that runs every step in one session."""
    argv = [sys.executable, "-m", "mpremote", "connect", port]
    for step in steps:
        argv += ["+", *step]
    return argv


def pasteable(steps, port="auto"):
    """The command as a person pastes it into a shell: one step a line."""
    head = shlex.join([sys.executable, "-m", "mpremote", "connect", port])
    return " \\\n".join([head] + ["  + " + shlex.join(step) for step in steps])


def cmd_deploy(args):
    steps = deploy_plan(REPO, args.device_dir, args.port, args.frozen)
    if args.dry_run:
        print(pasteable(steps, args.port))
        return
    what = "device folder, boot.py, main.py" if args.frozen else \
        "firmware .mpy files, ota_boot, umqtt.simple, urequests, device folder, boot.py, main.py"
    print(f"deploy: {what} to {args.port} in one mpremote session of {len(steps)} steps", flush=True)
    # mpremote prints each file as it copies it: that is the progress.
    r = subprocess.run(command(steps, args.port))
    if r.returncode != 0:
        raise CliError(f"mpremote failed (exit {r.returncode}, its message is above): is the board "
                       f"connected on {args.port}? The board may hold part of this deploy: run it again.")
    print("deploy: done, the board was reset")
