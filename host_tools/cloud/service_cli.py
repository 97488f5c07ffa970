"""What the CLIs of the two local order-path services share (`orders ...`, `commerce ...`):
the --timeline and --catalogue options and their one-line errors, the timeline `serve` last
stored (for the commands that run without it), the lock that keeps one `serve` per data
folder, the JSON lines they print (the ready line among them) and opening their store."""
import json
import os

from host_tools.errors import CliError

LOCK_NAME = "serve.lock"


def add_timeline_options(parser, since):
    """--timeline (offsets in seconds after `since`) and --catalogue."""
    from host_tools.cloud.orders.timeline import DEFAULT_SPEC
    parser.add_argument("--timeline", default=None,
                        help=f"seconds after {since} for each status, e.g. '{DEFAULT_SPEC}' "
                             f"(the default), 'manual', or a JSON file with the same keys")
    parser.add_argument("--catalogue", default=None,
                        help="catalogue JSON (default: the demo one)")


def timeline(spec, kind=None):
    """The Timeline (or `kind`, a subclass with its own statuses) --timeline SPEC names."""
    from host_tools.cloud.orders import timeline as tl
    try:
        return tl.parse(spec, kind or tl.Timeline)
    except tl.TimelineError as exc:
        raise CliError(f"{exc} (example: --timeline {tl.DEFAULT_SPEC})") from None


def stored_timeline(stored, kind=None):
    """The timeline `serve` last stored (its as_dict()), or the default one if it never ran."""
    from host_tools.cloud.orders import timeline as tl
    kind = kind or tl.Timeline
    return kind.from_dict(stored) if stored is not None else tl.parse(None, kind)


def catalogue(path):
    from host_tools.cloud.orders import catalogue as cat
    try:
        return cat.load(path)
    except cat.CatalogueError as exc:
        raise CliError(f"{exc}; fix the file or pass another with --catalogue") from None


def open_store(store_class, data, create, what, first):
    """store_class(data); what: whose database ("order"), first: how to make one."""
    import sqlite3
    try:
        return store_class(data, create=create)
    except FileNotFoundError:
        raise CliError(f"no {what} data in {data}: {first}") from None
    except (sqlite3.Error, OSError) as exc:
        raise CliError(f"cannot open the {what} database in {data}: {exc}") from None


def serve_lock(data, command):
    """Hold DATA/serve.lock for this `serve`'s life (returns the open file; close it at the
    end). The kernel drops the lock however the process ends, so none is ever stale."""
    import fcntl
    os.makedirs(data, mode=0o700, exist_ok=True)
    lock = open(os.path.join(data, LOCK_NAME), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise CliError(f"another `{command}` is already running on {data}; stop it "
                       "first") from None
    return lock


def print_json(obj, pretty=False):
    print(json.dumps(obj, indent=2 if pretty else None), flush=True)


def print_ready(service, **fields):
    """The one line `serve` prints when it is ready (host_tools/processes.py waits for it)."""
    print_json({"ready": True, "service": service, **fields, "pid": os.getpid()})
