"""Subcommands of ``tsn``. Each module defines ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``."""
