# Hardware for an ESP32 board: button on a GPIO (sampled every 10 ms by wait() and debounced
# there; no IRQ), LED, SSD1306 128x64 OLED over I2C, WLAN, NTP and a watchdog. Same interface
# as hal/unix.py.
#
# Pins come from config.json "pins" (defaults: button on GPIO27 to GND, LED on GPIO2, I2C SDA 21
# / SCL 22); the WLAN name and password from secrets.json ("wifi_ssid", "wifi_password").
# The button is held at power-on for safe mode, so it is not on a strapping pin (0, 2, 5, 12,
# 15): GPIO0 held low at reset starts the serial bootloader instead of MicroPython.
# Nothing that the unix port lacks (machine.Pin, network, ntptime) is imported at module level,
# so this file also imports (and compiles) on a PC.
# Nothing above the HAL is imported either: the runtime passes the gesture machine and
# the epoch rule.
import os
import select
import time

import framebuf
from micropython import const

from firmware.hal.base import BaseHal, draw

PLATFORM = "esp32"
_SAMPLE_MS = const(10)
_WDT_MS = const(60000)   # > the worst connect: TCP + TLS + CONNACK + SUBACK, 10 s each
_PARKED_MS = const(3600000)  # after Ctrl-C: an hour at the REPL, then a reset into the app
_PINS = {"button": 27, "button_active_low": True, "led": 2, "sda": 21, "scl": 22, "oled_addr": 0x3C}
_INIT = (0xAE, 0x20, 0x00, 0x40, 0xA1, 0xA8, 63, 0xC8, 0xD3, 0x00, 0xDA, 0x12, 0xD5, 0x80,
         0xD9, 0xF1, 0xDB, 0x30, 0x81, 0xFF, 0xA4, 0xA6, 0x8D, 0x14, 0xAF)


class _SSD1306(framebuf.FrameBuffer):
    # The smallest SSD1306 I2C driver that works: init once, then show() pushes the buffer.
    def __init__(self, i2c, addr):
        self.i2c = i2c
        self.addr = addr
        self.buf = bytearray(128 * 64 // 8)
        super().__init__(self.buf, 128, 64, framebuf.MONO_VLSB)
        for c in _INIT:
            self._cmd(c)

    def _cmd(self, c):
        self.i2c.writeto(self.addr, bytes((0x80, c)))

    def show(self):
        for c in (0x21, 0, 127, 0x22, 0, 7):
            self._cmd(c)
        self.i2c.writevto(self.addr, (b"\x40", self.buf))


class Hal(BaseHal):
    def __init__(self, gestures, epoch_offset):
        # gestures: the button's gesture machine (new() and feed(g, level, ms), as
        # firmware.app.gestures); epoch_offset(gmtime(0) year): seconds to add to time.time()
        # for Unix time (firmware.iothub.sas.epoch_offset).
        self.storage_dir = "/data"
        self._poll = select.poll()      # the link's socket: BaseHal._watch
        try:
            os.mkdir(self.storage_dir)
        except OSError:
            pass
        self._offset = epoch_offset(time.gmtime(0)[0])
        self._gesture_machine = gestures
        self._gesture_state = gestures.new()
        self._out = []
        self._wdt = None
        self._oled = None
        self._screen = None
        self._wifi = None
        self._flash_until = None
        self._setup_pins(_PINS)

    def configure(self, cfg, secrets):
        # Called once config and secrets are loaded: pins, WLAN credentials.
        pins = cfg.get("pins")
        if pins:
            p = dict(_PINS)
            p.update(pins)
            self._setup_pins(p)
        self._wifi = (secrets.get("wifi_ssid"), secrets.get("wifi_password"))

    def _setup_pins(self, p):
        from machine import I2C, Pin
        self._low = p["button_active_low"]
        self._button = Pin(p["button"], Pin.IN, Pin.PULL_UP if self._low else Pin.PULL_DOWN)
        self._led = Pin(p["led"], Pin.OUT, value=0) if p["led"] is not None else None
        try:
            self._oled = _SSD1306(I2C(0, sda=Pin(p["sda"]), scl=Pin(p["scl"])), p["oled_addr"])
        except OSError:
            self._oled = None   # no display fitted: the LED and the log still work
            print("hal: no SSD1306 at I2C 0x%x" % p["oled_addr"])

    # now(), time_ok(), rand(), random_bytes() and mem_free() come from BaseHal.

    # --- network, clock, watchdog ----------------------------------------------------------

    def network_up(self, timeout_s=20):
        import network
        wlan = network.WLAN(network.STA_IF)
        if wlan.isconnected():
            return True
        if not self._wifi or not self._wifi[0]:
            return False
        wlan.active(True)
        wlan.connect(self._wifi[0], self._wifi[1])
        start = time.ticks_ms()
        while not wlan.isconnected():
            if time.ticks_diff(time.ticks_ms(), start) > timeout_s * 1000:
                wlan.disconnect()
                return False
            self._feed()
            time.sleep_ms(200)
        return True

    def sync_time(self):
        try:
            import ntptime
            ntptime.settime()      # the RTC runs UTC
        except (OSError, OverflowError, ImportError) as e:
            print("hal: NTP failed:", e)
        return self.time_ok()

    # The watchdog. Once started it cannot be stopped and it survives a soft reset, so it starts
    # only when the loop starts (watchdog_start(), then the loop feeds it through wait()): a
    # board waiting for setup, WLAN or the clock, or stopped before that, has none running.
    # mpremote stops the app with Ctrl-C on every connection; watchdog_park() then sets the
    # longest timeout we allow (MicroPython >= 1.23 on the ESP32 reconfigures the running task
    # watchdog when WDT() is called again), so a developer or `deploy` has an hour at the REPL.

    def watchdog_start(self):
        import machine
        self._wdt = machine.WDT(timeout=_WDT_MS)

    def watchdog_park(self):
        if self._wdt:
            import machine
            machine.WDT(timeout=_PARKED_MS).feed()
            print("hal: app stopped; the watchdog resets the board in %d min unless fed"
                  % (_PARKED_MS // 60000))

    def _feed(self):
        if self._wdt:
            self._wdt.feed()

    def crash(self, e):
        # An unexpected error: log it, give a developer 5 s to break in, then start over.
        import sys
        sys.print_exception(e)
        self.show("crash", ("Restarting...", str(e)[:16]))
        time.sleep(5)
        self.reboot()

    def reboot(self):
        import machine
        machine.reset()

    def reset(self):
        # after an update or a rollback: the same hard reset (the next boot picks the version)
        self.reboot()

    # --- button --------------------------------------------------------------------------------

    def _pressed(self):
        return self._button.value() == (0 if self._low else 1)

    def _readable(self):
        # Up to one sample period for the link's socket. ipoll, not poll: this runs every
        # 10 ms, and poll() allocates a result list each time (96 B measured), ipoll nothing.
        for _ in self._poll.ipoll(_SAMPLE_MS):
            return True
        return False

    def wait(self, ms, wake=None):
        # Sample the button every 10 ms for `ms`; returns gestures seen, oldest first.
        # Between samples, wait on `wake` (the link's socket) and return once it is readable.
        self._watch(wake)
        end = time.ticks_add(time.ticks_ms(), ms)
        while True:
            self._feed()
            now = time.ticks_ms()
            for g in self._gesture_machine.feed(self._gesture_state, self._pressed(), now):
                self._out.append(g)
            if self._flash_until is not None and self._led is not None:
                on = time.ticks_diff(self._flash_until, now) > 0
                self._led.value(on and (now // 250) & 1)
                if not on:
                    self._flash_until = None
            if time.ticks_diff(end, now) <= 0:
                break
            if wake is None:
                time.sleep_ms(_SAMPLE_MS)
            elif self._readable():
                break
        if not self._out:
            return ()       # nothing pressed (nearly always): no new list every loop turn
        out, self._out = self._out, []
        return out

    # --- screen, LED, events ---------------------------------------------------------------

    def show(self, sid, lines):
        lines = [str(s)[:16] for s in lines[:4]]
        if (sid, lines) == self._screen:
            return
        self._screen = (sid, lines)
        print("screen:", sid, "|".join(lines))
        if self._oled:
            draw(self._oled, lines)
            self._oled.show()

    def brightness(self, level):
        if self._oled:
            self._oled._cmd(0x81)
            self._oled._cmd(level & 0xFF)

    def flash(self, seconds):
        self._flash_until = time.ticks_add(time.ticks_ms(), seconds * 1000)

    def safe_mode(self):
        # Button held at power-on: skip the app (no watchdog), leave the REPL to the developer.
        return self._pressed()

    def event(self, **fields):
        if "screen" not in fields:
            print("evt:", fields)
