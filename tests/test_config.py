"""Presets compose in order, per-environment defaults apply, and bad values name their field."""

import pytest

from ppo_course.config import ENV_DEFAULTS, PRESETS, ConfigError, PPOConfig, field_help


def test_layers_apply_in_order():
    cfg = PPOConfig.from_presets(["defaults", "explore"], env_id="LunarLander-v3", seed=3)
    assert cfg.gamma == ENV_DEFAULTS["LunarLander-v3"]["gamma"]          # env default
    assert cfg.ent_coef == PRESETS["explore"]["ent_coef"]               # preset over env default
    assert cfg.seed == 3                                                 # override over everything
    later = PPOConfig.from_presets(["explore", "defaults"], learning_rate=1e-2)
    assert later.learning_rate == 1e-2


def test_smallest_preset_is_small():
    cfg = PPOConfig.from_presets(["debug"])
    assert cfg.total_timesteps <= 4096 and cfg.batch_size % cfg.num_minibatches == 0


@pytest.mark.parametrize("overrides, field", [
    ({"learning_rate": -3e-4}, "learning_rate"),
    ({"learning_rate": 1e38}, "learning_rate"),  # would overflow Adam's step instead of one clear line
    ({"clip_coef": 0.0}, "clip_coef"),
    ({"num_minibatches": 7}, "num_minibatches"),
    ({"gamma": 1.5}, "gamma"),
    ({"num_envs": 0}, "num_envs"),
    ({"target_kl": -1.0}, "target_kl"),
    ({"ent_coef": float("nan")}, "ent_coef"),
    ({"env_groups": 3}, "env_groups"),  # 16 envs do not split into 3 equal vector envs
    ({"env_groups": 2, "norm_reward": True}, "env_groups"),
    ({"env_groups": 0}, "env_groups"),
])
def test_invalid_values_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        PPOConfig.from_presets(["defaults"], **overrides)


def test_unknown_preset_and_field():
    with pytest.raises(ConfigError, match="unknown preset 'turbo'"):
        PPOConfig.from_presets(["turbo"])
    with pytest.raises(ConfigError, match="lr"):
        PPOConfig.from_presets(["defaults"], lr=1e-3)


def test_every_field_has_help():
    assert all(text for _, text in field_help().values())


def test_round_trip():
    cfg = PPOConfig.from_presets(["defaults", "fast"], seed=7)
    assert PPOConfig.from_dict(cfg.to_dict()) == cfg
