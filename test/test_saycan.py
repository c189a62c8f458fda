"""SayCan without ROS: scoring maths, the skill library, the planner loop, evaluation goals,
and the headless skills in the simulator."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import torch
import yaml

from ros_vla.paths import config_file
from ros_vla.saycan import prompt
from ros_vla.saycan.config import PlannerConfig, Skill, SkillLibrary, build_skill_library, load_skill_library
from ros_vla.saycan.eval import CONDITIONS, FAMILY_ORDER, SymbolicState, planned_skills, read_suite
from ros_vla.saycan.llm import HFCausalLM, OpenAICompatibleLM
from ros_vla.saycan.planner import Outcome, SayCanPlanner, clean_instruction
from ros_vla.sim.scene import load_scene

SCENE = load_scene(config_file("scene_tabletop.yaml"))
PROMPT = prompt.PREAMBLE + prompt.query(["red block", "green bowl"], "put the red block in the green bowl", [])
OPTIONS = [prompt.step_option(t) for t in ["pick up the red block and place it in the green bowl",
                                           "pick up the red block", "go to the user", "done"]]


# ----------------------------------------------------------------- scoring on a tiny random model

@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny_lm(request):
    from ros_vla.saycan.train_lm import build_model, build_tokenizer

    torch.set_num_threads(1)
    tokenizer = build_tokenizer([PROMPT + "".join(OPTIONS)] * 4, vocab_size=300)
    model = build_model(len(tokenizer), layers=2, width=32, heads=2, positions=256, seed=3, arch=request.param)
    return model, tokenizer


def reference_scores(model, tokenizer, prompt_text, options):
    """The definition, one full forward pass per option: sum of log p(option token | everything before)."""
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    scores = []
    for option in options:
        ids = tokenizer(option, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([prompt_ids + ids])).logits[0].double()
        log_probs = torch.log_softmax(logits, -1)
        scores.append(sum(float(log_probs[len(prompt_ids) + j - 1, t]) for j, t in enumerate(ids)))
    return np.array(scores)


@pytest.mark.parametrize("batch_size", [0, 1, 3])
@pytest.mark.parametrize("use_cache", [True, False])
def test_scores_are_summed_log_probabilities_batched_or_not_cached_or_not(tiny_lm, batch_size, use_cache):
    model, tokenizer = tiny_lm
    lm = HFCausalLM(None, batch_size=batch_size, use_cache=use_cache, model=model, tokenizer=tokenizer)
    np.testing.assert_allclose(lm.score(PROMPT, OPTIONS), reference_scores(model, tokenizer, PROMPT, OPTIONS),
                               atol=1e-5, rtol=0)


def test_delimiter_keeps_a_prefix_skill_from_always_winning():
    assert prompt.step_option("pick up the red block") == " pick up the red block,"
    assert prompt.step_option("done") == " done."
    assert not prompt.step_option("pick up the red block and place it in the green bowl").startswith(
        prompt.step_option("pick up the red block"))


def test_prompt_matches_the_corpus_format():
    plan = ["pick up the red block", "go to the user", "put it down", "done"]
    full = prompt.example(["red block"], "bring me the red block", plan)
    for k, step in enumerate(plan):
        assert full.startswith(prompt.query(["red block"], "bring me the red block", plan[:k]) +
                               prompt.step_option(step))


class CompletionsServer:
    """An OpenAI-compatible /v1/completions server (echo + logprobs, as vLLM) on the tiny model."""

    def __init__(self, model, tokenizer):
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, body))
                prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
                choices = [outer.complete(i, text) for i, text in enumerate(prompts)]
                payload = json.dumps({"object": "text_completion", "choices": choices}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.model, self.tokenizer = model, tokenizer
        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def complete(self, index: int, text: str) -> dict:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            log_probs = torch.log_softmax(self.model(torch.tensor([ids])).logits[0].double(), -1)
        generated = int(log_probs[-1].argmax())
        all_ids = ids + [generated]
        offsets = [len(self.tokenizer.decode(all_ids[:i])) for i in range(len(all_ids))]
        token_logprobs = [None] + [float(log_probs[i - 1, t]) for i, t in enumerate(all_ids) if i > 0]
        return {"index": index, "text": text + self.tokenizer.decode([generated]), "logprobs": {
            "tokens": [self.tokenizer.decode([t]) for t in all_ids], "token_logprobs": token_logprobs,
            "text_offset": offsets}}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_openai_compatible_backend_matches_the_local_model(tiny_lm):
    model, tokenizer = tiny_lm
    server = CompletionsServer(model, tokenizer)
    try:
        remote = OpenAICompatibleLM(server.url, "tiny")
        scores = remote.score(PROMPT, OPTIONS)
    finally:
        server.close()
    path, body = server.requests[0]
    assert path == "/v1/completions" and body["echo"] is True and body["logprobs"] >= 1
    assert body["prompt"] == [PROMPT + o for o in OPTIONS], "one request for every option"
    np.testing.assert_allclose(scores, reference_scores(model, tokenizer, PROMPT, OPTIONS), atol=1e-5, rtol=0)


def test_greedy_generation_stops_at_the_stop_string(tiny_lm):
    model, tokenizer = tiny_lm
    text = HFCausalLM(None, model=model, tokenizer=tokenizer).generate(PROMPT, 8, "\n")
    assert "\n" not in text and isinstance(text, str)


# ----------------------------------------------------------------- the skill library

def test_library_is_generated_from_the_scene():
    library = load_skill_library(config_file("saycan_skills.yaml"), SCENE)
    executors = [s.executor for s in library.skills]
    blocks, bowls = 3, 2
    assert executors.count("pick_place") == blocks * bowls + blocks * (blocks - 1)
    assert executors.count("pick") == blocks and executors.count("navigate") == len(SCENE.stations)
    assert executors.count("put_down") == 1 and executors.count("done") == 1
    skill = library.by_text("pick up the red block and place it in the green bowl")
    assert skill.args == {"pick": "red_block", "place": "green_bowl"} and skill.affordance[0] == "cliport"
    assert library.find("navigate", station="user") == "go to the user"
    assert "pick up the red block and place it on the red block" not in library.texts
    restricted = library.restricted_to({"navigate"})
    assert {s.executor for s in restricted.skills} == {"navigate", "done"}


def test_adding_a_skill_is_one_entry(tmp_path):
    raw = yaml.safe_load(config_file("saycan_skills.yaml").read_text())
    raw["skills"].append({"text": "push the red block to the left", "executor": "rt1",
                          "affordance": ["value_function"]})
    path = tmp_path / "skills.yaml"
    path.write_text(yaml.safe_dump(raw))
    library = load_skill_library(path, SCENE)
    assert library.by_text("push the red block to the left").executor == "rt1"


@pytest.mark.parametrize("entry, match", [
    ({"text": "fly", "executor": "jetpack"}, "executor"),
    ({"text": "go", "executor": "navigate", "affordance": ["crystal_ball"]}, "affordance"),
    ({"text": "", "executor": "done"}, "text"),
])
def test_bad_skill_entries_are_refused(tmp_path, entry, match):
    path = tmp_path / "skills.yaml"
    path.write_text(yaml.safe_dump({"skills": [entry, {"text": "done", "executor": "done"}]}))
    with pytest.raises(ValueError, match=match):
        load_skill_library(path, SCENE)


def test_generated_entries_need_known_kinds_and_a_done_skill(tmp_path):
    path = tmp_path / "skills.yaml"
    path.write_text(yaml.safe_dump({"generated": [{"text": "hug the {x}", "executor": "pick",
                                                   "for_each": {"x": "person"}}], "skills": []}))
    with pytest.raises(ValueError, match="ranges over"):
        load_skill_library(path, SCENE)
    path.write_text(yaml.safe_dump({"skills": [{"text": "go", "executor": "navigate"}]}))
    with pytest.raises(ValueError, match="done"):
        build_skill_library(path, [], [])


# ----------------------------------------------------------------- the planner loop

LIBRARY = SkillLibrary((Skill("pick up the a", "pick", {"pick": "a"}), Skill("go to the user", "navigate"),
                        Skill("put it down", "put_down"), Skill("done", "done")), 0.1, ("a_block",))


class ScriptedLM:
    """Prefers the scripted next step (after as many steps as the plan line holds) by `margin` nats."""

    name = "scripted"

    def __init__(self, plan, margin=5.0, runner_up=None):
        self.plan, self.margin, self.runner_up = plan, margin, runner_up
        self.calls = 0

    def score(self, prompt_text, options):
        self.calls += 1
        steps = prompt_text.rsplit("Robot:", 1)[1].count(",")
        wanted = self.plan[min(steps, len(self.plan) - 1)]
        scores = np.array([0.0 if o == prompt.step_option(wanted) else -self.margin for o in options])
        if self.runner_up:
            scores[options.index(prompt.step_option(self.runner_up))] = -0.4
        return scores

    def generate(self, prompt_text, max_tokens, stop):
        return "I will do it."


class Recorder:
    def __init__(self, results=()):
        self.results = list(results)
        self.executed = []

    def __call__(self, skill):
        self.executed.append(skill)
        return self.results.pop(0) if self.results else (True, "ok")


def planner(lm, affordance=lambda skills: np.full(len(skills), 0.9), **config):
    return SayCanPlanner(LIBRARY, lm, affordance, PlannerConfig(**config), prompt.PREAMBLE)


def test_runs_until_done_and_reports_each_step():
    executor, reports = Recorder(), []
    outcome = planner(ScriptedLM(["pick up the a", "go to the user", "put it down", "done"])).run(
        "bring me the a", executor, lambda *report: reports.append(report))
    assert outcome.state == "succeeded" and outcome.steps == ["pick up the a", "go to the user", "put it down"]
    assert [s.text for s in executor.executed] == outcome.steps
    assert all(s in LIBRARY.skills for s in executor.executed), "only library skills are executed"
    assert [r[0] for r in reports] == ["executing"] * 3 and reports[1][2] == ["pick up the a", "go to the user"]
    top = reports[0][3][0]
    assert top.text == "pick up the a" and top.combined == pytest.approx(top.llm * top.affordance)


def test_affordance_overrules_the_language_model():
    lm = ScriptedLM(["pick up the a", "done"], runner_up="go to the user")
    affordance = lambda skills: np.array([0.05 if s.executor == "pick" else 0.9 for s in skills])  # noqa: E731
    executor = Recorder()
    planner(lm, affordance, max_steps=1).run("get the a", executor)
    assert executor.executed[0].text == "go to the user"


def test_done_gets_the_fixed_affordance():
    scored = planner(ScriptedLM(["done"])).score("anything", [])
    done = next(s for s in scored if s.text == "done")
    assert done.affordance == 0.1 and scored[0].text == "done"


def test_step_limit():
    executor = Recorder()
    outcome = planner(ScriptedLM(["go to the user"]), max_steps=3).run("keep going", executor)
    assert outcome.state == "failed" and "step limit" in outcome.message and len(executor.executed) == 3


def test_a_failed_skill_is_retried_after_replanning():
    executor = Recorder([(False, "slipped"), (True, "ok")])
    outcome = planner(ScriptedLM(["pick up the a", "done"])).run("pick up the a", executor)
    assert outcome.state == "succeeded" and len(executor.executed) == 2
    assert outcome.attempts[0] == ("pick up the a", False, "slipped")
    assert planned_skills(outcome) == ["pick up the a"]


def test_too_many_failures_give_up():
    executor = Recorder([(False, "slipped")] * 10)
    outcome = planner(ScriptedLM(["pick up the a", "done"]), max_failures=2).run("pick up the a", executor)
    assert outcome.state == "failed" and len(executor.executed) == 3 and "giving up" in outcome.message


def test_nothing_feasible_is_refused_without_moving():
    executor = Recorder()
    outcome = planner(ScriptedLM(["pick up the a", "done"]), lambda skills: np.full(len(skills), 0.01)).run(
        "pick up the a", executor)
    assert outcome.state == "refused" and "no skill is feasible" in outcome.message and not executor.executed


def test_done_first_is_a_refusal():
    outcome = planner(ScriptedLM(["done"])).run("make me a sandwich", Recorder())
    assert outcome.state == "refused" and "none of my skills" in outcome.message


@pytest.mark.parametrize("text, match", [("", "empty"), ("   \n\t ", "empty"), ("x" * 501, "limit"),
                                         ("!!! ???", "no words"), (None, "text")])
def test_bad_instructions_get_a_clear_answer_without_the_language_model(text, match):
    lm = ScriptedLM(["pick up the a", "done"])
    outcome = planner(lm).run(text, Recorder())
    assert outcome.state == "refused" and match in outcome.message and lm.calls == 0


def test_instruction_is_cleaned():
    assert clean_instruction("  Please, put the RED block\n in the bowl!  ") == (
        "please, put the red block in the bowl", "")


def test_chain_of_thought_explanation_goes_in_the_prompt():
    lm = ScriptedLM(["done"])
    seen = []
    lm.score = lambda p, options, score=lm.score: seen.append(p) or score(p, options)
    outcome = planner(lm, chain_of_thought=True).run("hello", Recorder())
    assert outcome.explanation == "I will do it." and "Explanation: I will do it.\nRobot: 1." in seen[0]


def test_ablations_flatten_their_factor():
    lm = ScriptedLM(["pick up the a", "done"])
    no_lm = planner(lm, use_language_model=False).score("x", [])
    assert {round(s.llm, 6) for s in no_lm} == {0.25}
    no_affordance = planner(lm, lambda skills: np.zeros(len(skills)), use_affordance=False).score("x", [])
    assert {s.affordance for s in no_affordance if s.text != "done"} == {1.0}


# ----------------------------------------------------------------- evaluation suite and goals

def test_shipped_suite_is_valid_and_covers_the_families():
    items = read_suite(config_file("saycan_suite.jsonl"))
    library = load_skill_library(config_file("saycan_skills.yaml"), SCENE)
    assert len(items) >= 60
    assert set(FAMILY_ORDER) == {item["family"] for item in items}
    for item in items:
        assert item["goal"] and all(next(iter(c)) in CONDITIONS for c in item["goal"])
        for text in item["setup"]:
            library.by_text(text)


def truth(objects, base=(0.0, 0.0, 0.0)):
    return {"base_pose": list(base), "objects": [
        {"name": n, "kind": n.split("_")[1], "position": list(p), "held": h} for n, p, h in objects]}


def tabletop_truth():
    """Every object of the scene on the work table, nothing held, the robot at the table."""
    return truth([("red_block", (0.7, 0.1, 0.57), False), ("blue_block", (0.7, -0.2, 0.57), False),
                  ("yellow_block", (0.8, 0.0, 0.57), False), ("green_bowl", (0.6, 0.2, 0.553), False),
                  ("purple_bowl", (0.6, -0.2, 0.553), False)])


def test_symbolic_plan_reaches_goals_only_through_feasible_steps():
    library = load_skill_library(config_file("saycan_skills.yaml"), SCENE)
    state = SymbolicState(tabletop_truth(), SCENE)
    assert state.robot == "table" and state.place["red_block"] == ("surface", "work_table")
    for text in ["pick up the red block", "go to the user", "put it down"]:
        assert state.apply(library.by_text(text))
    done = Outcome("succeeded", "")
    assert state.holds({"at_station": ["red_block", "user"]}, done)
    assert not state.holds({"unchanged": True}, done)
    assert not state.apply(library.by_text("pick up the blue block")), "nothing on the table is reachable from the user"
    assert state.apply(library.by_text("go to the table"))
    assert not state.apply(library.by_text("pick up the red block")), "it was left at the user station"
    assert state.apply(library.by_text("pick up the blue block and place it on the yellow block"))


def test_symbolic_plan_cannot_pick_a_covered_block_or_stack_in_a_cycle():
    library = load_skill_library(config_file("saycan_skills.yaml"), SCENE)
    state = SymbolicState(tabletop_truth(), SCENE)
    assert state.apply(library.by_text("pick up the red block and place it on the blue block"))
    assert not state.apply(library.by_text("pick up the blue block and place it on the red block")), "a cycle"
    assert not state.apply(library.by_text("pick up the blue block")), "the red block is on it"
    assert not state.apply(library.by_text("pick up the yellow block and place it on the blue block"))
    assert state.apply(library.by_text("pick up the yellow block and place it on the red block"))
    assert state.holds({"tower": ["red_block", "blue_block", "yellow_block"]}, Outcome("succeeded", ""))


def test_symbolic_start_state_sees_blocks_in_bowls():
    start = truth([("red_block", (0.6, 0.2, 0.58), False), ("blue_block", (0.7, -0.2, 0.57), True),
                   ("yellow_block", (0.8, 0.0, 0.57), False), ("green_bowl", (0.6, 0.2, 0.553), False),
                   ("purple_bowl", (0.6, -0.2, 0.553), False)])
    state = SymbolicState(start, SCENE)
    assert state.place["red_block"] == ("in", "green_bowl") and state.held == "blue_block"


# ----------------------------------------------------------------- headless skills in the simulator

def test_bring_me_a_block_in_the_simulator():
    from ros_vla.robot.motion import MotionConfig
    from ros_vla.saycan.eval import truth_holds
    from ros_vla.saycan.sim_skills import execute_skill
    from ros_vla.sim.oracle import world_truth
    from ros_vla.sim.world import SimWorld

    library = load_skill_library(config_file("saycan_skills.yaml"), SCENE)
    world = SimWorld(SCENE, seed=7, renderer=None)
    try:
        world.step(60)
        start = world_truth(world)
        ok, message = execute_skill(world, library.by_text("put it down"), MotionConfig())
        assert not ok and "nothing in the gripper" in message
        for text in ["pick up the red block", "go to the user", "put it down"]:
            ok, message = execute_skill(world, library.by_text(text), MotionConfig())
            assert ok, f"{text}: {message}"
        ok, message = execute_skill(world, library.by_text("pick up the blue block"), MotionConfig())
        assert not ok, "the work table is out of reach from the user station"
        final = world_truth(world)
        done = Outcome("succeeded", "")
        assert truth_holds({"at_station": ["red_block", "user"]}, final, start, SCENE, done)
        assert truth_holds({"robot_at": "user"}, final, start, SCENE, done)
        assert not truth_holds({"unchanged": True}, final, start, SCENE, done)
    finally:
        world.close()


def test_training_documents_are_tokenized_as_a_whole_and_learn_what_the_robot_writes():
    from ros_vla.saycan.corpus import CorpusGenerator, document
    from ros_vla.saycan.train_lm import build_tokenizer, encode_document

    generator = CorpusGenerator(5)
    examples = [generator.example() for _ in range(3)]
    tokenizer = build_tokenizer([document(examples, True)] * 2, vocab_size=400)
    ids, labels = encode_document(tokenizer, examples, with_explanation=True)
    assert ids[:-1] == tokenizer(document(examples, True), add_special_tokens=False)["input_ids"]
    learned = tokenizer.decode([t for t, label in zip(ids, labels) if label != -100])
    assert learned == "".join("Explanation:" + e.text(True).split("Explanation:", 1)[1] for e in examples)


def test_curriculum_families_and_colour_binding_examples():
    from ros_vla.saycan.corpus import CorpusGenerator
    from ros_vla.saycan.train_lm import binding_examples

    generator = CorpusGenerator(7)
    assert {generator.example({"single": 1.0}).family for _ in range(5)} == {"single"}
    examples, _ = binding_examples(11, 20)
    for e in examples:
        first = e.plan[1] if e.plan[0] == "go to the table" else e.plan[0]
        named = [o.split()[0] for o in e.objects if f"the {o}" in first]
        assert named and all(colour in e.instruction for colour in named), (e.instruction, first)


def test_shipped_tokenizer_has_one_token_per_colour_word():
    from transformers import AutoTokenizer

    from ros_vla.models import shipped
    from ros_vla.saycan.corpus import palette
    from ros_vla.saycan.train_lm import colour_token_ids

    tokenizer = AutoTokenizer.from_pretrained(str(shipped("saycan_lm")), local_files_only=True)
    assert len(colour_token_ids(tokenizer, palette())) == len(palette())


def test_shipped_language_model_binds_the_instructions_colours():
    """Among the scene's skills that act on objects, the shipped LM ranks the instructed block and
    bowl first. (Against done and "go to the table" it is less sure: it gives done about 0.5 for
    the stacking instructions; the affordances decide there.)"""
    from ros_vla.models import shipped
    from ros_vla.saycan.corpus import few_shot_examples

    torch.set_num_threads(1)
    library = load_skill_library(config_file("saycan_skills.yaml"), SCENE)
    lm = HFCausalLM(shipped("saycan_lm"))
    objects = [name.replace("_", " ") for name in library.objects]
    cases = {"put the red block in the green bowl": "pick up the red block and place it in the green bowl",
             "put the yellow block in the purple bowl": "pick up the yellow block and place it in the purple bowl",
             "stack the blue block on the red block": "pick up the blue block and place it on the red block",
             "bring me the yellow block": "pick up the yellow block"}
    for instruction, wanted in cases.items():
        acting = [s.text for s in library.skills if s.executor in ("pick", "pick_place")]
        scores = lm.score(few_shot_examples(False) + prompt.query(objects, instruction, []),
                          [prompt.step_option(t) for t in acting])
        assert acting[int(np.argmax(scores))] == wanted, instruction
