"""Model folders: the one shape every model has, and the one way to find and open them.

A model folder (models/<name> for the shipped ones, or a training's output) holds
  config.json   what the weights are: sizes, vocabulary, how they were trained and measured;
  the weights   the method's files (METHODS: any one of them tells the method);
  README.md     the model card (data, steps, measured results, commands), for shipped models.
`shipped(name)` is a shipped model's folder; `load(folder)` opens any folder with its
method's loader, each of which takes the folder as its first argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

from ros_vla.paths import package_share

CONFIG_FILE = "config.json"
CARD_FILE = "README.md"


@dataclass(frozen=True)
class Method:
    weights: tuple[str, ...]  # files that make a folder this method's (any one of them)
    loader: str  # "module:callable", called with the folder and the caller's options


METHODS = {
    "cliport": Method(("cliport.pt",), "ros_vla.cliport.agent:load_agent"),
    "rt1": Method(("rt1.pt", "rt1_frame_encoder.onnx"), "ros_vla.rt1.runtime:load_policy"),
    "miavlm": Method(("miavlm.pt",), "ros_vla.miavlm.checker:AttributeChecker"),
    "saycan_lm": Method(("model.safetensors",), "ros_vla.saycan.llm:HFCausalLM"),
    "saycan_value": Method(("value_function.pt",), "ros_vla.saycan.value_model:ValueFunction"),
}
SHIPPED = {"cliport_small": "cliport", "rt1_small": "rt1", "miavlm": "miavlm", "saycan_lm": "saycan_lm",
           "saycan_value": "saycan_value"}


def shipped(name: str) -> Path:
    """The folder of a model this project ships (models/<name>)."""
    if name not in SHIPPED:
        raise KeyError(f"no shipped model '{name}'; shipped: {', '.join(SHIPPED)}")
    return package_share() / "models" / name


def method_of(folder: str | Path) -> str:
    """The method whose weights the folder holds (ValueError if none or several)."""
    folder = Path(folder)
    found = [name for name, method in METHODS.items() if any((folder / f).is_file() for f in method.weights)]
    if len(found) != 1:
        wanted = "; ".join(f"{name}: {' or '.join(m.weights)}" for name, m in METHODS.items())
        raise ValueError(f"{folder} holds the weights of {' and '.join(found) or 'no method'} (one of: {wanted})")
    return found[0]


def folder_problems(folder: str | Path, card: bool = True) -> list[str]:
    """What the folder lacks to be a model folder; [] when it is one."""
    folder = Path(folder)
    problems = [] if (folder / CONFIG_FILE).is_file() else [f"no {CONFIG_FILE}"]
    try:
        method_of(folder)
    except ValueError as err:
        problems.append(str(err))
    if card and not (folder / CARD_FILE).is_file():
        problems.append(f"no model card ({CARD_FILE})")
    return problems


def load(folder: str | Path, **options):
    """The model in `folder`, opened by its method's loader (options go to that loader)."""
    module, _, name = METHODS[method_of(folder)].loader.partition(":")
    return getattr(import_module(module), name)(Path(folder), **options)
