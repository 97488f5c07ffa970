"""argparse pieces the commands share: the --data folder a command works on."""


def add_data(parser, default, what):
    """--data DIR: the folder the command works on (`what`, e.g. "hub data folder")."""
    parser.add_argument("--data", default=default, help=f"{what} (default {default})")


def data_command(parent, name, func, help_text, default, what, **defaults):
    """Sub-command `name` of the subparsers `parent`, working on a --data folder and run by
    func(args); `defaults` are further attributes set on args."""
    p = parent.add_parser(name, help=help_text)
    add_data(p, default, what)
    p.set_defaults(func=func, **defaults)
    return p
