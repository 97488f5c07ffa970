"""`make bench`: what the firmware costs in heap, time and flash, and how it compares to the SDK."""
