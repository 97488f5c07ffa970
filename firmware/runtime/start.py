# The device's start-up (Device.run calls start()): config, secrets and the CA, the network, a
# sane clock, DPS registration where configured, then the app's state restored. Runs once per
# Device; the runtime drops its code from the heap before the loop (and the TLS handshake)
# starts, as run from .mpy files the bytecode lives in the GC heap.
from firmware.app import orders, schemas, screens
from firmware.runtime import files
from firmware.runtime.device import release

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_SETUP_RETRY_MS = const(2000)
_CLOCK_RETRY_MS = const(10000)


def start(dev):
    # -> True when the loop may start; False when a "quit" came first (dev.stop says which).
    hal = dev.hal
    if not _setup(dev):
        return False
    while not hal.network_up():
        dev._show_screen(screens.screen("connecting"))
        if not dev._gestures(_SETUP_RETRY_MS):
            return False
    # No token before the clock is right (an ESP32 starts in 2000).
    while dev._now() < schemas.CLOCK_SET_EPOCH:
        dev._show_screen(screens.screen("notime"))
        hal.event(clock="not set")
        hal.sync_time()
        if dev._now() < schemas.CLOCK_SET_EPOCH and not dev._gestures(_CLOCK_RETRY_MS):
            return False
    if dev.link is None and not dev.dps.register():
        return False
    if dev._pending:
        dev._ota_twin(None, False)     # a version on trial, or a rollback to report
    dev.s = orders.new(dev.version)
    blob = files.read_bytes(dev.state_path)
    acts = orders.restore(dev.s, dev._now(), blob)
    release("firmware.app", "stored", "settings")   # restore's checks: boot only
    if blob and orders.ignored(dev.s).get("blob"):
        # keep the bad blob before restore's save replaces it: a power cut in between
        # must not lose the only copy
        files.write_atomic(dev.state_path + ".corrupt", blob)
        hal.event(state_corrupt=dev.state_path + ".corrupt")
    dev._do(acts)
    return True


def _setup(dev):
    # config, secrets and the CA; until they are usable, say so and look again. storage
    # serves start-up only: released (its code leaves the heap) once it is over.
    from firmware.runtime import storage
    said = None
    while True:
        try:
            dev.cfg = cfg = storage.load_config(dev.dir)
            secrets = storage.load_secrets(dev.dir)
            dev._key, dev._ca = secrets["device_key"], storage.load_ca(dev.dir, cfg)
            dev.trust = storage.trust_version(dev.dir)    # reported as trustStoreVersion
            if "dps" in cfg:
                from firmware.runtime.dps import Onboarding   # only devices that register carry it
                dev.dps = Onboarding(dev)
            break
        except storage.SetupError as e:
            if str(e) != said:
                said = str(e)
                dev.hal.show("setup", ("Setup needed", "Provision this", "device: see log"))
                dev.hal.event(setup=said)
                print("setup:", said)
        if not dev._gestures(_SETUP_RETRY_MS):
            release("firmware.runtime", "storage")
            return False
    release("firmware.runtime", "storage")
    dev.hal.configure(cfg, secrets)
    if dev.dps is None or dev.dps.cached():
        dev._make_link()       # else start() registers with DPS once the network is up
    return True
