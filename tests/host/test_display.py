"""The unix HAL draws the same 128x64 framebuf the ESP32's SSD1306 gets and prints its pixels."""
import os
import subprocess

from host_tools.harness.device_process import REPO, micropypath, micropython


def render(tmp_path, lines):
    script = "from firmware.hal.unix import Hal\nHal(None, lambda year: 0).show('s', %r)\n" % (lines,)
    r = subprocess.run([micropython(), "-c", script], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, MICROPYPATH=micropypath(REPO), ORDER_DEVICE_DIR=str(tmp_path)))
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    top = out.index("+" + "-" * 64 + "+")
    frame = out[top:top + 18]    # 18 rows: with a status line it fits an 80x24 terminal
    assert frame[-1] == frame[0] and all(len(row) == 66 for row in frame), frame
    return [row[1:-1] for row in frame[1:-1]]   # 16 rows of 64 cells, 2x4 pixels each


def inked(rows):
    return [i for i, row in enumerate(rows) if row.strip()]


def test_each_line_lands_in_its_16_pixel_band(tmp_path):
    rows = render(tmp_path, ("Ready", "", "x", ""))
    # line i is drawn at y = 16 i + 4 .. 16 i + 11, i.e. character rows 4 i + 1 .. 4 i + 2
    ink = inked(rows)
    assert set(ink) <= {1, 2, 9, 10}, ink
    assert {1, 2} <= set(ink) and set(ink) & {9, 10}  # line 2 ("x") has ink too
    # "Ready" is 5 glyphs of 8 px: 40 px, 20 cells; nothing to its right
    assert all(row[20:].strip() == "" for row in rows[1:3])
    assert any(row[16:20].strip() for row in rows[1:3])


def test_long_lines_are_cut_to_the_display_width_and_empty_screens_are_blank(tmp_path):
    rows = render(tmp_path, ("W" * 20,))
    assert any(row[60:].strip() for row in rows[1:3])       # 16 glyphs reach the right edge
    assert inked(render(tmp_path, ("", "", "", ""))) == []


def test_framebuf_mode_writes_the_frame_once_per_change_and_prints_none(tmp_path):
    # ORDER_DEVICE_DISPLAY=framebuf: the display as the ESP32 drives its SSD1306 (make bench):
    # the 1024-byte framebuf in one write per refresh, to DIR/display.fb, no frame on stdout
    script = ("from firmware.hal.unix import Hal\nfrom firmware.hal.base import draw\nimport framebuf\n"
              "h = Hal(None, lambda year: 0)\nh.show('a', ('Ready',))\nh.show('a', ('Ready',))\n"
              "buf = bytearray(1024)\ndraw(framebuf.FrameBuffer(buf, 128, 64, framebuf.MONO_VLSB), ('Ready',))\n"
              "print('SAME', open(h.storage_dir + '/display.fb', 'rb').read() == buf)\n")
    r = subprocess.run([micropython(), "-c", script], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, MICROPYPATH=micropypath(REPO), ORDER_DEVICE_DIR=str(tmp_path),
                                ORDER_DEVICE_DISPLAY="framebuf"))
    assert r.returncode == 0, r.stderr
    assert "SAME True" in r.stdout and "+---" not in r.stdout, r.stdout
    assert (tmp_path / "display.fb").stat().st_size == 1024
    assert [l for l in r.stdout.splitlines() if '"screen"' in l] and \
        len([l for l in r.stdout.splitlines() if '"screen"' in l]) == 1      # redrawn only on change
