"""`sas` and `derive-key`: SAS tokens and DPS device keys from the command line.

Both call firmware/iothub/sas.py, the one implementation of the algorithm that the device
signs with and the local hub verifies with.
"""
import time

from firmware.iothub import sas
from host_tools.errors import CliError
from host_tools.prompt import arg_or_stdin
from host_tools.cloud import tokens


def add_commands(sub):
    p = sub.add_parser("sas", help="print a SAS token for a device (or, with --policy and no --device, the hub)")
    p.add_argument("--host", required=True, help="IoT Hub host name, e.g. myhub.azure-devices.net")
    p.add_argument("--device", help="device id (omit with --policy for a hub-wide service token)")
    p.add_argument("--key", required=True, help="base64 key; '-' reads it from standard input")
    life = p.add_mutually_exclusive_group(required=True)
    life.add_argument("--ttl", type=int, help="lifetime in seconds from now")
    life.add_argument("--expiry", type=int, help="absolute expiry, Unix seconds")
    p.add_argument("--policy", help="shared access policy name (skn), for policy-signed tokens")
    p.set_defaults(func=cmd_sas)

    p = sub.add_parser("derive-key", help="derive a device key from a DPS group enrollment key")
    p.add_argument("--group-key", required=True, help="base64 group key; '-' reads it from standard input")
    p.add_argument("--registration-id", required=True)
    p.set_defaults(func=cmd_derive_key)


def cmd_sas(args):
    if not args.device and not args.policy:
        raise CliError("--device is required unless --policy is given (a hub-wide token)")
    if args.ttl is not None and args.ttl <= 0:
        raise CliError("--ttl must be a positive number of seconds")
    expiry = args.expiry if args.expiry is not None else int(time.time()) + args.ttl
    uri = sas.device_resource(args.host, args.device) if args.device else args.host
    try:
        print(sas.token(uri, arg_or_stdin(args.key, "key"), expiry, args.policy))
    except sas.SasError as e:
        raise CliError(f"{e}: pass the key exactly as the hub shows it (base64)") from None


def cmd_derive_key(args):
    try:
        print(tokens.derive_key(arg_or_stdin(args.group_key, "group key"), args.registration_id))
    except sas.SasError as e:
        raise CliError(f"{e}: pass the enrollment group's primary key (base64)") from None
