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
# A screen's lines are one string, "\n" between them: a tuple of line strings for each of
# the 25 screens held 2.5 KB more of the heap on the unix port.
TEXT = {
    # setup and link
    "setup": "Setup needed\nSet sku in the\ndevice twin",
    "notime": "Clock not set\nWaiting for\nnetwork time",
    "connecting": "Connecting...",
    "offline": "Offline\nRetrying...",
    "auth": "Auth error\nCheck device key\nor provisioning",
    "clock": "Token refused\nChecking the\nclock...",
    # DPS: {0} what happens next ("retry in 30 s"), {1} the hub or the reason
    "registering": "Registering...\nwith DPS\n{0}",
    "registered": "Registered\n{1}",
    "refused": "Not enrolled\nDPS refused:\n{1}\n{0}",
    "ready": "Ready\nPress to order\n{0} x {1}\n{2}",
    # one order, from the press to the end
    "saved": "Order saved\nSends when\nonline\n{2}",
    "sending": "Sending order\n\n\n{2}",
    "sent": "Order sent\nWaiting for\nconfirmation\n{2}",
    "accepted": "Order accepted\n{0}\n{1}\n{2}",
    "payment_authorized": "Payment OK\n{0}\n{1}\n{2}",
    "shipped": "Shipped\n{0}\n{1}\n{2}",
    "delivered": "Delivered\n{0}\nPress to reorder\n{2}",
    "cancelled": "Cancelled\n{0}\n{1}\n{2}",
    "failed": "Order failed\n{1}\nPress to retry\n{2}",
    # answers to a gesture
    "busy": "Order in\nprogress\n{0} open, max {1}",
    "cancelling": "Cancel sent\n{0}",
    "cancelsaved": "Cancel saved\nSends when\nonline",
    "cancelagain": "Cancel already\nrequested",
    "late": "Cannot cancel\nWindow passed\n({0} s)",
    "toolate": "Cannot cancel\nAlready {0}",
    "nocancel": "Nothing to\ncancel",
    "info": "Status\n{0} open\nLast: {1}\n{2}",
    "identify": "Identify\nThis is me!",
    # settings from the twin
    "rejected": "Setting rejected\n{0}\n{1}",
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
    return (sid, tuple(fit(line.format(*args)) for line in TEXT[sid].split("\n")[:LINES]))
