# umqtt.simple 1.3.4 and urequests 0.9.1 do `import ussl`, but MicroPython 1.2x renamed that
# module to `ssl` and no longer ships `ussl`. This shim, installed into .mplib/ by
# `make setup`, gives those packages the module they ask for.
from ssl import *  # noqa: F401,F403
