"""Where the embedded platform keeps its state, and how a user chooses another place."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

STATE_ENV = "ROLLOUTS_STATE"


def default_state_path() -> Path:
    """`$ROLLOUTS_STATE`, else `state.db` in the user's state directory."""
    chosen = os.environ.get(STATE_ENV)
    if chosen:
        return Path(chosen).expanduser()
    return Path(platformdirs.user_state_dir("rollouts")) / "state.db"


def state_dir_for(state_path: Path) -> Path:
    """Pod logs and other files live next to the state file."""
    return state_path.parent / (state_path.stem + ".d")
