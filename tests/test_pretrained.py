"""The shipped LunarLander checkpoints (discrete and continuous actions) load and land."""

from ppo_course import evaluate, load_agent
from ppo_course.assets import pretrained_path


def test_shipped_lander_scores_200():
    agent, config = load_agent(pretrained_path("lunar_lander"))
    assert config.env_id == "LunarLander-v3"
    result = evaluate(agent, "LunarLander-v3", episodes=10, deterministic=True, success_threshold=200)
    assert result.mean_return >= 200, str(result)


def test_shipped_continuous_lander_scores_200_from_raw_observations():
    """The Gaussian agent carries its observation statistics: it is given raw observations, as in play."""
    agent, config = load_agent(pretrained_path("lunar_lander_continuous"))
    assert config.env_id == "LunarLanderContinuous-v3" and config.norm_obs
    result = evaluate(agent, "LunarLanderContinuous-v3", episodes=10, deterministic=True, success_threshold=200)
    assert result.mean_return >= 200, str(result)
