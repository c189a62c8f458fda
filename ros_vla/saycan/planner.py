"""The SayCan loop, without ROS: each next skill = argmax over the library of
p_LM(skill | instruction, steps so far) x p(success | current state, skill), until "done".

Language scores come from a LanguageModel (ros_vla.saycan.llm), affordances from any
callable giving p(success) per skill from the *current* state (re-asked before every
step: closed loop), and execution from any callable that runs one skill and reports
success. The same loop runs headless in evaluation and inside saycan_planner_node.
Only library skills are ever passed to the executor, whatever the instruction says.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ros_vla.protocol import MAX_INSTRUCTION_CHARS
from ros_vla.saycan import prompt
from ros_vla.saycan.config import DONE, PlannerConfig, Skill, SkillLibrary
from ros_vla.saycan.llm import LanguageModel

Affordance = Callable[[list[Skill]], np.ndarray]  # p(success) in [0, 1] per skill, from the current state
Executor = Callable[[Skill], tuple[bool, str]]  # runs one skill: (success, message)
MAX_EXPLANATION_TOKENS = 48


@dataclass(frozen=True)
class ScoredSkill:
    text: str
    llm: float  # p_LM normalised over the library (softmax of the summed log-probabilities)
    affordance: float
    combined: float  # llm x affordance: what the planner maximises

    def as_dict(self) -> dict:
        return {"skill": self.text, "llm": round(self.llm, 4), "affordance": round(self.affordance, 4),
                "combined": round(self.combined, 4)}


@dataclass
class Outcome:
    state: str  # succeeded, failed or refused (task/status terminal states)
    message: str
    steps: list[str] = field(default_factory=list)  # skills that succeeded, in order
    attempts: list[tuple[str, bool, str]] = field(default_factory=list)  # every executed skill: text, ok, message
    explanation: str = ""
    scores: list[ScoredSkill] = field(default_factory=list)  # the top-k of the last scoring


def clean_instruction(text) -> tuple[str, str]:
    """(instruction as the language model will read it, refusal or "")."""
    if not isinstance(text, str):
        return "", "the instruction must be text"
    if len(text) > MAX_INSTRUCTION_CHARS:
        return "", f"the instruction is {len(text)} characters long; the limit is {MAX_INSTRUCTION_CHARS}"
    cleaned = re.sub(r"\s+", " ", re.sub(r"[\x00-\x1f\x7f]", " ", text)).strip().lower()
    cleaned = cleaned.rstrip(".!?")
    if not cleaned:
        return "", "the instruction is empty"
    if not re.search(r"[a-z]", cleaned):
        return "", f"'{text.strip()[:60]}' has no words in it"
    return cleaned, ""


def summary(scored: list[ScoredSkill], k: int) -> str:
    """'0.81 = LM 0.92 x can 0.88: <skill> | ...' for the top k: what `ros-vla say` prints."""
    return " | ".join(f"{s.combined:.2f} = LM {s.llm:.2f} x can {s.affordance:.2f}: {s.text}" for s in scored[:k])


class SayCanPlanner:
    def __init__(self, library: SkillLibrary, lm: LanguageModel, affordance: Affordance, config: PlannerConfig,
                 few_shot: str):
        self.library = library
        self.lm = lm
        self.affordance = affordance
        self.config = config
        self.few_shot = few_shot
        self.objects = [name.replace("_", " ") for name in library.objects]

    def explain(self, instruction: str) -> str:
        text = self.lm.generate(self.few_shot + prompt.explanation_prefix(self.objects, instruction),
                                MAX_EXPLANATION_TOKENS, "\n")
        return text.strip()

    def score(self, instruction: str, steps: list[str], explanation: str | None = None) -> list[ScoredSkill]:
        """Every library skill scored for the next step, best first."""
        skills = list(self.library.skills)
        if self.config.use_language_model:
            log_probs = self.lm.score(self.few_shot + prompt.query(self.objects, instruction, steps, explanation),
                                      [prompt.step_option(s.text) for s in skills])
            llm = np.exp(log_probs - log_probs.max())
            llm /= llm.sum()
        else:
            llm = np.full(len(skills), 1.0 / len(skills))
        if self.config.use_affordance:
            affordance = np.clip(np.asarray(self.affordance(skills), float), 0.0, 1.0)
        else:
            affordance = np.ones(len(skills))
        # "done" gets a fixed small affordance, as in the paper.
        affordance = np.where([s.executor == "done" for s in skills], self.library.done_affordance, affordance)
        scored = [ScoredSkill(s.text, float(p), float(a), float(p * a)) for s, p, a in zip(skills, llm, affordance)]
        return sorted(scored, key=lambda s: -s.combined)

    def run(self, instruction: str, execute: Executor,
            progress: Callable[[str, str, list[str], list[ScoredSkill]], None] = lambda *a: None) -> Outcome:
        """Plan and execute until done, the step limit or too many failures.

        progress(state, message, steps so far, top scored skills) reports the explanation
        ("received"), each chosen skill before it runs and each failure ("executing")."""
        instruction, refusal = clean_instruction(instruction)
        if refusal:
            return Outcome("refused", refusal)
        if all(s.executor == "done" for s in self.library.skills):
            return Outcome("refused", "the skill library has no skills to run (only done)")
        cfg = self.config
        outcome = Outcome("failed", "")
        if cfg.chain_of_thought and cfg.use_language_model:
            outcome.explanation = self.explain(instruction)
            progress("received", f"explanation: {outcome.explanation}", [], [])
        explanation = outcome.explanation if cfg.chain_of_thought else None
        failures = 0
        while True:
            scored = self.score(instruction, outcome.steps, explanation)
            top = outcome.scores = scored[:cfg.top_k]
            feasible = [s for s in scored if s.text != DONE and s.affordance >= cfg.min_affordance]
            if not feasible:
                best = max((s for s in scored if s.text != DONE), key=lambda s: s.affordance)
                why = (f"no skill is feasible from here (most feasible: '{best.text}', "
                       f"p(success) {best.affordance:.2f} < {cfg.min_affordance})")
                outcome.state, outcome.message = ("refused" if not outcome.attempts else "failed"), why
                return outcome
            choice = scored[0]
            if choice.text == DONE:
                if not outcome.attempts:
                    outcome.state = "refused"
                    outcome.message = (f"none of my skills fits '{instruction[:80]}' (done scored highest: "
                                       f"{summary(top, 2)})")
                else:
                    outcome.state = "succeeded"
                    outcome.message = f"done after {len(outcome.steps)} step(s) [{summary(top, 3)}]"
                return outcome
            if len(outcome.steps) >= cfg.max_steps:
                outcome.message = f"step limit: {cfg.max_steps} skills without choosing done"
                return outcome
            skill = self.library.by_text(choice.text)
            progress("executing", f"{choice.text} [{summary(top, 3)}]", outcome.steps + [choice.text], top)
            success, message = execute(skill)
            outcome.attempts.append((skill.text, success, message))
            if success:
                outcome.steps.append(skill.text)
                continue
            failures += 1
            if failures > cfg.max_failures:
                outcome.message = f"'{skill.text}' failed ({message}); {failures} failed skills, giving up"
                return outcome
            progress("executing", f"'{skill.text}' failed ({message}); replanning", outcome.steps, top)
