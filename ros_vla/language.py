"""Rule-based reading of typed instructions into skill calls.

This is the stack's fallback understanding of language until the SayCan planner takes
over /instruction: it knows two skills, pick-and-place ("put the red block in the green
bowl") and navigation ("go to the user"), and refuses everything else with a reason.
The vocabulary (colours, object kinds, stations) comes from the scene file, never from
object poses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ros_vla.protocol import MAX_INSTRUCTION_CHARS

KIND_SYNONYMS = {
    "block": "block", "blocks": "block", "cube": "block", "cubes": "block",
    "bowl": "bowl", "bowls": "bowl", "container": "bowl", "dish": "bowl",
}
PLACE_WORDS = ("in", "into", "inside", "on", "onto", "to")
STATION_SYNONYMS = {"user": "user", "me": "user", "person": "user", "human": "user", "table": "table",
                    "work table": "table"}


@dataclass(frozen=True)
class SkillCall:
    skill: str  # "pick_place" or "navigate"
    text: str  # canonical skill text, e.g. "pick up the red block and place it in the green bowl"
    args: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Understanding:
    calls: tuple[SkillCall, ...] = ()
    refusal: str = ""


def _objects_mentioned(text: str, colors: set[str]) -> list[tuple[int, str, str | None]]:
    """(position, kind, colour or None) for each object phrase, in order of appearance."""
    found = []
    for match in re.finditer(r"\b(?:(\w+)\s+)?(" + "|".join(KIND_SYNONYMS) + r")\b", text):
        adjective, noun = match.group(1), match.group(2)
        found.append((match.start(), KIND_SYNONYMS[noun], adjective if adjective in colors else None))
    return found


def _unknown_color(text: str, colors: set[str]) -> str | None:
    match = re.search(r"\b(\w+)\s+(?:" + "|".join(KIND_SYNONYMS) + r")\b", text)
    if match and match.group(1) not in colors and match.group(1) not in ("the", "a", "an", "that", "this"):
        return match.group(1)
    return None


def understand(instruction: str, objects: dict[str, tuple[str, str]], stations: set[str]) -> Understanding:
    """Map an instruction to skill calls. `objects`: name -> (kind, colour) in the scene."""
    if not isinstance(instruction, str) or not instruction.strip():
        return Understanding(refusal="the instruction is empty")
    if len(instruction) > MAX_INSTRUCTION_CHARS:
        return Understanding(refusal=f"the instruction is {len(instruction)} characters; the limit is "
                                     f"{MAX_INSTRUCTION_CHARS}")
    text = re.sub(r"[^a-z0-9 ]+", " ", instruction.lower())
    text = re.sub(r"\s+", " ", text).strip()
    colors = {color for _, color in objects.values()}
    known = ", ".join(sorted(name.replace("_", " ") for name in objects))

    navigate = re.search(r"\b(?:go|drive|move|come|navigate|return)\b(?: back)? to (?:the )?([a-z ]+)$", text)
    if navigate and not _objects_mentioned(text, colors):
        said = navigate.group(1).strip()
        target = STATION_SYNONYMS.get(said, said)
        if target not in stations:
            return Understanding(refusal=f"I do not know the place '{said}'; "
                                         f"known places: {', '.join(sorted(stations))}")
        return Understanding(calls=(SkillCall("navigate", f"go to the {target}", {"station": target}),))

    mentions = _objects_mentioned(text, colors)
    if not mentions:
        return Understanding(refusal=f"I could not find an object in '{instruction.strip()[:80]}'; I can put "
                                     f"blocks into bowls or go to a place. Objects here: {known}")
    unknown = _unknown_color(text, colors)
    if unknown:
        return Understanding(refusal=f"there is no '{unknown}' object here; objects here: {known}")
    if len(mentions) < 2 or not re.search(r"\b(?:" + "|".join(PLACE_WORDS) + r")\b", text):
        return Understanding(refusal="say where to put it, e.g. 'put the red block in the green bowl'")

    def resolve(kind: str, color: str | None) -> str | None:
        candidates = [name for name, (k, c) in objects.items() if k == kind and (color is None or c == color)]
        return candidates[0] if len(candidates) == 1 else None

    (_, pick_kind, pick_color), (_, place_kind, place_color) = mentions[0], mentions[1]
    pick, place = resolve(pick_kind, pick_color), resolve(place_kind, place_color)
    for name, kind, color in ((pick, pick_kind, pick_color), (place, place_kind, place_color)):
        if name is None:
            described = f"{color} {kind}" if color else kind
            return Understanding(refusal=f"'{described}' does not name exactly one object here; objects: {known}")
    if objects[pick][0] != "block":
        return Understanding(refusal=f"I can only pick up blocks, not the {pick.replace('_', ' ')}")
    if objects[place][0] != "bowl":
        return Understanding(refusal=f"I can only place things into bowls, not onto the {place.replace('_', ' ')}")
    skill_text = f"pick up the {pick.replace('_', ' ')} and place it in the {place.replace('_', ' ')}"
    return Understanding(calls=(SkillCall("pick_place", skill_text, {"pick": pick, "place": place}),))
