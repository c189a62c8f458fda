"""`ros-vla`: the project's command line.

  ros-vla launch FILE [name:=value ...]   run a ROS 2 launch XML file (like ros2 launch)
  ros-vla say "put the red block in the green bowl"   send an instruction, follow it
  ros-vla demo                           launch the sim stack, run an instruction, write a report
  ros-vla calibrate --sim | --images DIR hand-eye calibration of the cameras
  ros-vla record [-o FILE] [--topics ...]  record the robot's topics to a rosbag2 MCAP file
  ros-vla replay FILE [--rate R] [--loop]  republish a recording with its timing (and /clock)
  ros-vla bench sim [--json]             simulation and DDS performance
  ros-vla bench rt1 [--json] [--config paper|small]   RT-1 control-step latency per backend
  ros-vla bench fuzz [--inputs N] [--json]   bad inputs on every topic; what reaches the controllers
  ros-vla bench faults [--json]          kill planner, CLIPort, arm_motion, a camera mid-task; recovery
  ros-vla bench soak [--minutes 10]      the sim stack under an instruction stream: memory, drops, misses
  ros-vla eval oracle [--episodes N] [--json]   ground-truth pick-and-place baseline, headless
  ros-vla demos rt1 --task pick|push -n N --out DIR [--distractors K]   scripted (oracle) RT-1 demonstrations in sim
  ros-vla train rt1 --data DIR[,DIR] --out DIR   train RT-1 (small config on CPU; resumable)
  ros-vla eval rt1 [--model DIR] [--task T] [--distractors K] [--json]   RT-1 closed loop in sim
  ros-vla demos cliport TASK -n N [--out DIR]        oracle pick-and-place demonstrations (heightmaps)
  ros-vla train cliport --tasks T --demos N --out DIR   train CLIPort (resumable)
  ros-vla eval cliport --task T --episodes N [--model DIR] [--json]   closed loop in sim
  ros-vla bench cliport [--json]         CLIPort pick+place latency, torch vs ONNX Runtime
  ros-vla demos miavlm --out DIR --scenes N   render the multiview attribute benchmark
  ros-vla train miavlm --data F --out F  train the MIAVLM attribute checker
  ros-vla eval miavlm [--json]           HoOA on the held-out benchmark scenes (shipped weights)
  ros-vla bench miavlm [--json]          attribute checker latency for 1..9 views
  ros-vla train saycan-lm --out DIR      SayCan's small causal LM on the generated plan corpus
  ros-vla demos saycan-value --out F     skill outcomes in sim for the value function; train saycan-value
  ros-vla eval saycan [--ablations]      plan / execution success per instruction family (suite in config/)
  ros-vla bench saycan [--json]          time to score every skill for one planning step

Every `bench` and `eval` command takes --json and then prints one JSON object as its
last line, with figures named with their units.
"""

from __future__ import annotations

import argparse
import json
import sys

from ros_vla.paths import use_project_dds_profile


def _say(args) -> int:
    from ros_vla.tools.stack_client import StackClient

    client = StackClient("ros_vla_say")
    try:
        if not client.wait_for_subscribers(args.wait):
            print(f"nobody is listening on /instruction after {args.wait:.0f} s: is the stack running "
                  f"(ros-vla launch sim.launch.xml)? ROS_DOMAIN_ID must match.", file=sys.stderr)
            return 2

        def show(status):
            step = f" [{status['step']}/{len(status['plan'])}]" if status.get("plan") else ""
            print(f"{status['state']:>10}{step}: {status['message']}", flush=True)

        try:
            final = client.say(args.text, timeout_s=args.timeout, on_status=show)
        except KeyboardInterrupt:  # Ctrl-C stops the task, not only this command
            answer = client.cancel_task()
            print(answer.message if answer is not None else "no planner answered /cancel_task", file=sys.stderr)
            return 130
        if final is None:
            print(f"no final status within {args.timeout:.0f} s", file=sys.stderr)
            return 3
        if args.json:
            print(json.dumps(final))
        return 0 if final["state"] == "succeeded" else 1
    finally:
        client.close()


def _launch(args, rest) -> int:
    from ros_vla.launcher import launch_main

    return launch_main(rest)


def _demo(args) -> int:
    from ros_vla.tools.demo import run_demo

    return run_demo(instruction=args.instruction, seed=args.seed, output_root=args.output, as_json=args.json,
                    planner=args.planner)


def _bench(args) -> int:
    if args.target == "sim":
        from ros_vla.tools.bench_sim import run_bench_sim

        return run_bench_sim(duration_s=args.duration or 20.0, as_json=args.json)
    if args.target == "rt1":
        from ros_vla.rt1.bench import run_bench_rt1

        return run_bench_rt1(config_name=args.config, seconds_per_row=args.duration or 8.0, as_json=args.json)
    print(f"unknown benchmark '{args.target}'", file=sys.stderr)
    return 2


def _methods(args) -> int:
    verbs = sorted({f"{verb} {method}" for verb, method in METHOD_COMMANDS})
    print(f"ros-vla {args.command}: name a method; one of: {', '.join(verbs)}", file=sys.stderr)
    return 2


def _eval(args) -> int:
    from ros_vla.paths import config_file
    from ros_vla.sim.oracle import eval_main
    from ros_vla.sim.scene import load_scene

    return eval_main(args.episodes, args.first_seed, args.json, load_scene(config_file("scene_tabletop.yaml")))


# `ros-vla VERB METHOD ...` handed whole to the method's own argparse entry point.
METHOD_COMMANDS = {
    ("demos", "cliport"): "ros_vla.cliport.data:demos_main",
    ("train", "cliport"): "ros_vla.cliport.train:main",
    ("eval", "cliport"): "ros_vla.cliport.eval:main",
    ("bench", "cliport"): "ros_vla.cliport.bench:main",
    ("demos", "miavlm"): "ros_vla.miavlm.data:main",
    ("train", "miavlm"): "ros_vla.miavlm.train:main",
    ("eval", "miavlm"): "ros_vla.miavlm.eval:main",
    ("bench", "miavlm"): "ros_vla.miavlm.bench:main",
    ("demos", "rt1"): "ros_vla.rt1.demos:demos_main",
    ("train", "rt1"): "ros_vla.rt1.train:main",
    ("eval", "rt1"): "ros_vla.rt1.eval:main",
    ("eval", "saycan"): "ros_vla.saycan.eval:main",
    ("bench", "saycan"): "ros_vla.saycan.bench:main",
    ("bench", "fuzz"): "ros_vla.tools.bench_fuzz:main",
    ("bench", "faults"): "ros_vla.tools.bench_faults:main",
    ("bench", "soak"): "ros_vla.tools.bench_soak:main",
    ("train", "saycan-lm"): "ros_vla.saycan.train_lm:main",
    ("train", "saycan-value"): "ros_vla.saycan.train_value:main",
    ("demos", "saycan-value"): "ros_vla.saycan.value_data:main",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ros-vla", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("launch", help="run a launch XML file: ros-vla launch FILE [name:=value ...] [--print]",
                   add_help=False)
    sub.add_parser("calibrate", help="hand-eye calibration of the cameras (--sim or --images)", add_help=False)
    sub.add_parser("record", help="record topics to a rosbag2-compatible MCAP file", add_help=False)
    sub.add_parser("replay", help="replay an MCAP recording with its timing and /clock", add_help=False)
    sub.add_parser("train", help="train a model: ros-vla train cliport --help", add_help=False)

    say = sub.add_parser("say", help="send an instruction to the running stack and follow it")
    say.add_argument("text")
    say.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the task to end")
    say.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the stack to be up")
    say.add_argument("--json", action="store_true", help="print the final status as JSON")

    demo = sub.add_parser("demo", help="simulated robot end to end, with a report folder")
    demo.add_argument("--instruction",
                      default="put the red block in the green bowl and the blue block in the purple bowl")
    demo.add_argument("--planner", choices=["saycan", "rules"], default="saycan",
                      help="who plans: SayCan (LM x affordance) or the rule-based reader")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--output", default="outputs", help="reports go to OUTPUT/demo-<time>/")
    demo.add_argument("--json", action="store_true")

    bench = sub.add_parser("bench", help="benchmarks")
    bench.add_argument("target", choices=["sim", "rt1", "cliport", "miavlm", "saycan"],
                       help="cliport, miavlm: see ros-vla bench METHOD --help")
    bench.add_argument("--duration", type=float, default=None,
                       help="seconds of measurement (sim: in all, default 20; rt1: per backend and cache mode, "
                            "default 8)")
    bench.add_argument("--config", choices=["paper", "small"], default="paper", help="rt1: network size")
    bench.add_argument("--json", action="store_true")
    evaluate = sub.add_parser("eval", help="evaluations in simulation")
    evaluate.add_argument("target", choices=["oracle", "cliport", "miavlm", "saycan"],
                          help="oracle: the ground-truth pick-and-place skill, the baseline for learned ones; "
                               "cliport, miavlm: see ros-vla eval METHOD --help")
    evaluate.add_argument("--episodes", type=int, default=20)
    evaluate.add_argument("--first-seed", type=int, default=1000, help="scenes use seeds from here on")
    evaluate.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    use_project_dds_profile()
    if argv and argv[0] == "launch":
        return _launch(None, argv[1:])
    if argv and argv[0] in ("record", "replay"):
        from ros_vla.tools.bag import record_main, replay_main

        return {"record": record_main, "replay": replay_main}[argv[0]](argv[1:])
    if argv and argv[0] == "calibrate":
        from ros_vla.calibrate import calibrate_main

        return calibrate_main(argv[1:])
    if len(argv) >= 2 and (argv[0], argv[1]) in METHOD_COMMANDS:
        import importlib

        module, function = METHOD_COMMANDS[(argv[0], argv[1])].split(":")
        return getattr(importlib.import_module(module), function)(argv[2:])
    args = build_parser().parse_args(argv)
    return {"say": _say, "demo": _demo, "bench": _bench, "eval": _eval, "train": _methods}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
