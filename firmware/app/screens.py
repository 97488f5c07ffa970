# Every screen the order button can show, as data: an id and up to 4 lines of at most 16
# printable ASCII characters (128x64 SSD1306, 8x8 font). The HAL renders; nothing here draws.
#
# screen(sid, *args) -> (sid, (line, ...)). "{0}".."{3}" in a line are the args; the result is
# cut to 16 characters and anything outside printable ASCII becomes "?" (the font has nothing
# else), so text from the network can never overflow or garble the display.

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

WIDTH = const(16)
LINES = const(4)

# Status names are long; these fit a line with room to spare.
LABEL = {"queued": "queued", "accepted": "accepted", "payment_authorized": "paid",
         "shipped": "shipped", "delivered": "delivered", "cancelled": "cancelled",
         "failed": "failed", "": "no orders"}

# Order screens: {0} orderId, {1} note (reason or eta), {2} link hint ("" when online).
TEXT = {
    # setup and link
    "setup": ("Setup needed", "Set sku in the", "device twin"),
    "notime": ("Clock not set", "Waiting for", "network time"),
    "connecting": ("Connecting...",),
    "offline": ("Offline", "Retrying..."),
    "auth": ("Auth error", "Check device key", "or provisioning"),
    "clock": ("Token refused", "Checking the", "clock..."),
    "ready": ("Ready", "Press to order", "{0} x {1}", "{2}"),
    # one order, from the press to the end
    "saved": ("Order saved", "Sends when", "online", "{2}"),
    "sending": ("Sending order", "", "", "{2}"),
    "sent": ("Order sent", "Waiting for", "confirmation", "{2}"),
    "accepted": ("Order accepted", "{0}", "{1}", "{2}"),
    "payment_authorized": ("Payment OK", "{0}", "{1}", "{2}"),
    "shipped": ("Shipped", "{0}", "{1}", "{2}"),
    "delivered": ("Delivered", "{0}", "Press to reorder", "{2}"),
    "cancelled": ("Cancelled", "{0}", "{1}", "{2}"),
    "failed": ("Order failed", "{1}", "Press to retry", "{2}"),
    # answers to a gesture
    "busy": ("Order in", "progress", "{0} open, max {1}"),
    "cancelling": ("Cancel sent", "{0}"),
    "cancelsaved": ("Cancel saved", "Sends when", "online"),
    "cancelagain": ("Cancel already", "requested"),
    "late": ("Cannot cancel", "Window passed", "({0} s)"),
    "toolate": ("Cannot cancel", "Already {0}"),
    "nocancel": ("Nothing to", "cancel"),
    "info": ("Status", "{0} open", "Last: {1}", "{2}"),
    "identify": ("Identify", "This is me!"),
    # settings from the twin
    "rejected": ("Setting rejected", "{0}", "{1}"),
}


def fit(text):
    # One display line: printable ASCII only, at most WIDTH characters.
    out = ""
    for c in str(text)[:WIDTH]:
        out += c if " " <= c <= "~" else "?"
    return out


def screen(sid, *args):
    # (sid, lines); missing args format as "" so a template never raises.
    args = args + ("", "", "", "")
    return (sid, tuple(fit(line.format(*args)) for line in TEXT[sid][:LINES]))
