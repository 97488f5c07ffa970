"""The local IoT Hub (see README.md)."""
