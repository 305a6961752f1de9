"""The ``--hardware`` option every planning and training command shares (one definition, one resolver:
:func:`megacluster.calibrate.profile.use_hardware`)."""

from __future__ import annotations

import typer

HARDWARE = typer.Option(None, "--hardware", help="hardware profile from `megacluster calibrate` (YAML): its "
                        "measured device and fabric take the place of the catalog's; its device id becomes the "
                        "default --gpu")
