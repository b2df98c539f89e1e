"""The commands; each module's ``register`` adds its subparsers and sets ``func``."""

from __future__ import annotations

from . import demo, emulator, get, jobs, set_state, toggle

__all__ = ["REGISTER"]

#: In the order ``aiob24flow --help`` lists them.
REGISTER = (
    toggle.register,
    set_state.register,
    get.register,
    jobs.register,
    demo.register,
    emulator.register,
)
