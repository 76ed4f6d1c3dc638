"""Gymnasium 1.x autoreset, handled explicitly: every stored step is a real transition."""

import gymnasium as gym
import numpy as np
import pytest

from ppo_course.envs import EnvironmentIdError, make_env, make_vector_env


def test_default_gymnasium_vector_env_resets_on_the_next_step():
    """The trap we avoid: with the default NEXT_STEP mode the step after an episode ends is fake."""
    envs = gym.make_vec("CartPole-v1", num_envs=1, vectorization_mode="sync")
    envs.reset(seed=0)
    for _ in range(500):
        obs, reward, term, trunc, _ = envs.step(np.array([0]))
        if term[0] or trunc[0]:
            break
    obs_after, reward_after, term_after, trunc_after, _ = envs.step(np.array([0]))
    assert reward_after[0] == 0.0 and not term_after[0] and not trunc_after[0]  # a reset step, not a transition
    envs.close()


def test_same_step_autoreset_gives_the_final_observation():
    envs = make_vector_env("CartPole-v1", num_envs=2)
    single = make_env("CartPole-v1")
    obs, _ = envs.reset(seed=0)
    single_obs, _ = single.reset(seed=0)
    assert np.allclose(obs[0], single_obs)
    for _ in range(500):
        obs, reward, term, trunc, info = envs.step(np.array([0, 0]))
        single_obs, single_reward, single_term, single_trunc, _ = single.step(0)
        assert reward[0] == single_reward == 1.0  # every step is a real transition with its reward
        if term[0] or trunc[0]:
            assert single_term or single_trunc
            assert info["_final_obs"][0]
            assert np.allclose(info["final_obs"][0], single_obs)  # the true last observation
            assert not np.allclose(obs[0], single_obs)            # obs is already the next episode's start
            assert info["_episode"][0] and info["episode"]["r"][0] > 0
            break
    else:
        pytest.fail("episode never ended")
    envs.close()


def test_time_limit_is_reported_as_truncation():
    single = gym.make("CartPole-v1", max_episode_steps=5)
    single.reset(seed=0)
    out = [single.step(i % 2) for i in range(5)]
    assert out[-1][3] is True and out[-1][2] is False  # truncated, not terminated


def test_unknown_env_id_is_one_clear_error():
    with pytest.raises(EnvironmentIdError, match="unknown environment id 'LunarLanderr-v3'"):
        make_vector_env("LunarLanderr-v3", 2)
