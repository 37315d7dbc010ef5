"""Server settings: each one a command-line flag with an environment-variable twin."""

from ._conflicts import Conflicting, check, conflicts
from ._fields import Settings
from ._flags import ENV_PREFIX, add_arguments, env_name, from_namespace, parse, shown
from ._parsers import MAX_LIST_PAGE_BYTES, MIN_LIST_PAGE_BYTES, split_address

__all__ = [
    "ENV_PREFIX",
    "MAX_LIST_PAGE_BYTES",
    "MIN_LIST_PAGE_BYTES",
    "Conflicting",
    "Settings",
    "add_arguments",
    "check",
    "conflicts",
    "env_name",
    "from_namespace",
    "parse",
    "shown",
    "split_address",
]
