"""Course plumbing: where runs are written, and the Colab badges that follow notebook links."""

import os
from pathlib import Path

import pytest

from ppo_course.course import RUNS_ENV, badge_links, colab_url, project_root, runs_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_runs_override(monkeypatch):
    monkeypatch.delenv(RUNS_ENV, raising=False)


@pytest.mark.parametrize("folder", [".", "notebooks", "exercises", "ppo_course/envs"])
def test_runs_dir_is_the_project_roots_runs_from_any_folder_of_the_checkout(folder, monkeypatch, no_runs_override):
    monkeypatch.chdir(ROOT / folder)
    assert project_root() == ROOT
    assert runs_dir("07_lunar", create=False) == ROOT / "runs" / "07_lunar"


def test_runs_dir_outside_a_checkout_is_the_working_folders_runs(tmp_path, monkeypatch, no_runs_override):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "something-else"\n')
    monkeypatch.chdir(tmp_path)
    assert project_root() is None
    path = runs_dir("a", "b")
    assert path == tmp_path.resolve() / "runs" / "a" / "b" and path.is_dir()


def test_runs_dir_follows_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(RUNS_ENV, str(tmp_path / "elsewhere"))
    monkeypatch.chdir(ROOT / "notebooks")
    assert runs_dir("x") == tmp_path / "elsewhere" / "x"


def test_badge_links_follow_each_relative_notebook_link_once():
    text = "[03](03_critic.ipynb), [ex04](../exercises/ex04_ppo_loss.ipynb), [web](https://x.org/a.ipynb)"
    once = badge_links(text, "notebooks/02_policy.ipynb")
    assert colab_url("notebooks/03_critic.ipynb") in once
    assert colab_url("exercises/ex04_ppo_loss.ipynb") in once
    assert once.count("colab-badge.svg") == 2  # the web link gets none
    assert badge_links(once, "notebooks/02_policy.ipynb") == once
