"""`dps`: enrollments of the local Device Provisioning Service (served by `hub` on its MQTT port).

Works on the data folder directly, like `registry` (the hub need not run; a running hub sees a
change at the next request). An enrollment's keys are printed once, by the `add` that makes it.
"""
import json

from host_tools.cloud.hub.cli import _host, hub_command, open_in_data_dir
from host_tools.errors import CliError


def add_commands(sub):
    p = sub.add_parser("dps", help="enrollments of the local Device Provisioning Service")
    ds = p.add_subparsers(dest="dps_command", metavar="ACTION", required=True)
    hub_command(ds, "scope", cmd_scope, "print the id scope")

    a = ds.add_parser("group", help="symmetric-key enrollment groups (devices hold derived keys)")
    gs = a.add_subparsers(dest="group_command", metavar="ACTION", required=True)
    g = hub_command(gs, "add", cmd_add, "make a group; prints its keys (only here) and the id "
                    "scope as JSON", kind="group")
    g.add_argument("name")

    a = ds.add_parser("individual", help="symmetric-key individual enrollments")
    is_ = a.add_subparsers(dest="individual_command", metavar="ACTION", required=True)
    g = hub_command(is_, "add", cmd_add, "enroll one registration id; prints its keys (only "
                    "here) as JSON", kind="individual")
    g.add_argument("name", metavar="REG_ID")
    g.add_argument("--device-id", help="device id in the hub (default: the registration id)")

    hub_command(ds, "list", cmd_list, "list enrollments (no keys)")
    for action, helptext in (("remove", "delete an enrollment (devices already in the hub stay)"),
                             ("disable", "refuse registrations through an enrollment"),
                             ("enable", "allow them again")):
        a = hub_command(ds, action, cmd_change, helptext, action=action)
        a.add_argument("name", metavar="NAME", help="group name or registration id")


def _run(args, fn):
    """fn(the DPS store of args.data); only `add` makes a hub data folder, as `registry add`."""
    from host_tools.cloud.dps.store import DpsStore, DpsStoreError
    store = open_in_data_dir(args.data, args.func is cmd_add, lambda p: DpsStore(p["dps"]))
    try:
        return fn(store)
    except DpsStoreError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()


def cmd_scope(args):
    print(_run(args, lambda s: s.id_scope()))


def cmd_add(args):
    def add(store):
        e = store.add_enrollment(args.kind, args.name, device_id=getattr(args, "device_id", None))
        out = {"idScope": store.id_scope(), "provisioningHost": _host(args), "kind": e["kind"]}
        out["groupName" if e["kind"] == "group" else "registrationId"] = e["name"]
        out.update(primaryKey=e["primary_key"], secondaryKey=e["secondary_key"])
        return out
    print(json.dumps(_run(args, add)))


def cmd_list(args):
    for e in _run(args, lambda s: s.list_enrollments()):
        print("%-10s %-32s %s" % (e["kind"], e["name"], e["status"]))


def cmd_change(args):
    def change(store):
        if args.action == "remove":
            store.remove_enrollment(args.name)
            return "removed " + args.name
        e = store.set_status(args.name, args.action + "d")
        return "%s %s" % (e["name"], e["status"])
    print(_run(args, change))

