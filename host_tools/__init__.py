"""Host-side tools (CPython only, never copied to a device)."""
