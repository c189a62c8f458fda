"""RT-1 network, token cache and runtimes. Most tests use RT1Config.small(); one builds the
paper-size network to check its size and that FiLM starts as the identity."""

import hashlib
import re

import numpy as np
import pytest
import torch

from ros_vla.cli import build_parser
from ros_vla.rt1.bench import measure_row
from ros_vla.rt1.config import RT1Config
from ros_vla.rt1.model import (
    FiLM,
    attention_mask,
    build_rt1,
    parameter_breakdown,
)
from ros_vla.rt1.runtime import (
    OnnxModel,
    OnnxRuntimeBackend,
    RT1Policy,
    TensorRTBackend,
    TorchBackend,
    build_tensorrt_engine,
    export_onnx,
    tensorrt_unavailable_reason,
)
from ros_vla.text_encoder import InstructionEncoder, MiniLMInstructionEncoder

SMALL = RT1Config.small()
STEPS = 9  # more than the 6-frame window, so it fills and then rolls


class HashInstructionEncoder:
    """A stand-in sentence encoder: unit vectors derived from the text's hash."""

    dim = 384

    def embed(self, instructions: list[str]) -> np.ndarray:
        seeds = [int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) for text in instructions]
        vectors = np.stack([np.random.default_rng(seed).standard_normal(self.dim) for seed in seeds])
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module", autouse=True)
def one_compute_thread():
    """These tests check numbers, not speed; a 2-thread pool slows to a crawl whenever other
    processes share the machine's 2 cores, one thread does not."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small_model():
    model = build_rt1(SMALL)
    # Non-zero FiLM, so that the instruction actually changes what the frame encoder computes.
    with torch.no_grad():
        for film in model.modules():
            if isinstance(film, FiLM):
                film.gamma.weight.normal_(0, 0.05)
                film.beta.weight.normal_(0, 0.05)
    return model


@pytest.fixture(scope="module")
def small_onnx(small_model, tmp_path_factory):
    return export_onnx(small_model, tmp_path_factory.mktemp("rt1_onnx"))


@pytest.fixture(scope="module")
def episode():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (STEPS, SMALL.image_size, SMALL.image_size, 3), dtype=np.uint8)
    embedding = HashInstructionEncoder().embed(["put the red block in the green bowl"])[0]
    return frames, embedding


def padded_clip(frames, step):
    """The 6 frames the policy sees at `step`: the first frame fills slots before the episode."""
    history = list(frames[max(0, step - 5):step + 1])
    return np.stack([frames[0]] * (6 - len(history)) + history)


def test_paper_size_and_film_is_identity_at_init():
    config = RT1Config.paper()
    model = build_rt1(config)
    parts = parameter_breakdown(model)
    assert 30e6 <= parts["total"] <= 40e6, parts
    films = model.frame_encoder.film_efficientnet.block_films
    assert len(films) == 26  # one per EfficientNet-B3 block; the FiLM after the 1x1 conv is output_film
    assert config.context_tokens == 48 and config.num_action_dimensions == 11
    image = torch.rand(1, 3, config.image_size, config.image_size)
    with torch.inference_mode():
        unconditioned = model.frame_encoder(image, torch.zeros(1, 384))
        conditioned = model.frame_encoder(image, torch.randn(1, 384))
    assert unconditioned.shape == (1, 8, 512)
    assert torch.equal(unconditioned, conditioned)


def test_film_conditions_the_frame_tokens(small_model):
    image = torch.rand(1, 3, SMALL.image_size, SMALL.image_size)
    with torch.inference_mode():
        a = small_model.frame_encoder(image, torch.randn(1, 384))
        b = small_model.frame_encoder(image, torch.randn(1, 384))
    assert a.shape == (1, SMALL.tokens_per_frame, SMALL.image_token_dim)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("config", [RT1Config.paper(), SMALL], ids=["paper", "small"])
def test_feature_map_has_the_configured_size_and_positions(config):
    backbone = build_rt1(config).frame_encoder.film_efficientnet
    with torch.inference_mode():
        features = backbone(torch.rand(1, 3, config.image_size, config.image_size), torch.zeros(1, 384))
    side = {"efficientnet_b3": 10, "tinynet_e": 6}[config.backbone]  # 300 px / 32, 96 px / 16
    assert config.feature_map_size == side and features.shape == (1, config.image_token_dim, side, side)
    assert (backbone.positions is not None) == config.feature_positions
    if config.feature_positions:
        assert backbone.positions.shape == features.shape


def test_attention_is_causal_over_frames_and_queries_see_everything():
    mask = attention_mask(SMALL)
    assert mask.shape == (48 + 11, 48 + 11)
    for query in range(48):
        for key in range(48):
            assert mask[query, key] == (key // 8 <= query // 8)
    assert not mask[:48, 48:].any()
    assert mask[48:].all()


def test_decoder_frame_tokens_ignore_later_frames(small_model):
    """Changing the newest frame's tokens leaves the older frames' states alone, but the
    action queries (which read every frame) change."""
    decoder = small_model.action_decoder
    states = {}
    hooks = [decoder.layers[-1].register_forward_hook(lambda m, i, out: states.setdefault(len(states), out))]
    tokens = torch.randn(1, 48, SMALL.image_token_dim)
    changed = tokens.clone()
    changed[:, 40:] += 1.0
    with torch.inference_mode():
        logits = decoder(tokens)
        changed_logits = decoder(changed)
    hooks[0].remove()
    torch.testing.assert_close(states[0][:, :40], states[1][:, :40])
    assert not torch.allclose(logits, changed_logits)


def test_token_cache_equals_uncached_forward(small_model, episode):
    frames, embedding = episode
    backend = TorchBackend(small_model)
    cached, uncached = RT1Policy(backend, SMALL, cache_tokens=True), RT1Policy(backend, SMALL, cache_tokens=False)
    for step in range(STEPS):
        logits = cached.step_logits(frames[step], embedding)
        np.testing.assert_allclose(logits, uncached.step_logits(frames[step], embedding), atol=1e-5, rtol=0)
        full = cached.forward_clip(padded_clip(frames, step), embedding)
        np.testing.assert_allclose(logits, full, atol=1e-5, rtol=0)
        clip = torch.from_numpy(np.stack([f.transpose(2, 0, 1) for f in padded_clip(frames, step)]) / np.float32(255))
        with torch.inference_mode():
            module = small_model(clip[None], torch.from_numpy(embedding)[None])[0].numpy()
        np.testing.assert_allclose(logits, module, atol=1e-5, rtol=0)
        assert (logits.argmax(-1) == full.argmax(-1)).all()


def test_new_instruction_starts_a_new_window(small_model, episode):
    frames, embedding = episode
    other = HashInstructionEncoder().embed(["go to the user"])[0]
    policy = RT1Policy(TorchBackend(small_model), SMALL)
    for step in range(4):
        policy.step(frames[step], embedding)
    fresh = RT1Policy(TorchBackend(small_model), SMALL)
    np.testing.assert_allclose(policy.step_logits(frames[4], other), fresh.step_logits(frames[4], other), atol=1e-6)
    policy.reset()
    np.testing.assert_allclose(policy.step_logits(frames[0], embedding),
                               fresh.forward_clip(padded_clip(frames, 0), embedding), atol=1e-5)


def test_step_checks_its_inputs_and_resizes(small_model, episode):
    frames, embedding = episode
    policy = RT1Policy(TorchBackend(small_model), SMALL)
    with pytest.raises(ValueError, match="instruction embedding"):
        policy.step(frames[0], np.full(384, np.nan, np.float32))
    with pytest.raises(ValueError, match="instruction embedding"):
        policy.step(frames[0], embedding[:100])
    with pytest.raises(ValueError, match="rgb8"):
        policy.step(frames[0].astype(np.float32), embedding)
    camera_frame = np.random.default_rng(2).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    tokens = policy.step(camera_frame, embedding)
    assert tokens.shape == (11,) and tokens.dtype == np.int64
    assert np.isfinite(policy.tokenizer.detokenize(tokens)).all()


def test_onnx_runtime_matches_torch(small_model, small_onnx, episode):
    frames, embedding = episode
    torch_policy = RT1Policy(TorchBackend(small_model), SMALL)
    ort_backend = OnnxRuntimeBackend(OnnxModel.in_directory(small_onnx.frame_encoder.parent), threads=1)
    assert "CPUExecutionProvider" in ort_backend.providers
    ort_cached, ort_uncached = RT1Policy(ort_backend, SMALL), RT1Policy(ort_backend, SMALL, cache_tokens=False)
    for step in range(STEPS):
        expected = torch_policy.step_logits(frames[step], embedding)
        logits = ort_cached.step_logits(frames[step], embedding)
        np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(ort_uncached.step_logits(frames[step], embedding), logits, atol=1e-5, rtol=0)
        tokenizer = torch_policy.tokenizer
        assert (tokenizer.greedy_tokens(logits) == tokenizer.greedy_tokens(expected)).all()


def test_int8_action_decoder_keeps_the_shipped_policys_tokens():
    """The int8 decoder (onnxruntime-int8) against the float one, on the shipped policy: it
    is a quantised variant, so the figure is an agreement rate, measured, not equality."""
    from ros_vla.models import shipped
    from ros_vla.rt1.runtime import load_policy, quantize_action_decoder

    folder = shipped("rt1_small")
    exact, int8 = load_policy(folder, "onnxruntime"), load_policy(folder, "onnxruntime-int8")
    assert int8.backend.name.endswith("int8")
    # Int8 weights, not the float graph again: a quarter of its bytes, about.
    graphs = OnnxModel.in_directory(folder)
    assert quantize_action_decoder(graphs).stat().st_size < 0.5 * graphs.action_decoder.stat().st_size
    rng = np.random.default_rng(3)
    embedding = MiniLMInstructionEncoder().embed(["pick up the red block"])[0]
    base = rng.integers(0, 256, (int8.config.image_size, int8.config.image_size, 3), dtype=np.uint8)
    same = total = 0
    for _ in range(12):  # a scene that changes a little from frame to frame
        frame = np.clip(base.astype(int) + rng.integers(-8, 9, base.shape), 0, 255).astype(np.uint8)
        a, b = exact.step(frame, embedding), int8.step(frame, embedding)
        same, total = same + int((a == b).sum()), total + a.size
    assert same / total >= 0.9, f"{same}/{total} tokens agree"


def test_onnx_model_needs_both_graphs(tmp_path):
    with pytest.raises(FileNotFoundError, match="rt1_frame_encoder.onnx"):
        OnnxModel.in_directory(tmp_path)


def test_tensorrt_runs_or_says_why_not(small_onnx, tmp_path, episode):
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        with pytest.raises(RuntimeError, match=re.escape(reason)):
            build_tensorrt_engine(small_onnx.frame_encoder, tmp_path / "frame_encoder.engine")
        with pytest.raises(RuntimeError, match=re.escape(reason)):
            TensorRTBackend(tmp_path / "a.engine", tmp_path / "b.engine")
        pytest.skip(f"TensorRT not run: {reason}")
    engines = [build_tensorrt_engine(path, tmp_path / f"{path.stem}.engine")
               for path in (small_onnx.frame_encoder, small_onnx.action_decoder)]
    frames, embedding = episode
    trt_policy = RT1Policy(TensorRTBackend(*engines), SMALL)
    ort_policy = RT1Policy(OnnxRuntimeBackend(small_onnx, threads=1, providers=["CPUExecutionProvider"]), SMALL)
    for step in range(STEPS):
        # FP16 inside the engine: logits agree to half precision only.
        np.testing.assert_allclose(trt_policy.step_logits(frames[step], embedding),
                                   ort_policy.step_logits(frames[step], embedding), atol=5e-2, rtol=5e-2)


def test_instruction_encoder_is_pluggable(small_model, episode):
    frames, _ = episode
    encoder: InstructionEncoder = HashInstructionEncoder()
    embeddings = encoder.embed(["pick up the can", "go to the table"])
    assert embeddings.shape == (2, encoder.dim) and embeddings.dtype == np.float32
    policy = RT1Policy(TorchBackend(small_model), SMALL)
    first = policy.step_logits(frames[0], embeddings[0])
    assert not np.allclose(first, policy.step_logits(frames[0], embeddings[1]))


def test_minilm_sentence_encoder_loads_offline():
    encoder = MiniLMInstructionEncoder()
    embeddings = encoder.embed(["put the red block in the green bowl", "place the red cube into the green bowl",
                                "drive the base to the user"])
    assert embeddings.shape == (3, 384) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2


def test_bench_row_reports_figures_with_units(small_onnx):
    row = measure_row("onnxruntime", True, "small", str(small_onnx.frame_encoder.parent), seconds=0.1)
    assert row["steps"] >= 20 and row["token_cache"] is True
    assert 0 < row["latency_ms_median"] <= row["latency_ms_p99"]
    assert row["rate_hz"] > 0 and row["memory_mb"] > 0 and len(row["first_tokens"]) == 8
    args = build_parser().parse_args(["bench", "rt1", "--json", "--config", "small"])
    assert (args.target, args.config, args.json) == ("rt1", "small", True)
