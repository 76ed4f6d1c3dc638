"""The shipped LunarLander checkpoint loads and lands."""

from ppo_course import evaluate, load_agent
from ppo_course.assets import pretrained_path


def test_shipped_lander_scores_200():
    agent, config = load_agent(pretrained_path("lunar_lander"))
    assert config.env_id == "LunarLander-v3"
    result = evaluate(agent, "LunarLander-v3", episodes=10, deterministic=True, success_threshold=200)
    assert result.mean_return >= 200, str(result)
