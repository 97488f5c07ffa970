# The unix HAL's display on a developer's terminal (hal/unix.py imports it at the first screen
# it prints; with $ORDER_DEVICE_DISPLAY=framebuf, as on a board and in `make bench`, it is
# never loaded, and its code stays out of the heap).


def terminal(fb, write, w=128, h=64):
    # Write the display's pixels in a frame, 2x4 pixels per character (Unicode Braille
    # patterns): 64 columns by 16 rows, so the whole display and a status line fit an 80x24
    # terminal. A row at a time from one reused buffer (a whole frame would need ~3 KB at once).
    px = fb.pixel
    edge = b"+" + b"-" * (w // 2) + b"+\n"
    row = bytearray(3 * (w // 2) + 3)
    row[0] = 0x7C  # "|"
    write(edge)
    for y in range(0, h, 4):
        n = 1
        for x in range(0, w, 2):
            # dots 1-2-3 / 4-5-6 down each column, then 7 and 8 on the bottom row
            b = (px(x, y) | px(x, y + 1) << 1 | px(x, y + 2) << 2 | px(x + 1, y) << 3
                 | px(x + 1, y + 1) << 4 | px(x + 1, y + 2) << 5 | px(x, y + 3) << 6 | px(x + 1, y + 3) << 7)
            if b:   # U+2800 + b in UTF-8
                row[n] = 0xE2
                row[n + 1] = 0xA0 | b >> 6
                row[n + 2] = 0x80 | b & 0x3F
                n += 3
            else:
                row[n] = 0x20
                n += 1
        row[n] = 0x7C
        row[n + 1] = 0x0A
        write(memoryview(row)[:n + 2])
    write(edge)
