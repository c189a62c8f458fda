"""`ros-vla bench saycan`: time to score every skill for one planning step.

Per language-model backend and cache mode, and per library size (skill libraries generated
for made-up scenes with more objects), the median wall time of one step's scoring: the
few-shot prompt plus a two-step history, every skill text scored. Also the value
function's time for the same skills from one observation (the "Can" half of a step).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ros_vla.models import shipped
from ros_vla.paths import config_file
from ros_vla.saycan import prompt
from ros_vla.saycan.config import build_skill_library
from ros_vla.saycan.corpus import few_shot_examples

COLORS = ["red", "blue", "yellow", "green", "purple", "orange", "pink", "cyan", "white", "brown", "black", "gray"]
SCENE_SIZES = ((3, 2), (5, 3), (8, 4))  # (blocks, bowls): 19, 44 and 100 skills with the shipped skill file


def library_for(blocks: int, bowls: int):
    objects = [(f"{c}_block", "block") for c in COLORS[:blocks]]
    objects += [(f"{c}_bowl", "bowl") for c in COLORS[blocks:blocks + bowls]]
    return build_skill_library(config_file("saycan_skills.yaml"), objects, ["table", "user"])


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def run_bench(lm_dir: str, value_dir: str, openai: str, repeats: int, threads: int) -> list[dict]:
    import torch

    from ros_vla.saycan.llm import HFCausalLM, OpenAICompatibleLM

    torch.set_num_threads(threads)
    backends = {"hf kv-cache batched": HFCausalLM(lm_dir, use_cache=True),
                "hf no-cache batched": HFCausalLM(lm_dir, use_cache=False),
                "hf kv-cache one by one": HFCausalLM(lm_dir, use_cache=True, batch_size=1)}
    if openai:
        url, _, model = openai.partition("#")
        backends[f"openai {model}"] = OpenAICompatibleLM(url, model)
    value_function = None
    if value_dir:
        from ros_vla.saycan.value_model import IMAGE_SIZE, VIEWS, ValueFunction

        value_function = ValueFunction(value_dir)
        observation = np.zeros((len(VIEWS), IMAGE_SIZE[1], IMAGE_SIZE[0], 3), np.uint8)
    rows = []
    for blocks, bowls in SCENE_SIZES:
        library = library_for(blocks, bowls)
        objects = [o.replace("_", " ") for o in library.objects]
        history = library.texts[:2]
        text = few_shot_examples(False) + prompt.query(objects, "put all the blocks in the bowl", history)
        options = [prompt.step_option(t) for t in library.texts]
        for name, lm in backends.items():
            rows.append({"backend": name, "skills": len(options),
                         "step_ms": 1000 * median_time(lambda: lm.score(text, options), repeats)})
        if value_function is not None:
            value_function.embed(library.texts)
            rows.append({"backend": "value function (affordances)", "skills": len(options),
                         "step_ms": 1000 * median_time(lambda: value_function.predict(observation, library.texts),
                                                       repeats)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ros-vla bench saycan", description=__doc__)
    parser.add_argument("--lm", default=str(shipped("saycan_lm")))
    parser.add_argument("--value-function", default=str(shipped("saycan_value")),
                        help="'' to skip the value function")
    parser.add_argument("--openai", default="", help="also time an OpenAI-compatible server: BASE_URL#MODEL")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = run_bench(args.lm, args.value_function, args.openai, args.repeats, args.threads)
    print(f"SayCan scoring time for one planning step (median of {args.repeats}, {args.threads} CPU thread(s))")
    print(f"{'backend':<32}{'skills':>8}{'ms / step':>12}")
    for row in rows:
        print(f"{row['backend']:<32}{row['skills']:>8}{row['step_ms']:>12.1f}")
    if args.json:
        print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
