# The 32-bit unix build that `make bench` measures (host_tools/bench/build32.sh): the firmware
# as an ESP32 image freezes it, plus ssl (an ESP32 image freezes micropython-lib's; Debian's
# source package has no micropython-lib, so boards/unix32/ssl.py stands in for it).
module("ssl.py")
include("../../firmware/manifest.py")
