"""Environment factories: Gymnasium vector envs (``lunar``); the Doom wrapper comes in ``doom``."""

from .lunar import EnvironmentIdError, check_env_id, make_env, make_vector_env

__all__ = ["EnvironmentIdError", "check_env_id", "make_env", "make_vector_env"]
