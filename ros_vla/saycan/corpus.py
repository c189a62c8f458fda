"""A generated corpus of (instruction, plan) pairs for this robot's skills and world.

Each example draws a made-up tabletop (2-4 blocks and 1-3 bowls in colours of the scene
file's palette, so the model learns to copy names rather than memorise one scene), an
instruction family, a phrasing from templates, and writes the plan as skill texts from
the skill library (config/saycan_skills.yaml), ending with done. The language model
trained on it never sees object poses: which steps are feasible is the affordances' job.
Some plans start with "go to the table" (the robot may be elsewhere), so that step keeps
some probability and affordances can choose it when the robot is away.

Out-of-scope requests and objects that are not in the scene get the plan "1. done."

Families (the paper's instruction families where they apply here): single (one
pick-and-place), stack, pick, bring, put_down, navigate, two (two placements), all (every
block into one bowl), tower, put_bring, bring_two, any_bowl, any_block, refuse.

    python -m ros_vla.saycan.corpus --examples 40000 --out data/saycan/corpus.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

import yaml

from ros_vla.paths import config_file
from ros_vla.saycan import prompt
from ros_vla.saycan.config import DONE, SkillLibrary, build_skill_library, spoken

STATIONS = ["table", "user"]
BLOCK_NOUNS = ["block"] * 4 + ["cube"]
BOWL_NOUNS = ["bowl"] * 4 + ["dish", "container"]
POLITE = ["", "", "", "", "please ", "can you ", "could you ", "robot, ", "hey robot, ", "i need you to ",
          "would you "]
THANKS = ["", "", "", "", " please", " thanks", " for me", " now"]
OUT_OF_SCOPE = [
    "make me a sandwich", "open the door", "what time is it", "sing a song", "clean the kitchen",
    "fly to the moon", "turn on the lights", "water the plants", "tell me a joke", "wash the dishes",
    "cook dinner", "drive the car", "close the window", "play some music", "vacuum the floor",
    "throw the ball", "call my mother", "fold the laundry", "paint the wall", "feed the cat",
    "open the fridge", "charge my phone", "read me a book", "walk the dog", "jump", "dance",
    "what is your name", "hello", "thank you", "how are you", "do a backflip", "book a flight",
]
GIBBERISH_WORDS = ["blorp", "zig", "quux", "wibble", "flarn", "asdf", "qwerty", "lorem", "ipsum", "grok",
                   "banana", "seven", "the", "purple", "moon", "under", "quickly", "table", "red"]


FAMILY_WEIGHTS = {"single": 14, "stack": 7, "pick": 5, "bring": 9, "put_down": 3, "navigate": 4, "two": 8, "all": 6,
                  "tower": 5, "put_bring": 5, "bring_two": 4, "any_bowl": 4, "any_block": 4, "refuse": 8}
# Families whose first step names objects from the instruction: where colour binding is learned and measured.
BINDING_FAMILIES = {"single": 4, "stack": 2, "pick": 2, "bring": 2, "two": 2, "put_bring": 1, "refuse": 1}


@dataclass(frozen=True)
class Example:
    family: str
    objects: list[str]
    instruction: str
    plan: list[str]  # skill texts, ending with done
    explanation: str

    def text(self, with_explanation: bool) -> str:
        return prompt.example(self.objects, self.instruction, self.plan,
                              self.explanation if with_explanation else None)


def palette() -> list[str]:
    return list(yaml.safe_load(config_file("scene_tabletop.yaml").read_text())["colors"])


class CorpusGenerator:
    def __init__(self, seed: int = 0, skills_file: str | Path | None = None, colors: list[str] | None = None):
        self.rng = random.Random(seed)
        self.skills_file = skills_file or config_file("saycan_skills.yaml")
        self.colors = colors or palette()
        self._libraries: dict[tuple, SkillLibrary] = {}

    # ----------------------------------------------------------------- scenes and phrasing
    def scene(self) -> tuple[list[str], list[str], list[str]]:
        """(block names, bowl names, colours not used) of a made-up tabletop."""
        colors = self.rng.sample(self.colors, len(self.colors))
        n_blocks, n_bowls = self.rng.randint(2, 4), self.rng.randint(1, 3)
        blocks = [f"{c}_block" for c in colors[:n_blocks]]
        bowls = [f"{c}_bowl" for c in colors[n_blocks:n_blocks + n_bowls]]
        return blocks, bowls, colors[n_blocks + n_bowls:]

    def library(self, blocks: list[str], bowls: list[str]) -> SkillLibrary:
        key = (tuple(blocks), tuple(bowls))
        if key not in self._libraries:
            objects = [(b, "block") for b in blocks] + [(b, "bowl") for b in bowls]
            self._libraries[key] = build_skill_library(self.skills_file, objects, STATIONS)
        return self._libraries[key]

    def said(self, name: str) -> str:
        """'the red cube' for red_block: a colour and a noun synonym."""
        color, kind = name.rsplit("_", 1)
        noun = self.rng.choice(BLOCK_NOUNS if kind == "block" else BOWL_NOUNS)
        return f"the {color} {noun}"

    def polite(self, core: str) -> str:
        return self.rng.choice(POLITE) + core + self.rng.choice(THANKS)

    # ----------------------------------------------------------------- families
    def example(self, families: dict[str, float] | None = None) -> Example:
        """One example; `families` (name -> weight) overrides FAMILY_WEIGHTS (e.g. a curriculum)."""
        weights = families or FAMILY_WEIGHTS
        family = self.rng.choices(list(weights), weights=list(weights.values()))[0]
        blocks, bowls, unused = self.scene()
        lib = self.library(blocks, bowls)
        instruction, plan, explanation = getattr(self, f"_{family}")(lib, blocks, bowls, unused)
        table_first = plan and plan[0] != lib.find("navigate", station="table") and family not in (
            "navigate", "refuse", "put_down")
        if table_first and self.rng.random() < 0.25:
            plan = [lib.find("navigate", station="table")] + plan
        objects = [spoken(n) for n in blocks + bowls]
        return Example(family, objects, instruction, plan + [DONE], explanation)

    def _put(self, lib, block, bowl) -> str:
        return lib.find("pick_place", pick=block, place=bowl)

    def _bring_steps(self, lib, block) -> list[str]:
        return [lib.find("pick", pick=block), lib.find("navigate", station="user"), lib.find("put_down")]

    def _put_phrase(self, b: str, w: str) -> str:
        return self.rng.choice([
            "put {b} in {w}", "place {b} in {w}", "move {b} into {w}", "drop {b} into {w}", "put {b} into {w}",
            "pick up {b} and put it in {w}", "pick up {b} and place it in {w}", "transfer {b} to {w}",
            "i want {b} in {w}", "get {b} into {w}", "take {b} and put it in {w}", "place {b} inside {w}",
            "grab {b} and drop it in {w}", "put {b} inside {w}", "move {b} to {w}", "{b} goes in {w}",
        ]).format(b=b, w=w)

    def _single(self, lib, blocks, bowls, unused):
        b, w = self.rng.choice(blocks), self.rng.choice(bowls)
        return (self.polite(self._put_phrase(self.said(b), self.said(w))), [self._put(lib, b, w)],
                f"the {spoken(b)} should go in the {spoken(w)}.")

    def _stack(self, lib, blocks, bowls, unused):
        top, bottom = self.rng.sample(blocks, 2)
        phrase = self.rng.choice([
            "stack {t} on {b}", "put {t} on top of {b}", "place {t} on {b}", "put {t} on {b}",
            "stack {t} on top of {b}", "move {t} onto {b}", "pick up {t} and place it on {b}",
            "set {t} on {b}", "put {t} onto {b}"])
        return (self.polite(phrase.format(t=self.said(top), b=self.said(bottom))),
                [lib.find("pick_place", pick=top, place=bottom)], f"the {spoken(top)} goes on the {spoken(bottom)}.")

    def _pick(self, lib, blocks, bowls, unused):
        b = self.rng.choice(blocks)
        phrase = self.rng.choice(["pick up {b}", "grab {b}", "hold {b}", "lift {b}", "pick {b} up", "take {b}",
                                  "grasp {b}"])
        return self.polite(phrase.format(b=self.said(b))), [lib.find("pick", pick=b)], \
            f"I only need to pick up the {spoken(b)}."

    def _bring(self, lib, blocks, bowls, unused):
        b = self.rng.choice(blocks)
        phrase = self.rng.choice(["bring me {b}", "bring {b} to me", "give me {b}", "hand me {b}",
                                  "bring {b} to the user", "fetch {b}", "fetch me {b}", "can i have {b}",
                                  "deliver {b} to me", "i want {b}", "take {b} to the user", "bring over {b}"])
        return self.polite(phrase.format(b=self.said(b))), self._bring_steps(lib, b), \
            f"I will pick up the {spoken(b)}, carry it to the user and put it down."

    def _put_down(self, lib, blocks, bowls, unused):
        phrase = self.rng.choice(["put it down", "drop it", "set it down", "let go of it", "release it",
                                  "put down what you are holding", "put that down", "put the block down"])
        return self.polite(phrase), [lib.find("put_down")], "I will put down what I hold."

    def _navigate(self, lib, blocks, bowls, unused):
        if self.rng.random() < 0.5:
            phrase = self.rng.choice(["go to the user", "come to me", "come here", "come over to me",
                                      "go to the person", "drive to the user", "come to the user"])
            return self.polite(phrase), [lib.find("navigate", station="user")], "I will go to the user."
        phrase = self.rng.choice(["go to the table", "go back to the table", "return to the table",
                                  "drive to the table", "go to the work table", "head back to the table"])
        return self.polite(phrase), [lib.find("navigate", station="table")], "I will go to the table."

    def _two(self, lib, blocks, bowls, unused):
        b1, b2 = self.rng.sample(blocks, 2)
        w1, w2 = self.rng.choice(bowls), self.rng.choice(bowls)
        first = self._put_phrase(self.said(b1), self.said(w1))
        joint = self.rng.choice([
            "{first} and {b2} in {w2}", "{first}, then {second}", "{first} and then {second}",
            "first {first}, then {second}", "{first} and {second}"])
        instruction = joint.format(first=first, second=self._put_phrase(self.said(b2), self.said(w2)),
                                   b2=self.said(b2), w2=self.said(w2))
        return (self.polite(instruction), [self._put(lib, b1, w1), self._put(lib, b2, w2)],
                f"the {spoken(b1)} goes in the {spoken(w1)} and the {spoken(b2)} in the {spoken(w2)}.")

    def _all(self, lib, blocks, bowls, unused):
        w = self.rng.choice(bowls)
        phrase = self.rng.choice(["put all the blocks in {w}", "put every block in {w}", "move all blocks into {w}",
                                  "put the blocks in {w}", "put all blocks into {w}", "gather the blocks in {w}",
                                  "put all the cubes in {w}", "collect all the blocks in {w}"])
        return (self.polite(phrase.format(w=self.said(w))), [self._put(lib, b, w) for b in blocks],
                f"I will put each block in the {spoken(w)}, one at a time.")

    def _tower(self, lib, blocks, bowls, unused):
        if self.rng.random() < 0.5:
            base = blocks[0]
            phrase = self.rng.choice(["stack all the blocks", "stack the blocks", "make a tower of the blocks",
                                      "build a tower with all the blocks", "stack all blocks on each other",
                                      "put the blocks on top of each other"])
            instruction = phrase
        else:
            base = self.rng.choice(blocks)
            phrase = self.rng.choice(["stack the blocks on {b}", "stack all the blocks on {b}",
                                      "build a tower on {b}", "put the other blocks on {b}"])
            instruction = phrase.format(b=self.said(base))
        order = [base] + [b for b in blocks if b != base]
        plan = [lib.find("pick_place", pick=top, place=below) for below, top in zip(order, order[1:])]
        return self.polite(instruction), plan, f"I will build a tower on the {spoken(base)}."

    def _put_bring(self, lib, blocks, bowls, unused):
        b1, b2 = self.rng.sample(blocks, 2)
        w = self.rng.choice(bowls)
        joint = self.rng.choice(["{first} and bring me {b2}", "{first}, then bring me {b2}",
                                 "{first} and then give me {b2}", "first {first}, then bring {b2} to me"])
        instruction = joint.format(first=self._put_phrase(self.said(b1), self.said(w)), b2=self.said(b2))
        return (self.polite(instruction), [self._put(lib, b1, w)] + self._bring_steps(lib, b2),
                f"the {spoken(b1)} goes in the {spoken(w)}, then I carry the {spoken(b2)} to the user.")

    def _bring_two(self, lib, blocks, bowls, unused):
        b1, b2 = self.rng.sample(blocks, 2)
        phrase = self.rng.choice(["bring me {b1} and {b2}", "give me {b1} and {b2}", "bring {b1} and {b2} to me",
                                  "fetch {b1} and {b2}"])
        plan = self._bring_steps(lib, b1) + [lib.find("navigate", station="table")] + self._bring_steps(lib, b2)
        return (self.polite(phrase.format(b1=self.said(b1), b2=self.said(b2))), plan,
                f"I can carry one block at a time: first the {spoken(b1)}, then the {spoken(b2)}.")

    def _any_bowl(self, lib, blocks, bowls, unused):
        b, w = self.rng.choice(blocks), self.rng.choice(bowls)
        phrase = self.rng.choice(["put {b} in a bowl", "put {b} in any bowl", "place {b} in one of the bowls",
                                  "put {b} in a container", "put away {b}"])
        return self.polite(phrase.format(b=self.said(b))), [self._put(lib, b, w)], \
            f"any bowl will do for the {spoken(b)}."

    def _any_block(self, lib, blocks, bowls, unused):
        b, w = self.rng.choice(blocks), self.rng.choice(bowls)
        phrase = self.rng.choice(["put a block in {w}", "put any block in {w}", "place one of the blocks in {w}",
                                  "put a cube in {w}", "move a block into {w}"])
        return self.polite(phrase.format(w=self.said(w))), [self._put(lib, b, w)], \
            f"any block will do for the {spoken(w)}."

    def _refuse(self, lib, blocks, bowls, unused):
        choice = self.rng.random()
        if choice < 0.5:
            return self.polite(self.rng.choice(OUT_OF_SCOPE)), [], "none of my skills can do that."
        if choice < 0.7:
            words = " ".join(self.rng.choice(GIBBERISH_WORDS) for _ in range(self.rng.randint(1, 5)))
            return words, [], "that is not an instruction I understand."
        color = self.rng.choice(unused)
        kind = self.rng.choice(["block", "bowl"])
        absent = f"the {color} {kind}"
        phrase = self.rng.choice(["put {a} in {w}", "bring me {a}", "pick up {a}", "stack {b} on {a}",
                                  "put {b} in {a}"])
        instruction = phrase.format(a=absent, w=self.said(self.rng.choice(bowls)), b=self.said(blocks[0]))
        return self.polite(instruction), [], f"there is no {color} {kind} here."


def document(examples: list[Example], with_explanation: bool) -> str:
    """A training document: the preamble and a few examples, as the planner's prompt has."""
    return prompt.PREAMBLE + "".join(e.text(with_explanation) for e in examples)


def few_shot_examples(with_explanation: bool) -> str:
    """The fixed few-shot part of the planner's prompt: the preamble and three examples."""
    shots = [
        Example("bring", ["orange block", "cyan block", "pink bowl"], "bring me the cyan block",
                ["pick up the cyan block", "go to the user", "put it down", DONE],
                "I will pick up the cyan block, carry it to the user and put it down."),
        Example("two", ["white block", "brown block", "orange block", "pink bowl", "cyan bowl"],
                "put the white block in the pink bowl and the orange block in the cyan bowl",
                ["pick up the white block and place it in the pink bowl",
                 "pick up the orange block and place it in the cyan bowl", DONE],
                "the white block goes in the pink bowl and the orange block in the cyan bowl."),
        Example("refuse", ["pink block", "white block", "brown bowl"], "make me a sandwich", [DONE],
                "none of my skills can do that."),
    ]
    return prompt.PREAMBLE + "".join(e.text(with_explanation) for e in shots)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="generate the SayCan language model's training corpus")
    parser.add_argument("--examples", type=int, default=40000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="data/saycan/corpus.jsonl")
    args = parser.parse_args(argv)
    generator = CorpusGenerator(args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    families: dict[str, int] = {}
    with open(out, "w") as f:
        for _ in range(args.examples):
            e = generator.example()
            families[e.family] = families.get(e.family, 0) + 1
            f.write(json.dumps({"family": e.family, "objects": e.objects, "instruction": e.instruction,
                                "plan": e.plan, "explanation": e.explanation}) + "\n")
    print(f"{args.examples} examples -> {out}; families: {dict(sorted(families.items()))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
