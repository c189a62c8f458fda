"""The skill library and the planner's settings.

The library is read from config/saycan_skills.yaml and the scene file: pick/place skills
are generated from the scene's objects (every pick x place pair, like the open-source
SayCan), navigation skills from its stations. Only skills in the library can ever be
chosen, so only they can ever be executed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ros_vla.sim.scene import SceneConfig

EXECUTORS = ("pick_place", "pick", "put_down", "navigate", "rt1", "done")
AFFORDANCE_SOURCES = ("cliport", "value_function", "attribute")
PLACEHOLDER_KINDS = ("block", "bowl", "station")
DONE = "done"


@dataclass(frozen=True)
class Skill:
    text: str
    executor: str
    args: dict = field(default_factory=dict, hash=False, compare=False)
    affordance: tuple[str, ...] = ()


@dataclass(frozen=True)
class SkillLibrary:
    skills: tuple[Skill, ...]
    done_affordance: float
    objects: tuple[str, ...]  # scene object names, in scene order: what the language model is told is here

    @property
    def texts(self) -> list[str]:
        return [skill.text for skill in self.skills]

    def by_text(self, text: str) -> Skill:
        for skill in self.skills:
            if skill.text == text:
                return skill
        raise KeyError(f"'{text}' is not a skill in the library")

    def find(self, executor: str, **args) -> str:
        """The text of the skill run by `executor` with exactly these args (KeyError if none)."""
        for skill in self.skills:
            if skill.executor == executor and skill.args == args:
                return skill.text
        raise KeyError(f"no {executor} skill with args {args}")

    def restricted_to(self, executors: set[str]) -> SkillLibrary:
        """The skills whose executor is available (done is always kept)."""
        kept = tuple(s for s in self.skills if s.executor in executors or s.executor == "done")
        return SkillLibrary(kept, self.done_affordance, self.objects)


def spoken(name: str) -> str:
    """Scene name -> words: red_block -> red block."""
    return name.replace("_", " ")


def _check(entry: dict, where: str) -> tuple[str, str, tuple[str, ...]]:
    text, executor = entry.get("text"), entry.get("executor")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: 'text' must be a non-empty string")
    if executor not in EXECUTORS:
        raise ValueError(f"{where}: executor '{executor}' is not one of {EXECUTORS}")
    affordance = tuple(entry.get("affordance", ()))
    unknown = [a for a in affordance if a not in AFFORDANCE_SOURCES]
    if unknown:
        raise ValueError(f"{where}: unknown affordance source(s) {unknown}; known: {AFFORDANCE_SOURCES}")
    return text, executor, affordance


def _generate(entry: dict, where: str, objects: list[tuple[str, str]], stations: list[str]) -> list[Skill]:
    text, executor, affordance = _check(entry, where)
    for_each = entry.get("for_each") or {}
    if not isinstance(for_each, dict) or not for_each:
        raise ValueError(f"{where}: 'for_each' must map placeholders to {PLACEHOLDER_KINDS}")
    candidates = {}
    for placeholder, kind in for_each.items():
        if kind not in PLACEHOLDER_KINDS:
            raise ValueError(f"{where}: '{placeholder}' ranges over '{kind}', not one of {PLACEHOLDER_KINDS}")
        if "{" + placeholder + "}" not in text:
            raise ValueError(f"{where}: the text has no {{{placeholder}}}")
        candidates[placeholder] = (list(stations) if kind == "station"
                                   else [name for name, object_kind in objects if object_kind == kind])
    skills = []
    for combination in itertools.product(*candidates.values()):
        if len(set(combination)) < len(combination):
            continue
        args = dict(zip(candidates, combination))
        words = {k: spoken(v) for k, v in args.items()}
        skills.append(Skill(text.format(**words), executor, {**entry.get("args", {}), **args}, affordance))
    return skills


def load_skill_library(path: str | Path, scene: SceneConfig) -> SkillLibrary:
    """Read the skill file; generated entries expand over the scene's objects and stations."""
    return build_skill_library(path, [(o.name, o.kind) for o in scene.objects], list(scene.stations))


def build_skill_library(path: str | Path, objects: list[tuple[str, str]], stations: list[str]) -> SkillLibrary:
    """The library for any set of (object name, kind) and stations (corpus scenes are made up)."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    skills: list[Skill] = []
    for i, entry in enumerate(raw.get("generated", [])):
        skills.extend(_generate(entry, f"{path}: generated[{i}]", objects, stations))
    for i, entry in enumerate(raw.get("skills", [])):
        text, executor, affordance = _check(entry, f"{path}: skills[{i}]")
        skills.append(Skill(text, executor, dict(entry.get("args", {})), affordance))
    texts = [s.text for s in skills]
    duplicated = sorted({t for t in texts if texts.count(t) > 1})
    if duplicated:
        raise ValueError(f"{path}: skill texts must be unique; repeated: {duplicated}")
    if DONE not in texts:
        raise ValueError(f"{path}: the library needs a '{DONE}' skill to end tasks")
    done_affordance = float(raw.get("done_affordance", 0.1))
    if not 0.0 < done_affordance <= 1.0:
        raise ValueError(f"{path}: done_affordance must be in (0, 1]")
    return SkillLibrary(tuple(skills), done_affordance, tuple(name for name, _ in objects))


@dataclass(frozen=True)
class PlannerConfig:
    max_steps: int = 10  # skills executed per task, "done" not counted
    max_failures: int = 2  # failed skills tolerated per task before giving up (each one triggers a replan)
    min_affordance: float = 0.15  # below this for every skill but done: nothing is feasible, refuse
    top_k: int = 5  # scored skills reported per step
    chain_of_thought: bool = False  # generate an "Explanation:" line before the first step
    use_language_model: bool = True  # ablation "no language model": every skill equally likely
    use_affordance: bool = True  # ablation "no affordance": every skill equally feasible
