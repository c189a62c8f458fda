"""RT-1 action tokenizer: round trips within half a bin, clipping, and no NaN ever becoming
a command."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ros_vla.rt1.config import MODES, RT1Config
from ros_vla.rt1.tokenizer import ActionTokenizer

CONFIG = RT1Config.paper()
TOKENIZER = ActionTokenizer(CONFIG.action_dimensions, CONFIG.action_bins)
DIMS = CONFIG.action_dimensions
MODE = TOKENIZER.names.index("mode")


def in_range_action():
    """Any action whose every dimension is inside its range (mode: one of the categories)."""
    return st.tuples(*(st.integers(0, len(d.categories) - 1).map(float) if d.categorical
                       else st.floats(d.low, d.high) for d in DIMS)).map(np.array)


def test_action_space_is_rt1s():
    assert TOKENIZER.names == ("mode", "arm_x", "arm_y", "arm_z", "arm_roll", "arm_pitch", "arm_yaw",
                               "gripper_opening", "base_x", "base_y", "base_yaw")
    assert CONFIG.action_bins == 256 and RT1Config.small().action_dimensions == DIMS
    assert TOKENIZER.valid_tokens[MODE] == 3 and MODES == ("arm", "base", "terminate")


@settings(max_examples=300, deadline=None)
@given(in_range_action())
def test_round_trip_within_half_a_bin(action):
    tokens = TOKENIZER.tokenize(action)
    assert tokens.dtype == np.int64 and ((tokens >= 0) & (tokens < 256)).all()
    back = TOKENIZER.detokenize(tokens)
    assert (np.abs(back - action) <= TOKENIZER.bin_width() / 2 * (1 + 1e-9)).all()
    assert back[MODE] == action[MODE]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=False), min_size=10, max_size=10))
def test_out_of_range_values_clip(continuous):
    action = np.array([0.0, *continuous])
    back = TOKENIZER.detokenize(TOKENIZER.tokenize(action))
    low = np.array([d.low for d in DIMS]) + TOKENIZER.bin_width() / 2
    high = np.array([d.high for d in DIMS]) - TOKENIZER.bin_width() / 2
    assert np.isfinite(back).all()
    assert (back[1:] >= low[1:] - 1e-12).all() and (back[1:] <= high[1:] + 1e-12).all()


def test_values_past_the_ends_land_in_the_end_bins():
    too_high = np.array([0.0] + [d.high + 10 for d in DIMS[1:]])
    too_low = np.array([0.0] + [d.low - 10 for d in DIMS[1:]])
    assert (TOKENIZER.tokenize(too_high)[1:] == 255).all()
    assert (TOKENIZER.tokenize(too_low)[1:] == 0).all()
    infinite = np.array([0.0] + [np.inf] * 10)
    assert (TOKENIZER.tokenize(infinite)[1:] == 255).all() and (TOKENIZER.tokenize(-infinite)[1:] == 0).all()


@pytest.mark.parametrize("dimension", range(11))
def test_nan_is_refused(dimension):
    action = np.zeros((4, 11))
    action[2, dimension] = np.nan
    with pytest.raises(ValueError, match=f"NaN in {DIMS[dimension].name}"):
        TOKENIZER.tokenize(action)


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.int64, (3, 11), elements=st.integers(0, 255)))
def test_every_token_id_in_range_decodes_to_a_finite_in_range_action(tokens):
    action = TOKENIZER.detokenize(tokens)
    assert np.isfinite(action).all()
    for index, dim in enumerate(DIMS):
        assert (action[:, index] >= dim.low).all() and (action[:, index] <= dim.high).all()
    assert set(action[:, MODE]) <= {0.0, 1.0, 2.0}


def test_mode_is_categorical():
    action = np.zeros(11)
    for index in range(len(MODES)):
        action[MODE] = index
        assert TOKENIZER.tokenize(action)[MODE] == index
    for bad in (1.5, 3.0, -1.0, np.inf):
        action[MODE] = bad
        with pytest.raises(ValueError, match="mode"):
            TOKENIZER.tokenize(action)
    # A mode token that names no category reads as the last one, terminate: the safe choice.
    tokens = np.zeros(11, np.int64)
    tokens[MODE] = 200
    assert MODES[int(TOKENIZER.detokenize(tokens)[MODE])] == "terminate"


@pytest.mark.parametrize("bad", [-1, 256, 10**6])
def test_out_of_range_token_ids_raise(bad):
    tokens = np.zeros(11, np.int64)
    tokens[4] = bad
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        TOKENIZER.detokenize(tokens)


def test_malformed_inputs_raise():
    with pytest.raises(ValueError, match="integers"):
        TOKENIZER.detokenize(np.zeros(11))
    with pytest.raises(ValueError, match="11 action dimensions"):
        TOKENIZER.tokenize(np.zeros(10))
    with pytest.raises(ValueError, match="11 action dimensions"):
        TOKENIZER.detokenize(np.int64(3))


def test_greedy_tokens_pick_only_meaningful_ids_and_refuse_nan():
    logits = np.random.default_rng(0).standard_normal((2, 11, 256))
    logits[:, MODE, 100] = 50.0  # the largest logit, but not a mode
    logits[:, 3, 17] = 50.0
    tokens = TOKENIZER.greedy_tokens(logits)
    assert tokens.shape == (2, 11)
    assert (tokens[:, MODE] < 3).all() and (tokens[:, 3] == 17).all()
    assert (tokens[:, MODE] == logits[:, MODE, :3].argmax(-1)).all()
    logits[1, 5, 9] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        TOKENIZER.greedy_tokens(logits)
