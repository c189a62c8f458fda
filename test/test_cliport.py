"""CLIPort: heightmaps, tasks and their oracle, the two-stream networks, ONNX export, the
rn50 configuration on a CLIP checkpoint file, and the shipped model acting in the sim."""

import math

import numpy as np
import pytest
import torch

from ros_vla.cliport.config import WORKSPACE, CLIPortConfig
from ros_vla.cliport.data import make_sample, record_episode, rotation_bin, se2_augment, world_heightmap
from ros_vla.cliport.model import CLIPort, cross_correlate, cross_correlate_direct
from ros_vla.cliport.tasks import TASKS, Goal, goal_met, oracle_targets
from ros_vla.models import shipped
from ros_vla.paths import config_file
from ros_vla.perception.heightmap import HeightmapSpec, RgbdView, fuse_heightmap
from ros_vla.sim.goals import pose_in_frame
from ros_vla.sim.oracle import world_truth
from ros_vla.sim.scene import load_scene
from ros_vla.sim.world import SimWorld

SCENE = load_scene(config_file("scene_tabletop.yaml"))


@pytest.fixture(scope="module")
def demo_world():
    world = SimWorld(SCENE, seed=0, renderer="gl")
    world.step(60)
    yield world
    world.close()


# ----------------------------------------------------------------- heightmaps

def test_heightmap_spec_pixels_round_trip():
    spec = HeightmapSpec((0.3, 0.9), (-0.4, 0.4), (0.0, 0.3), 0.003125)
    assert spec.shape == (192, 256) and spec.rescaled(4).shape == (48, 64)
    x, y = spec.pixel_to_xy(10, 200)
    assert spec.xy_to_pixel(x, y) == (10, 200)
    with pytest.raises(ValueError):
        HeightmapSpec((1.0, 0.0), (0, 1), (0, 1), 0.01)


def test_a_flat_view_straight_down_gives_its_plane_and_colour():
    """A camera 1 m above a plane 5 cm high, looking straight down (optical z = -z)."""
    k = np.array([[200.0, 0, 79.5], [0, 200.0, 59.5], [0, 0, 1]])
    pose = np.eye(4)
    pose[:3, :3] = np.diag([1.0, -1.0, -1.0])
    pose[:3, 3] = [0.5, 0.0, 1.05]
    depth = np.full((120, 160), 1.0, np.float32)
    rgb = np.zeros((120, 160, 3), np.uint8)
    rgb[..., 0] = 200
    spec = HeightmapSpec((0.3, 0.7), (-0.2, 0.2), (0.0, 0.3), 0.01)
    colour, height = fuse_heightmap([RgbdView(rgb, depth, k, pose)], spec)
    seen = colour[..., 0] > 0
    assert seen.mean() > 0.9
    np.testing.assert_allclose(height[seen], 0.05, atol=1e-5)
    assert np.all(colour[seen] == [200, 0, 0])


def test_fusion_maxes_height_and_averages_colour():
    k = np.array([[100.0, 0, 39.5], [0, 100.0, 29.5], [0, 0, 1]])
    pose = np.eye(4)
    pose[:3, :3] = np.diag([1.0, -1.0, -1.0])
    pose[:3, 3] = [0.5, 0.0, 1.0]
    spec = HeightmapSpec((0.4, 0.6), (-0.1, 0.1), (0.0, 0.3), 0.02)
    low = RgbdView(np.full((60, 80, 3), 100, np.uint8), np.full((60, 80), 0.98, np.float32), k, pose)
    high = RgbdView(np.full((60, 80, 3), 200, np.uint8), np.full((60, 80), 0.90, np.float32), k, pose)
    colour, height = fuse_heightmap([low, high], spec)
    np.testing.assert_allclose(height, 0.10, atol=1e-5)
    assert np.all(colour == 150)
    with pytest.raises(ValueError):
        fuse_heightmap([], spec)


def test_sim_heightmap_shows_the_blocks_where_they_are(demo_world):
    colour, height = world_heightmap(demo_world)
    truth = world_truth(demo_world)
    arm_base = np.asarray(truth["arm_base_in_map"])
    assert colour.shape == (*WORKSPACE.shape, 3)
    for obj in truth["objects"]:
        xyz, _ = pose_in_frame(truth, obj["name"], arm_base)
        row, col = WORKSPACE.xy_to_pixel(*xyz[:2])
        if obj["kind"] == "block":
            assert height[row - 1:row + 2, col - 1:col + 2].max() == pytest.approx(SCENE.spawn.block_size, abs=0.004)
            expected = np.array(SCENE.colors[obj["color"]]) * 255
            assert np.abs(colour[row, col].astype(float) - expected).max() < 60, obj["name"]
    assert np.median(height) < 0.003, "most of the map is the table top"


def test_views_agree_when_fused(demo_world):
    """The side camera (map-mounted) and the head camera fused: where both see the table
    top, heights agree with the head camera alone."""
    both_colour, both = world_heightmap(demo_world, views=("camera", "side"))
    _, head = world_heightmap(demo_world, views=("camera",))
    flat = (head < 0.002) & (both < 0.002)
    assert flat.mean() > 0.7
    assert np.abs(both - head)[head > 0.03].max() < 0.01


# ----------------------------------------------------------------- tasks and the oracle

@pytest.mark.parametrize("name", ["put-block-in-bowl-seen-colors", "stack-block-pyramid-seq-seen-colors"])
def test_oracle_demonstration_solves_the_task(name):
    episode = record_episode(TASKS[name], SCENE, seed=3)
    assert bool(episode["success"]), episode["reward"]
    steps = len(episode["reward"])
    assert steps == (1 if "bowl" in name else 6)
    assert np.all(np.diff(episode["reward"]) > 0), "each step meets one more goal"
    assert episode["colour"].shape == (steps, *WORKSPACE.shape, 3)
    for t in range(steps):
        assert WORKSPACE.contains_pixel(*episode["pick_pixel"][t])


def test_seen_and_unseen_splits_name_disjoint_colours():
    for seed in range(20):
        seen = TASKS["put-block-in-bowl-seen-colors"].scene(SCENE, seed).objects[:2]
        unseen = TASKS["put-block-in-bowl-unseen-colors"].scene(SCENE, seed).objects[:2]
        assert not {o.color for o in seen} & {o.color for o in unseen}


def test_pose_goal_tolerances():
    truth = {"objects": [{"name": "red_block", "kind": "block", "color": "red", "position": [0.5, 0.0, 0.57],
                          "orientation_xyzw": [0, 0, math.sin(0.1), math.cos(0.1)], "held": False}]}
    assert goal_met(Goal("", "red_block", xyz=(0.505, 0.0, 0.57), yaw=0.2 + math.pi / 2), truth, SCENE)[0]
    assert not goal_met(Goal("", "red_block", xyz=(0.52, 0.0, 0.57), yaw=0.2), truth, SCENE)[0]
    assert not goal_met(Goal("", "red_block", xyz=(0.5, 0.0, 0.57), yaw=0.2 + math.radians(20)), truth, SCENE)[0]


def test_oracle_targets_put_blocks_side_by_side_in_one_bowl():
    world = SimWorld(TASKS["put-blocks-in-bowl-seen-colors"].scene(SCENE, 5), seed=5, renderer=None)
    try:
        world.step(30)
        truth = world_truth(world)
        goals = TASKS["put-blocks-in-bowl-seen-colors"].goals(truth, world.scene)
        places = [oracle_targets(g, truth, goals, world.scene)[2] for g in goals]
    finally:
        world.close()
    assert len(goals) >= 2
    for i in range(len(places)):
        for j in range(i):
            assert np.linalg.norm(places[i][:2] - places[j][:2]) >= SCENE.spawn.block_size


# ----------------------------------------------------------------- data

def test_augmentation_moves_labels_with_the_pixels():
    rng = np.random.default_rng(0)
    colour = np.zeros((48, 64, 3), np.uint8)
    height = np.zeros((48, 64), np.float32)
    # 3x3 patches: under nearest-neighbour resampling a lone pixel may land next to its label.
    height[19:22, 29:32] = 0.04
    colour[9:12, 49:52] = 128
    for _ in range(10):
        new_colour, new_height, (pick, place) = se2_augment(colour, height, [(20, 30), (10, 50)], rng,
                                                            math.radians(45))
        assert new_height[pick] == pytest.approx(0.04)
        assert new_colour[place].max() > 40


def test_rotation_bins():
    assert rotation_bin(0.0, 36) == 0
    assert rotation_bin(math.radians(10), 36) == 1
    assert rotation_bin(-math.radians(10), 36) == 35


# ----------------------------------------------------------------- networks

def test_fft_correlation_equals_the_direct_one():
    keys = torch.randn(2, 3, 30, 40)
    kernels = torch.randn(2, 5, 3, 8, 8)
    direct = cross_correlate_direct(keys, kernels)
    np.testing.assert_allclose(cross_correlate(keys, kernels)[..., :direct.shape[-2], :direct.shape[-1]], direct,
                               atol=1e-3)


def test_rotated_window_turns_x_towards_y():
    """A bright point 5 pixels along +x (rows) from the pick appears 5 pixels along +y
    (columns) in the window turned by +90 degrees: yaw is counter-clockwise seen from above."""
    maps = torch.zeros(1, 1, 48, 64)
    maps[0, 0, 25, 30] = 1
    windows = CLIPort.rotated_windows(maps, torch.tensor([[20, 30]]), 16, torch.tensor([0.0, math.pi / 2]))
    assert divmod(int(windows[0, 0].argmax()), 16) == (13, 8)
    assert divmod(int(windows[1, 0].argmax()), 16) == (8, 13)


@pytest.mark.parametrize("query_rotation", ["features", "input"])
def test_small_network_shapes_and_learning(query_rotation):
    torch.manual_seed(0)
    cfg = CLIPortConfig(query_rotation=query_rotation)
    model = CLIPort(cfg)
    h, w = cfg.heightmap.shape
    image, language = torch.rand(2, 6, h, w), torch.randn(2, cfg.language_dim)
    pick = torch.tensor([[10, 20], [30, 40]])
    pick_logits, place_logits = model(image, language, pick)
    assert pick_logits.shape == (2, h * w) and place_logits.shape == (2, cfg.n_rotations * h * w)
    # One sample, a few steps of Adam: both losses must fall (the heads can learn at all).
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    targets = torch.tensor([10 * w + 20]), torch.tensor([3 * h * w + 30 * w + 40])
    losses = []
    for _ in range(8):
        a, p = model(image[:1], language[:1], pick[:1])
        loss = torch.nn.functional.cross_entropy(a, targets[0]) + torch.nn.functional.cross_entropy(p, targets[1])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0


def test_onnx_export_matches_torch(tmp_path):
    from ros_vla.cliport.runtime import OnnxCLIPort, export_onnx

    torch.manual_seed(1)
    cfg = CLIPortConfig()
    model = CLIPort(cfg).eval()
    export_onnx(model, tmp_path)
    onnx = OnnxCLIPort(tmp_path, cfg)
    h, w = cfg.heightmap.shape
    image, language, pick = torch.rand(1, 6, h, w), torch.randn(1, cfg.language_dim), torch.tensor([[7, 50]])
    with torch.no_grad():
        np.testing.assert_allclose(onnx.pick_logits(image, language), model.pick_logits(image, language), atol=1e-4)
        np.testing.assert_allclose(onnx.place_logits(image, language, pick), model.place_logits(image, language, pick),
                                   atol=1e-3)


def test_rn50_loads_a_clip_checkpoint_file(tmp_path):
    """The paper's configuration: open_clip RN50 from a local file (one we write here, as
    no real CLIP weights can be had offline), frozen, feeding all three networks."""
    import open_clip

    from ros_vla.cliport.model import build_model

    torch.manual_seed(2)
    clip = open_clip.create_model("RN50")
    with torch.no_grad():
        clip.visual.conv1.weight.mul_(0).add_(0.5)
    checkpoint = tmp_path / "clip_rn50.pt"
    torch.save(clip.state_dict(), checkpoint)
    cfg = CLIPortConfig.rn50(clip_checkpoint=str(checkpoint))
    model, encoder = build_model(cfg)
    assert torch.all(model.attention.semantic.trunk.visual.conv1.weight == 0.5), "weights did not come from the file"
    assert not any(p.requires_grad for p in model.key.semantic.trunk.parameters()), "CLIP stays frozen"
    embedding = encoder.embed(["put the red block in the green bowl"])
    assert embedding.shape == (1, 1024)
    h, w = cfg.heightmap.shape
    assert (h, w) == (192, 256) and cfg.crop_size == 64
    with torch.no_grad():
        pick = model.pick_logits(torch.rand(1, 6, h, w), torch.from_numpy(embedding))
    assert pick.shape == (1, h * w) and torch.isfinite(pick).all()


def test_sample_from_a_recorded_step_is_network_ready():
    episode = record_episode(TASKS["put-block-in-bowl-seen-colors"], SCENE, seed=4)
    step = {k: episode[k][0] for k in ("colour", "height_mm", "pick_pixel", "place_pixel", "place_theta",
                                       "instructions")}
    cfg = CLIPortConfig()
    sample = make_sample(step, cfg.downsample, cfg.n_rotations)
    assert sample.image.shape == (6, *cfg.heightmap.shape) and sample.image.dtype == np.float32
    assert 0 <= sample.image.min() and sample.image.max() <= 1
    assert sample.pick == tuple(int(v) // cfg.downsample for v in step["pick_pixel"])
    # The picked block is the tallest thing near its pick pixel.
    r, c = sample.pick
    assert sample.image[3, max(r - 1, 0):r + 2, max(c - 1, 0):c + 2].max() > 0.1


# ----------------------------------------------------------------- the shipped model

SHIPPED = shipped("cliport_small")


@pytest.mark.skipif(not (SHIPPED / "cliport.pt").exists(), reason="no shipped CLIPort weights")
def test_shipped_model_grounds_the_instruction(demo_world):
    from ros_vla.cliport.agent import load_agent

    agent = load_agent(SHIPPED)
    colour, height = world_heightmap(demo_world)
    truth = world_truth(demo_world)
    arm_base = np.asarray(truth["arm_base_in_map"])
    for block, bowl in (("red", "green"), ("yellow", "purple")):
        prediction = agent.predict(colour, height, f"put the {block} block in the {bowl} bowl")
        block_xyz, block_yaw = pose_in_frame(truth, f"{block}_block", arm_base)
        bowl_xyz, _ = pose_in_frame(truth, f"{bowl}_bowl", arm_base)
        assert np.linalg.norm(prediction.pick_xyz[:2] - block_xyz[:2]) < 0.015
        assert np.linalg.norm(prediction.place_xyz[:2] - bowl_xyz[:2]) < SCENE.spawn.bowl_radius / 2
        assert abs(prediction.pick_xyz[2] - block_xyz[2]) < 0.006
        yaw_error = abs((prediction.pick_yaw - block_yaw + math.pi / 4) % (math.pi / 2) - math.pi / 4)
        assert yaw_error < math.radians(10), "the grasp faces the block's sides"
        assert prediction.confidence > 0.3


@pytest.mark.skipif(not (SHIPPED / "cliport.pt").exists(), reason="no shipped CLIPort weights")
def test_one_batch_for_many_texts_gives_what_one_inference_per_text_gives(demo_world):
    """The affordance pass: the text-independent trunk and spatial streams run once for all
    texts; every pick, place and confidence is the one a separate inference gives."""
    from ros_vla.cliport.agent import load_agent

    agent = load_agent(SHIPPED)
    colour, height = world_heightmap(demo_world)
    texts = ["put the red block in the green bowl", "pick up the blue block and place it in the purple bowl",
             "put the yellow block in the green bowl", "pick up the red block and place it in the purple bowl"]
    batched = agent.predict_many(colour, height, texts)
    for text, together in zip(texts, batched):
        alone = agent.predict(colour, height, text)
        assert together.pick_pixel == alone.pick_pixel and together.place_pixel == alone.place_pixel, text
        assert together.place_rotation_rad == alone.place_rotation_rad
        assert together.confidence == pytest.approx(alone.confidence, abs=1e-4)
        assert np.allclose(together.pick_heatmap, alone.pick_heatmap, atol=1e-6)
    assert agent.affordances(colour, height, texts) == pytest.approx([p.confidence for p in batched])
    assert agent.affordances(colour, height, []) == []


def test_roc_auc_counts_pairs_and_ties():
    from ros_vla.cliport.eval import roc_auc

    assert roc_auc(np.array([0.9, 0.8]), np.array([0.1, 0.2])) == 1.0
    assert roc_auc(np.array([0.1]), np.array([0.9])) == 0.0
    assert roc_auc(np.array([0.5, 0.5]), np.array([0.5])) == 0.5
