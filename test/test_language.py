from ros_vla.language import understand
from ros_vla.paths import config_file
from ros_vla.sim.scene import load_scene

SCENE = load_scene(config_file("scene_tabletop.yaml"))
OBJECTS = {o.name: (o.kind, o.color) for o in SCENE.objects}
STATIONS = set(SCENE.stations)


def read(text):
    return understand(text, OBJECTS, STATIONS)


def test_pick_and_place_phrasings():
    for text in ["put the red block in the green bowl", "Place the red cube into the green bowl.",
                 "please move the red block to the green container", "red block -> green bowl? put it in"]:
        reading = read(text)
        assert not reading.refusal, (text, reading.refusal)
        (call,) = reading.calls
        assert call.skill == "pick_place"
        assert call.args == {"pick": "red_block", "place": "green_bowl"}


def test_navigation():
    (call,) = read("go to the user").calls
    assert call.args == {"station": "user"}
    (call,) = read("Drive back to the table").calls
    assert call.args == {"station": "table"}
    assert "known places" in read("go to the kitchen").refusal


def test_refusals_say_why():
    assert read("").refusal == "the instruction is empty"
    assert read("   ").refusal == "the instruction is empty"
    assert "limit" in read("put " * 400).refusal
    assert "no 'magenta' object" in read("put the magenta block in the green bowl").refusal
    assert "could not find an object" in read("asdf qwerty").refusal
    assert "only pick up blocks" in read("put the green bowl in the purple bowl").refusal
    assert "into bowls" in read("put the red block on the blue block").refusal
    assert "say where" in read("pick up the red block").refusal
    assert "exactly one" in read("put the block in the green bowl").refusal


def test_non_text_is_refused():
    assert read(None).refusal == "the instruction is empty"
