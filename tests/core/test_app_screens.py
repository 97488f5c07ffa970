# Screens are data that always fit a 128x64 display with an 8x8 font (firmware/app/screens.py).
from firmware.app import screens

NASTY = ("", "x" * 100, "caf\u00e9 \u2603 \U0001F600", "tab\there\nnewline", "{0}{1}", 10 ** 12,
         None, -5)


def fits(scr):
    sid, lines = scr
    assert type(sid) is str and type(lines) is tuple and 1 <= len(lines) <= 4, scr
    for line in lines:
        assert type(line) is str and len(line) <= 16, (sid, line)
        for c in line:
            assert " " <= c <= "~", (sid, line)


def test_every_screen_fits_with_any_arguments():
    for sid in screens.TEXT:
        fits(screens.screen(sid))
        for a in NASTY:
            fits(screens.screen(sid, a, a, a, a))
        assert len(screens.TEXT[sid].split("\n")) <= 4, sid
        for line in screens.TEXT[sid].split("\n"):
            assert len(line) <= 16 or "{" in line, (sid, line)


def test_every_situation_has_a_screen():
    need = ("setup", "notime", "connecting", "ready", "offline", "saved", "sending", "sent",
            "accepted", "payment_authorized", "shipped", "delivered", "cancelled", "failed",
            "auth", "late", "busy", "rejected", "info", "identify", "nocancel", "toolate",
            "cancelling", "cancelsaved", "cancelagain")
    for sid in need:
        assert sid in screens.TEXT, sid
    for st in ("queued", "accepted", "payment_authorized", "shipped", "delivered", "cancelled",
               "failed", ""):
        assert len(screens.LABEL[st]) <= 10


def test_fit():
    assert screens.fit("Order accepted") == "Order accepted"
    assert screens.fit("x" * 20) == "x" * 16
    assert screens.fit("caf\u00e9") == "caf?"
    assert screens.fit(42) == "42"
    assert screens.screen("busy", 1, 1) == ("busy", ("Order in", "progress", "1 open, max 1"))
    assert screens.screen("late", 60)[1][2] == "(60 s)"
