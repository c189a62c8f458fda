"""The model contract (ros_vla/models.py): every shipped folder has its config, its weights and
its model card, is found with `shipped`, and opens with `load`."""

import json

import pytest
import torch

from ros_vla.models import SHIPPED, folder_problems, load, method_of, shipped
from ros_vla.paths import package_share


def test_every_folder_under_models_is_a_shipped_model_folder():
    folders = {path.name for path in (package_share() / "models").iterdir() if path.is_dir()}
    assert folders == set(SHIPPED)
    for name, method in SHIPPED.items():
        assert folder_problems(shipped(name)) == [], name
        assert method_of(shipped(name)) == method


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_each_shipped_model_opens_with_its_method_loader(name):
    model = load(shipped(name))
    expected = {"cliport": "CLIPortAgent", "rt1": "RT1Policy", "miavlm": "AttributeChecker",
                "saycan_lm": "HFCausalLM", "saycan_value": "ValueFunction"}[SHIPPED[name]]
    assert type(model).__name__ == expected


def test_miavlm_config_file_is_what_its_weights_file_records():
    folder = shipped("miavlm")
    saved = torch.load(folder / "miavlm.pt", map_location="cpu", weights_only=True)
    config = json.loads((folder / "config.json").read_text())
    assert config == json.loads(json.dumps({k: saved[k] for k in ("variant", "config", "benchmark", "training")}))


def test_a_folder_without_weights_is_named_as_such(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="no method"):
        method_of(tmp_path)
    assert any("no model card" in problem for problem in folder_problems(tmp_path))
    with pytest.raises(KeyError, match="no shipped model"):
        shipped("gpt-5")
