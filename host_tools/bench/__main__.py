"""`make bench` (python -m host_tools.bench): figures, not pass/fail.

1. the firmware's total .mpy size (make mpy), and the largest state blob the order core can be
   driven to save against the size beyond which restore refuses one (mp_state_blob.py);
2. the smallest `-X heapsize` at which the real order flow (press -> delivered, over TLS
   against the local hub and order service) still completes, running the .mpy build; then the
   device-true figures, on 32-bit unix MicroPythons built by build32.sh (make mp32): the same
   flow with the firmware frozen (heap32_frozen_kib, on the build that freezes it) and as .mpy
   files on the filesystem, as `deploy` installs it onto a stock image (heap32_mpy_kib, on the
   build standing for a stock ESP32 image, build32.sh --stock: the firmware's names are interned
   in the heap there, as on such a board), the link alone (heap32_link_kib, heap32_link_mpy_kib),
   and the heap the imported firmware keeps (code32_*_bytes), with each module's share
   (code32_*_modules); the *_mpy_* figures all run on the stock build. The resident .mpy code
   is split into the functions' bytecode, the interned names and the rest (code32_mpy_breakdown).
   Each 32-bit binary's build record, the tree and the digest of its inputs it was built from
   (build32; build32.sh builds by that digest, build_inputs.py), is printed and stored, with
   the tree measured (tree).
   Every device drives its display as the ESP32 does (framebuf, one write per refresh:
   ORDER_DEVICE_DISPLAY=framebuf), not the terminal renderer;
3. over N presses: median and p95 of press -> PUBACK and press -> "accepted" shown, measured on
   the device's own clock (its EVT lines), and the peak gc.mem_alloc() the device reports;
4. stock umqtt.simple against the link's client (which keeps umqtt's ping and disconnect):
   QoS 1 publish round trips, connect, subscribe, ping;
5. the official azure-iot-device SDK against ours for the same job (connect + 20 order
   messages at QoS 1, each waiting for its PUBACK): wall time, CPU time and peak RSS of the
   whole process, medians over several runs, and the ratios ours/SDK;
6. DPS: a fresh device's registration time (register -> assigned, against the local DPS, which
   answers retry-after=3 as Azure's does, so most of it is that wait) and the extra heap DPS
   needs at its peak: the smallest -X heapsize for register + connect to the assigned hub, less
   the smallest for the connect alone.
7. the cloud path under load (order_load.py): orders/s end to end with 1, 50 and 200 simulated
   devices, request -> 'accepted' percentiles at 100 orders/s offered, exactly-once checked;
8. an over-the-air update of today's firmware (make mpy, published to the local hub): time to
   download + verify + install, time until the new version confirmed (restart, connect, twin),
   the smallest heap it completes in, and the peak gc.mem_alloc() during download and install.
Prints a table and writes the figures as JSON (default build/bench.json).
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

from host_tools import processes
from host_tools.bench import build_inputs, mpy_code, order_load
from host_tools.fleet import provision
from host_tools.files import write_atomic
from host_tools.harness.device_process import DeviceProcess, micropython, micropypath
from host_tools.processes import REPO

BUILD = os.path.join(REPO, "build")
MPY = os.path.join(BUILD, "mpy")
SKU = "COFFEE-1KG"
FAST_TIMELINE = "payment_authorized=0.1,shipped=0.2,delivered=0.3"
PROFILE = ["--name", "Bench", "--address", "1 Loop St", "--shipping-method", "standard",
           "--payment-token", "tok_bench"]
SDK_PORT = 8883  # the SDK cannot use another port
DEVICE_HEAP_K = 128  # about what MicroPython has on an ESP32 without PSRAM
BUILD32 = os.path.join(REPO, "host_tools", "bench", "build32.sh")
DISPLAY = {"ORDER_DEVICE_DISPLAY": "framebuf"}   # the display as the ESP32 drives it


class Target:
    """Which micropython runs the firmware, from where: main.py's folder and MICROPYPATH.

    board_path: (folder, MICROPYPATH) that name the firmware's files as a board's filesystem
    does ("firmware/app/orders.mpy", "lib/umqtt/simple.mpy"), for the resident-code figure: a
    .mpy module's file name is interned in the heap when it loads, so an absolute path would
    make that figure depend on where the checkout lies."""

    def __init__(self, binary, main_dir, path, board_path=None):
        self.binary, self.main_dir, self.path = binary, main_dir, path
        self.board_path = board_path

    def env(self):
        # for the bench's own scripts, which import host_tools.bench.rss from the repository
        return dict(os.environ, MICROPYPATH=self.path + ":" + REPO, **DISPLAY)


def default_target():
    return Target(micropython(), MPY, micropypath(MPY))  # micropypath ends with REPO already


def build_record(binary):
    """What build32.sh recorded next to the binary: the tree and inputs digest it was built
    from (build_inputs.py), or None."""
    try:
        with open(binary + ".json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def build_summary(record):
    """The part of a build record the bench stores and prints."""
    return {k: record.get(k) for k in ("tree", "digest", "objects", "frozen", "frozen_files", "source")} | \
        {"micropython": record.get("settings", {}).get("micropython")}


def build32(stock=False):
    """(the 32-bit micropython, None), or (None, one line saying why there is none).

    stock: the build standing for a stock ESP32 image (no firmware frozen), not the one with
    the firmware frozen in."""
    name = "mp32 stock" if stock else "mp32"
    try:
        r = subprocess.run(["sh", BUILD32] + (["--stock"] if stock else []), cwd=REPO,
                           capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{name}: {e}"
    if r.returncode == 0:
        return r.stdout.strip().splitlines()[-1], None
    lines = (r.stderr.strip() or r.stdout.strip()).splitlines()   # its reason is the last line
    return None, lines[-1] if lines else f"{name}: build32.sh exited {r.returncode}"


def targets32(binary, stock_binary):
    """The two ways a board holds the firmware, each on the 32-bit build that stands for it
    (a target whose build is missing is left out).

    frozen, on the build with the firmware frozen in: nothing but .frozen on the path (the
    firmware, umqtt.simple and ssl are in the image); main.py runs from a folder holding only
    main.py, as on a board.
    mpy, on the stock build: the firmware and umqtt.simple as .mpy files (what deploy installs,
    build/mpy), ahead of .frozen as on a board after boot.py; only ssl comes from .frozen (the
    image's umqtt.simple and urequests are there too, shadowed, as on a stock image)."""
    app = os.path.join(BUILD, "mp32", "app")
    os.makedirs(app, exist_ok=True)
    shutil.copy(os.path.join(REPO, "main.py"), app)
    targets = {}
    if binary:
        targets["frozen"] = Target(binary, app, ".frozen")
    if stock_binary:
        # board_path: '' (the folder), then lib, then .frozen, as on a board after boot.py; the
        # first entry is doubled because the unix port replaces sys.path[0] with the script's folder
        targets["mpy"] = Target(stock_binary, MPY, ":".join((MPY, os.path.join(MPY, "lib"), ".frozen")),
                                board_path=(MPY, "::lib:.frozen"))
    return targets


def code_resident(target):
    """mp_imports.py's figures: bytes the imported firmware keeps in the heap ("code_resident"),
    {module: its share} ("modules"), the files the imports loaded ("files", relative to "cwd"),
    and the interned names before and after ("qstr": two {n_qstr, n_total_bytes, ...})."""
    script = os.path.join(REPO, "host_tools", "bench", "mp_imports.py")
    if target.board_path:
        cwd, path = target.board_path
        env = dict(os.environ, MICROPYPATH=path, **DISPLAY)
    else:
        cwd, env = REPO, target.env()
    r = measure([target.binary, script], env, cwd=cwd)[3]
    r["cwd"] = cwd
    r["qstr"] = [{k: int(v) for k, v in re.findall(r"(n_\w+)=(\d+)", line)}
                 for line in r.get("printed", []) if line.startswith("qstr pool:")]
    return r


def resident_breakdown(r, mp_dir):
    """What the resident .mpy code is made of: the kept functions' bytecode (mpy_code.py over the
    .mpy files the imports loaded), the names interned in the heap (qstr_info's n_total_bytes
    after less before: the strings and the pools that index them), and the rest (function,
    class and module objects, their dicts, constants, the .mpy's tables, heap block rounding)."""
    files = [os.path.join(r["cwd"], f) for f in r["files"] if f.endswith(".mpy")]
    code = mpy_code.bytecode(files, mp_dir)
    before, after = r["qstr"]
    names = after["n_total_bytes"] - before["n_total_bytes"]
    return {"total_bytes": r["code_resident"], "bytecode_bytes": code["bytecode_bytes"],
            "functions": code["functions"], "mpy_files": code["files"],
            "bytecode_bytes_run_once": code["loaded_bytecode_bytes"] - code["bytecode_bytes"],
            "qstr_bytes": names, "qstrs": after["n_qstr"] - before["n_qstr"],
            "qstr_str_data_bytes": after["n_str_data_bytes"] - before["n_str_data_bytes"],
            "rest_bytes": r["code_resident"] - code["bytecode_bytes"] - names}




def _p(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def mpy_size():
    subprocess.run(["make", "-s", "mpy"], cwd=REPO, check=True, capture_output=True)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(MPY, "firmware"))
               for f in fs if f.endswith(".mpy"))


def state_blob():
    """The worst-case state blob and its limit, on MicroPython running the .mpy build."""
    r = measure([micropython(), os.path.join(REPO, "host_tools", "bench", "mp_state_blob.py")],
                dict(os.environ, MICROPYPATH=micropypath(MPY)))[3]
    return {"state_blob_max_bytes": r["state_blob_max_bytes"],
            "state_blob_limit_bytes": r["state_blob_limit_bytes"], "state_blob_case": r["case"]}


def _device(dev_dir, heap=None, target=None):
    t = target or default_target()
    return DeviceProcess(dev_dir, heapsize=heap, code_dir=t.main_dir, binary=t.binary,
                         env={"MICROPYPATH": t.path, **DISPLAY}).start()


def _fresh(dev_dir):
    # No orders from an earlier run: the device boots to "ready".
    for name in ("state.json", "state.json.tmp", "state.json.corrupt"):
        if os.path.exists(os.path.join(dev_dir, name)):
            os.remove(os.path.join(dev_dir, name))


def flow_completes(dev_dir, heap_k, target=None, timeout=30):
    """One fresh boot at this heap size: press -> delivered?"""
    _fresh(dev_dir)
    dev = _device(dev_dir, "%dK" % heap_k, target)
    try:
        dev.wait_screen("ready", timeout)
        mark = dev.mark()
        dev.gesture("press")
        dev.wait_screen("delivered", timeout, since=mark)
        return True
    except AssertionError:
        return False
    finally:
        dev.stop()
        dev.close()


def smallest_heap(dev_dir, target=None, lo=8, hi=256, step=1):
    if not flow_completes(dev_dir, hi, target):
        return None
    while hi - lo > step:
        mid = (lo + hi) // 2
        if flow_completes(dev_dir, mid, target):
            hi = mid
        else:
            lo = mid
        print(f"  heapsize {mid}K: {'ok' if hi == mid else 'fails'}", file=sys.stderr)
    return hi


def press_latencies(dev_dir, presses, heap=None):
    _fresh(dev_dir)
    dev = _device(dev_dir, heap)
    to_puback, to_accepted = [], []
    try:
        dev.wait_screen("ready", 30)
        for _ in range(presses):
            mark = dev.mark()
            dev.gesture("press")
            g = dev.wait(lambda e: e.get("gesture") == "press", 30, "press", mark)
            p = dev.wait(lambda e: "puback" in e, 30, "PUBACK", mark)
            a = dev.wait_screen("accepted", 30, mark)
            dev.wait_screen("delivered", 30, mark)
            to_puback.append(p["t"] - g["t"])
            to_accepted.append(a["t"] - g["t"])
        peaks = [e["peak_alloc"] for e in dev.find("peak_alloc")]
    finally:
        dev.stop()
        dev.close()
    return to_puback, to_accepted, (max(peaks) if peaks else None)


def measure(argv, env=None, timeout=60, cwd=REPO):
    """Run a process to the end: (wall s, CPU s, peak RSS KiB, its JSON output).

    The JSON is its last line; lines it printed before are in it as "printed".
    Peak RSS is what the process reports as its own VmHWM when it does ("peak_rss_kib"):
    ru_maxrss of a child includes the RSS of the parent that forked it."""
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    killer.cancel()
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    proc.stderr.close()
    if proc.returncode != 0:
        command = " ".join(os.path.basename(a) for a in argv)
        raise RuntimeError(f"{command} failed ({proc.returncode}): "
                           f"{(err + out).decode(errors='replace')[-800:]}")
    lines = out.splitlines()
    result = json.loads(lines[-1])
    if len(lines) > 1:
        result.setdefault("printed", [line.decode(errors="replace") for line in lines[:-1]])
    return wall, usage.ru_utime + usage.ru_stime, result.get("peak_rss_kib", usage.ru_maxrss), result


def _ours_cmd(mp_dir, n, heap_k, binary=None):
    return [binary or micropython(), "-X", "heapsize=%dK" % heap_k,
            os.path.join(REPO, "host_tools", "bench", "mp_orders.py"), mp_dir, str(n)]


def link_min_heap(mp_dir, n, target=None, lo=8, hi=256, step=1):
    """Smallest heap for the link alone: connect over TLS + n QoS 1 orders."""
    t = target or default_target()
    return min_heap(lambda h: _ours_cmd(mp_dir, n, h, t.binary), lo, hi, step, t.env())


def _dps_cmd(dps_dir, heap_k):
    return [micropython(), "-X", "heapsize=%dK" % heap_k,
            os.path.join(REPO, "host_tools", "bench", "mp_dps.py"), dps_dir]


def min_heap(cmd, lo=8, hi=256, step=1, env=None):
    """Smallest -X heapsize (KiB) at which cmd(heap_k) runs to the end."""
    env = env or dict(os.environ, MICROPYPATH=micropypath(MPY))

    def ok(h):
        try:
            measure(cmd(h), env)
            return True
        except RuntimeError:
            return False
    if not ok(hi):
        return None
    while hi - lo > step:
        mid = (lo + hi) // 2
        hi, lo = (mid, lo) if ok(mid) else (hi, mid)
    return hi


def dps_figures(hub_dir, dps_dir, runs, heap_k):
    """Registration time over `runs` fresh registrations, and the heap DPS adds at its peak."""
    group = json.loads(subprocess.run(
        [sys.executable, "-m", "host_tools", "dps", "group", "add", "bench", "--data", hub_dir],
        cwd=REPO, check=True, capture_output=True, text=True).stdout)
    subprocess.run([sys.executable, "-m", "host_tools", "provision", "--dps", "--id-scope", group["idScope"],
                    "--registration-id", "bench-dps", "--dps-host", "127.0.0.1", "--hub-data", hub_dir,
                    "--out", dps_dir], input=group["primaryKey"] + "\n", cwd=REPO, check=True,
                   capture_output=True, text=True)
    env = dict(os.environ, MICROPYPATH=micropypath(MPY))
    rows = [measure(_dps_cmd(dps_dir, heap_k), env)[3] for _ in range(runs)]
    reg = [r["registration_us"] / 1e6 for r in rows]
    waited = statistics.median(r["retry_after_waited_s"] for r in rows)
    with_dps = min_heap(lambda h: _dps_cmd(dps_dir, h))
    return {"registration_s_median": statistics.median(reg), "registration_s_max": max(reg),
            "retry_after_waited_s": waited, "min_heapsize_kib": with_dps}


def compare_with_sdk(work, hub_dir, ca_pem, mp_dir, runs, n, heap_k):
    from host_tools.cloud.hub.store import Store
    store = Store(os.path.join(hub_dir, "hub.sqlite3"))
    key = (store.get_device("bench-sdk") or store.add_device("bench-sdk"))["primary_key"]
    store.close()
    conn = os.path.join(work, "sdk.conn")
    write_atomic(conn, f"HostName=127.0.0.1;DeviceId=bench-sdk;SharedAccessKey={key}", mode=0o600)
    ours_cmd = _ours_cmd(mp_dir, n, heap_k)
    ours_env = dict(os.environ, MICROPYPATH=micropypath(MPY))
    sdk_cmd = [sys.executable, "-m", "host_tools.bench.sdk_orders", conn, ca_pem, str(n)]
    ours, sdk = [], []
    for _ in range(runs):  # interleaved, so drift on the machine hits both alike
        ours.append(measure(ours_cmd, ours_env))
        sdk.append(measure(sdk_cmd))

    def summary(rows):
        pub = [u / 1000 for r in rows for u in r[3]["publish_us"]]
        return {"wall_s": statistics.median(r[0] for r in rows),
                "cpu_s": statistics.median(r[1] for r in rows),
                "peak_rss_kib": statistics.median(r[2] for r in rows),
                "connect_ms": statistics.median(r[3]["connect_us"] / 1000 for r in rows),
                "publish_ms_median": statistics.median(pub), "publish_ms_p95": _p(pub, 0.95)}
    o, s = summary(ours), summary(sdk)
    o["heapsize_kib"] = heap_k
    ratios = {k: o[k] / s[k] for k in ("wall_s", "cpu_s", "peak_rss_kib") if s[k]}
    return o, s, ratios


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m host_tools.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--presses", type=int, default=20)
    ap.add_argument("--messages", type=int, default=20, help="order messages in the SDK comparison")
    ap.add_argument("--runs", type=int, default=5, help="runs of each side in the SDK comparison")
    ap.add_argument("--heap", type=int, default=DEVICE_HEAP_K,
                    help="KiB of heap for our side in the latency runs and the SDK comparison (default %(default)s)")
    ap.add_argument("--only32", action="store_true",
                    help="only the 32-bit build's figures (heap32_*, code32_*), the quick way to see a change")
    ap.add_argument("--load-seconds", type=float, default=10.0, help="seconds of each order-load run")
    ap.add_argument("--only-load", action="store_true", help="run only the order-load part (6.)")
    ap.add_argument("--out", default=os.path.join(BUILD, "bench.json"))
    args = ap.parse_args(argv)

    if args.only_load:
        load = order_load.bench(os.path.join(BUILD, "bench-orders"), seconds=args.load_seconds,
                                log=lambda m: print(m, file=sys.stderr))
        print("\n".join(f"{k:<60}  {v}" for k, v in load_rows(load)))
        return
    work = os.path.join(BUILD, "bench")
    shutil.rmtree(work, ignore_errors=True)
    hub_dir, orders_dir = os.path.join(work, "hub"), os.path.join(work, "orders")
    dev_dir, mp_dir = os.path.join(work, "device"), os.path.join(work, "mp-orders")
    results = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "tree": build_inputs.tree_describe(REPO), "micropython": micropython()}
    results["mpy_bytes"] = mpy_size()
    print(f"firmware .mpy: {results['mpy_bytes']} bytes", file=sys.stderr)
    results.update(state_blob())
    binary, why = build32()
    results["micropython32"] = binary or why
    if why:
        print(why, file=sys.stderr)
    stock_binary, why = build32(stock=True)
    results["micropython32_stock"] = stock_binary or why
    if why:
        print(why, file=sys.stderr)
    # which tree and inputs each 32-bit binary was built from (build32.sh decides by them)
    records = {name: build_record(b) for name, b in (("frozen", binary), ("stock", stock_binary)) if b}
    results["build32"] = {name: build_summary(rec) for name, rec in records.items() if rec}
    services = []
    try:
        try:
            port = 0 if args.only32 else SDK_PORT   # only the SDK needs 8883
            hub, info = processes.start(["hub", "--data", hub_dir, "--mqtt-port", str(port),
                                         "--api-port", "0", "--amqp-port", "0"], os.path.join(hub_dir, "hub.log"), name="hub")
        except processes.ServiceFailed as e:
            sys.exit(f"bench: the hub must listen on {SDK_PORT} for the SDK (is a test or demo using it?): {e}")
        services.append(hub)
        provision.provision_local("bench-button", dev_dir, hub_dir, info["mqtt_port"], SKU, 1)
        provision.provision_local("bench-mp", mp_dir, hub_dir, info["mqtt_port"], SKU, 1)
        subprocess.run([sys.executable, "-m", "host_tools", "orders", "profile", "set", "bench-button",
                        *PROFILE, "--data", orders_dir], cwd=REPO, check=True, capture_output=True)
        orders, _ = processes.start(["orders", "serve", "--hub-data", hub_dir, "--data", orders_dir,
                                     "--poll-timeout", "0.2", "--timeline", FAST_TIMELINE],
                                    os.path.join(orders_dir, "serve.log"), name="order service")
        services.append(orders)

        t32 = targets32(binary, stock_binary)
        for name, target in t32.items():
            print(f"32-bit, firmware {name}: searching the smallest heap for press -> delivered ...", file=sys.stderr)
            results[f"heap32_{name}_kib"] = smallest_heap(dev_dir, target)
        heap = args.heap
        if not args.only32:
            print("searching the smallest heap for press -> delivered over TLS ...", file=sys.stderr)
            results["min_heapsize_kib"] = smallest_heap(dev_dir)
            print(f"{args.presses} presses ...", file=sys.stderr)
            if results["min_heapsize_kib"] and results["min_heapsize_kib"] > heap:
                # the device would not boot: measure a little above its floor rather than not at all
                heap = results["min_heapsize_kib"] + 4
                print(f"the flow needs more than --heap {args.heap}K: latencies at {heap}K", file=sys.stderr)
            puback, accepted, peak = press_latencies(dev_dir, args.presses, "%dK" % heap)
            results["press_to_puback_ms"] = {"median": statistics.median(puback) * 1000, "p95": _p(puback, 0.95) * 1000}
            results["press_to_accepted_ms"] = {"median": statistics.median(accepted) * 1000, "p95": _p(accepted, 0.95) * 1000}
            results["device_peak_gc_alloc"] = peak
        # The rest is the link alone: no order service answering its messages with C2D.
        processes.stop(services.pop())
        if t32:
            print("32-bit: the link alone, and the firmware's resident heap ...", file=sys.stderr)
        if "frozen" in t32:
            results["heap32_link_kib"] = link_min_heap(mp_dir, args.messages, t32["frozen"])
            r = code_resident(t32["frozen"])
            results["code32_frozen_bytes"], results["code32_frozen_modules"] = r["code_resident"], r["modules"]
        if "mpy" in t32:
            results["heap32_link_mpy_kib"] = link_min_heap(mp_dir, args.messages, t32["mpy"])
            r = code_resident(t32["mpy"])
            results["code32_mpy_bytes"], results["code32_mpy_modules"] = r["code_resident"], r["modules"]
            source = results["build32"].get("stock", {}).get("source")
            try:
                results["code32_mpy_breakdown"] = resident_breakdown(r, os.path.join(REPO, source or "?"))
            except Exception as e:   # no source, or mpy-tool cannot read them: the rest still prints
                results["code32_mpy_breakdown"] = f"no breakdown: {e}"
        if not args.only32:
            print(f"SDK comparison: {args.runs} runs of connect + {args.messages} order messages ...", file=sys.stderr)
            results["umqtt_vs_link_ms"] = measure(
                [micropython(), os.path.join(REPO, "host_tools", "bench", "mp_umqtt.py"), mp_dir, str(args.messages)],
                dict(os.environ, MICROPYPATH=micropypath(MPY)))[3]
            results["link_min_heapsize_kib"] = link_min_heap(mp_dir, args.messages)
            results["code_resident_bytes"] = code_resident(default_target())["code_resident"]
            print("DPS: registrations and the heap they need ...", file=sys.stderr)
            results["dps"] = dps_figures(hub_dir, os.path.join(work, "dps-device"), 3, heap)
            results["dps"]["connect_min_heapsize_kib"] = link_min_heap(mp_dir, 0)
            print("over-the-air update of today's firmware ...", file=sys.stderr)
            results["ota"] = ota_apply(dev_dir, hub_dir)
            ours, sdk, ratios = compare_with_sdk(work, hub_dir, os.path.join(hub_dir, "certs", "ca.pem"),
                                                 mp_dir, args.runs, args.messages, heap)
            results.update(ours=ours, sdk=sdk, ratios_ours_over_sdk=ratios)
    finally:
        for proc in reversed(services):
            processes.stop(proc)
    if not args.only32:
        print("order load on the cloud path ...", file=sys.stderr)
        results["order_load"] = order_load.bench(os.path.join(work, "orders-load"), seconds=args.load_seconds,
                                                 log=lambda m: print(m, file=sys.stderr))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(table(results))
    print(f"(figures written to {os.path.relpath(args.out, REPO)})")


def ota_apply(dev_dir, hub_dir, heaps=(128, 144, 160, 176, 192, 224, 256), timeout=60):
    """Publish today's build as a release and update the bench device to it, at the smallest of
    `heaps` (KiB) where the update completes; times from the device's own clock (EVT lines)."""
    cli = [sys.executable, "-m", "host_tools", "ota"]
    subprocess.run(cli + ["publish", "--version", "999.0", "--data", hub_dir, "--from", MPY],
                   cwd=REPO, check=True, capture_output=True)
    size = os.path.getsize(os.path.join(hub_dir, "releases", "firmware", "999.0", "bundle.bin"))
    for heap_k in heaps:
        _fresh(dev_dir)
        shutil.rmtree(os.path.join(dev_dir, "fw"), ignore_errors=True)
        dev = _device(dev_dir, "%dK" % heap_k)
        try:
            dev.wait_online(timeout)
            mark = dev.mark()
            subprocess.run(cli + ["rollout", "--version", "999.0", "--devices", "bench-button", "--data", hub_dir],
                           cwd=REPO, check=True, capture_output=True)
            start = dev.wait(lambda e: e.get("ota") == "firmware" and (e.get("version") == "999.0"
                                                                       or e.get("phase") == "failed"),
                             timeout, "download", mark)
            done = dev.wait(lambda e: "ota_done" in e or e.get("phase") == "failed", timeout, "installed", mark)
            if not done.get("ok"):
                print(f"  heapsize {heap_k}K: update fails ({dev.find('reason', mark)[-1]['reason']})", file=sys.stderr)
                continue
            confirmed = dev.wait(lambda e: e.get("ota_confirmed"), timeout, "confirmed", mark)
        except AssertionError as e:
            print(f"  heapsize {heap_k}K: update fails ({str(e).splitlines()[0]})", file=sys.stderr)
            continue
        finally:
            dev.stop()
            dev.close()
            # the next run starts on the factory firmware again
            _fresh(dev_dir)
            shutil.rmtree(os.path.join(dev_dir, "fw"), ignore_errors=True)
            hub_twin = [sys.executable, "-m", "host_tools", "twin", "set-desired", "bench-button",
                        '{"firmware": null}', "--data", hub_dir]
            subprocess.run(hub_twin, cwd=REPO, capture_output=True)
        return {"bundle_bytes": size, "heapsize_kib": heap_k,
                "install_s": done["t"] - start["t"], "to_confirmed_s": confirmed["t"] - start["t"],
                "peak_alloc": done["ota_peak"], "base_alloc": done["ota_base"]}
    return {"bundle_bytes": size, "heapsize_kib": None}


def _largest(modules, n=6):
    top = sorted(modules.items(), key=lambda kv: -kv[1])[:n]
    return " ".join("%s %d" % (name.replace("firmware.", ""), b) for name, b in top)


def _kib(v):
    return f"{v} KiB" if v else "did not complete"


def _built_from(summary):
    if not summary:
        return "no record (built before build32.sh kept one)"
    return "%s, inputs sha256 %s (MicroPython %s)" % (summary["tree"] or "not a git checkout",
                                                       summary["digest"][:12], summary["micropython"])


def _breakdown(b):
    if isinstance(b, str):
        return b
    return "%d / %d / %d B  (%d functions, %d names)" % (
        b["bytecode_bytes"], b["qstr_bytes"], b["rest_bytes"], b["functions"], b["qstrs"])


def table(r):
    rows = [("tree measured (git describe --always --dirty)", r.get("tree") or "not a git checkout"),
            ("firmware .mpy total", f"{r['mpy_bytes']} B"),
            ("largest state blob / limit restore accepts",
             "%d / %d B  (%.0f%% of it)" % (r["state_blob_max_bytes"], r["state_blob_limit_bytes"],
                                            100 * r["state_blob_max_bytes"] / r["state_blob_limit_bytes"]))]
    if "heap32_frozen_kib" in r:
        rows += [("32-bit build, firmware frozen: built from", _built_from(r["build32"].get("frozen"))),
                 ("32-bit, firmware frozen: smallest heap, press -> delivered over TLS", _kib(r["heap32_frozen_kib"])),
                 ("32-bit, firmware frozen: smallest heap, link only (connect + N QoS 1 orders)",
                  _kib(r["heap32_link_kib"])),
                 ("32-bit, firmware frozen: firmware resident in the heap once imported",
                  f"{r['code32_frozen_bytes']} B")]
    else:
        rows.append(("32-bit figures, firmware frozen", r["micropython32"]))
    if "heap32_mpy_kib" in r:
        rows += [("32-bit build, stock image: built from", _built_from(r["build32"].get("stock"))),
                 ("32-bit stock image, firmware as .mpy files: smallest heap, press -> delivered",
                  _kib(r["heap32_mpy_kib"])),
                 ("32-bit stock image, firmware as .mpy files: smallest heap, link only",
                  _kib(r["heap32_link_mpy_kib"])),
                 ("32-bit stock image, firmware as .mpy files: resident once imported",
                  f"{r['code32_mpy_bytes']} B"),
                 ("32-bit stock image, of that: bytecode / interned names (qstr) / the rest",
                  _breakdown(r["code32_mpy_breakdown"])),
                 ("32-bit stock image: largest of it as .mpy, per module (B)", _largest(r["code32_mpy_modules"]))]
    else:
        rows.append(("32-bit figures, firmware as .mpy on a stock image", r["micropython32_stock"]))
    if "min_heapsize_kib" not in r:
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
    rows += [("64-bit: smallest -X heapsize, press -> delivered over TLS", _kib(r["min_heapsize_kib"])),
             ("64-bit: smallest -X heapsize, link only: connect + N QoS 1 orders", _kib(r["link_min_heapsize_kib"])),
             ("64-bit: firmware code resident in that heap (bytecode + module objects)",
              "%.1f KiB" % (r["code_resident_bytes"] / 1024)),
             ("device peak gc.mem_alloc() during the presses (64-bit, heap %d KiB)" % r["ours"]["heapsize_kib"],
              f"{r['device_peak_gc_alloc']} B" if r["device_peak_gc_alloc"] else "not reported"),
             ("press -> PUBACK, median / p95",
              "%.1f / %.1f ms" % (r["press_to_puback_ms"]["median"], r["press_to_puback_ms"]["p95"])),
             ("press -> 'accepted' shown, median / p95",
              "%.1f / %.1f ms" % (r["press_to_accepted_ms"]["median"], r["press_to_accepted_ms"]["p95"]))]
    o, s, q = r["ours"], r["sdk"], r["ratios_ours_over_sdk"]
    rows += [("connect + N orders: wall time, ours / SDK", "%.3f / %.3f s  (ratio %.3f)" % (o["wall_s"], s["wall_s"], q["wall_s"])),
             ("connect + N orders: CPU time, ours / SDK", "%.3f / %.3f s  (ratio %.3f)" % (o["cpu_s"], s["cpu_s"], q["cpu_s"])),
             ("connect + N orders: peak RSS, ours / SDK", "%d / %d KiB  (ratio %.3f)" % (o["peak_rss_kib"], s["peak_rss_kib"], q["peak_rss_kib"])),
             ("QoS 1 publish -> PUBACK median, ours / SDK", "%.2f / %.2f ms" % (o["publish_ms_median"], s["publish_ms_median"])),
             ("QoS 1 publish -> PUBACK p95, ours / SDK", "%.2f / %.2f ms" % (o["publish_ms_p95"], s["publish_ms_p95"])),
             ("connect (TCP+TLS+MQTT), ours / SDK", "%.1f / %.1f ms" % (o["connect_ms"], s["connect_ms"])),
             ("QoS 1 publish -> PUBACK, stock umqtt.simple / our link",
              "%.2f / %.2f ms" % (r["umqtt_vs_link_ms"]["stock_umqtt_ms"], r["umqtt_vs_link_ms"]["link_ms"]))]
    u = r["umqtt_vs_link_ms"]
    rows += [("%s, stock umqtt.simple / our link" % what, "%.2f / %.2f ms" % (u["stock_umqtt"][k], u["link"][k]))
             for k, what in (("connect", "connect (TCP+TLS+MQTT)"),
                             ("subscribe", "subscribe the 4 filters -> SUBACK"),
                             ("ping", "PINGREQ -> PINGRESP (umqtt's ping() on both)"))]
    ota = r["ota"]
    if ota["heapsize_kib"]:
        rows += [("OTA of today's firmware (%d B): download+verify+install / to confirmed" % ota["bundle_bytes"],
                  "%.2f / %.2f s" % (ota["install_s"], ota["to_confirmed_s"])),
                 ("OTA: smallest -X heapsize (16 KiB steps) where the update completes",
                  "%d KiB" % ota["heapsize_kib"]),
                 ("OTA peak gc.mem_alloc() in download+install at that heap, above its start",
                  "%d B (+%d B)" % (ota["peak_alloc"], ota["peak_alloc"] - ota["base_alloc"]))]
    else:
        rows += [("OTA of today's firmware", "did not complete at any heap tried")]
    d = r["dps"]
    rows += [("DPS registration, fresh device -> assigned, median / max",
              "%.3f / %.3f s  (of which retry-after waited %.0f s)"
              % (d["registration_s_median"], d["registration_s_max"], d["retry_after_waited_s"])),
             ("64-bit: smallest -X heapsize, DPS register + connect / connect alone",
              "%s / %s KiB  (DPS adds %s KiB at its peak)"
              % (d["min_heapsize_kib"], d["connect_min_heapsize_kib"],
                 d["min_heapsize_kib"] - d["connect_min_heapsize_kib"]
                 if d["min_heapsize_kib"] and d["connect_min_heapsize_kib"] else "?"))]
    rows += load_rows(r["order_load"])
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def load_rows(load):
    rows = [("orders/s end to end, %d device%s" % (n, "" if int(n) == 1 else "s"), "%.0f" % t["orders_per_s"])
            for n, t in load["throughput"].items()]
    lat = load["latency"]
    rows.append(("request -> 'accepted' at %d orders/s offered, median / p95 / p99" % lat["rate"],
                 "%.1f / %.1f / %.1f ms" % (lat["median_ms"], lat["p95_ms"], lat["p99_ms"])))
    e = load["exactly_once"]
    rows.append(("exactly once over the load runs", "%s (%d requests, %d orders)"
                 % ("held" if e["held"] else "BROKEN", e["requests"], e["orders"])))
    return rows


if __name__ == "__main__":
    main()
