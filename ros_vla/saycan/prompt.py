"""The text the language model reads and scores, shared by corpus generation, training and planning.

One example (the plan line lists the steps; the planner scores one step at a time):

    Objects: red block, blue block, green bowl.
    Human: bring me the blue block
    Explanation: I will pick up the blue block, carry it to the user and put it down.
    Robot: 1. pick up the blue block, 2. go to the user, 3. put it down, 4. done.

The Explanation line is optional (chain of thought). A candidate next step is scored as
the tokens " <skill text>" plus the delimiter that closes a step ("," or "." after done),
right after "Robot: 1. ..., N.". The delimiter makes the score a probability of the whole
step: without it, "pick up the red block" would always outscore its own extension
"pick up the red block and place it in the green bowl".
"""

from __future__ import annotations

DONE = "done"
PREAMBLE = ("Robot: I am a robot arm on a mobile base. I can pick up blocks, place them in bowls or on "
            "other blocks, carry them to the user and put them down, and drive between the table and the user.\n")


def objects_line(objects: list[str]) -> str:
    return "Objects: " + ", ".join(objects) + ".\n"


def step_option(text: str) -> str:
    """What is scored for a candidate step: the text and the delimiter that closes it."""
    return f" {text}" + ("." if text == DONE else ",")


def steps_so_far(steps: list[str]) -> str:
    """'Robot: 1. a, 2. b, 3.': the plan line up to the next step's number."""
    return "Robot:" + "".join(f" {i}. {step}," for i, step in enumerate(steps, 1)) + f" {len(steps) + 1}."


def example(objects: list[str], instruction: str, plan: list[str], explanation: str | None = None) -> str:
    """One complete example; `plan` ends with done."""
    text = objects_line(objects) + f"Human: {instruction}\n"
    if explanation is not None:
        text += f"Explanation: {explanation}\n"
    return text + steps_so_far(plan[:-1]) + step_option(plan[-1]) + "\n"


def query(objects: list[str], instruction: str, steps: list[str], explanation: str | None = None) -> str:
    """The open example the planner scores next steps after (no trailing space)."""
    text = objects_line(objects) + f"Human: {instruction}\n"
    if explanation is not None:
        text += f"Explanation: {explanation}\n"
    return text + steps_so_far(steps)


def explanation_prefix(objects: list[str], instruction: str) -> str:
    """The open example before the model writes its explanation."""
    return objects_line(objects) + f"Human: {instruction}\nExplanation:"
