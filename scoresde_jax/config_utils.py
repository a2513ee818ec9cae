"""Config files by path: kept for ``from scoresde_jax.config_utils import load_config``; the code is
in :mod:`scoresde_jax.config.files`."""

from __future__ import annotations

from scoresde_jax.config.files import (  # noqa: F401
    CONFIG_DIR,
    OPTIONAL_KEYS,
    REPO_ROOT,
    apply_override,
    check_override_key,
    list_configs,
    load_config,
    resolve_config_path,
)
