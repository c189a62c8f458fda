"""`ros-vla`: the project's command line.

  ros-vla launch FILE [name:=value ...]   run a ROS 2 launch XML file (like ros2 launch)
  ros-vla say "put the red block in the green bowl"   send an instruction, follow it
  ros-vla demo                           launch the sim stack, run an instruction, write a report
  ros-vla bench sim [--json]             simulation and DDS performance

Every `bench` and `eval` command takes --json and then prints one JSON object as its
last line, with figures named with their units.
"""

from __future__ import annotations

import argparse
import json
import sys

from ros_vla.paths import use_project_dds_profile


def _say(args) -> int:
    from ros_vla.nodes.stack_client import StackClient

    client = StackClient("ros_vla_say")
    try:
        if not client.wait_for_subscribers(args.wait):
            print(f"nobody is listening on /instruction after {args.wait:.0f} s: is the stack running "
                  f"(ros-vla launch sim.launch.xml)? ROS_DOMAIN_ID must match.", file=sys.stderr)
            return 2

        def show(status):
            step = f" [{status['step']}/{len(status['plan'])}]" if status.get("plan") else ""
            print(f"{status['state']:>10}{step}: {status['message']}", flush=True)

        final = client.say(args.text, timeout_s=args.timeout, on_status=show)
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
    from ros_vla.nodes.demo import run_demo

    return run_demo(instruction=args.instruction, seed=args.seed, output_root=args.output, as_json=args.json)


def _bench(args) -> int:
    if args.target == "sim":
        from ros_vla.nodes.bench_sim import run_bench_sim

        return run_bench_sim(duration_s=args.duration, as_json=args.json)
    print(f"unknown benchmark '{args.target}'", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ros-vla", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("launch", help="run a launch XML file: ros-vla launch FILE [name:=value ...] [--print]",
                   add_help=False)

    say = sub.add_parser("say", help="send an instruction to the running stack and follow it")
    say.add_argument("text")
    say.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the task to end")
    say.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the stack to be up")
    say.add_argument("--json", action="store_true", help="print the final status as JSON")

    demo = sub.add_parser("demo", help="simulated robot end to end, with a report folder")
    demo.add_argument("--instruction", default="put the red block in the green bowl")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--output", default="outputs", help="reports go to OUTPUT/demo-<time>/")
    demo.add_argument("--json", action="store_true")

    bench = sub.add_parser("bench", help="benchmarks")
    bench.add_argument("target", choices=["sim"])
    bench.add_argument("--duration", type=float, default=20.0, help="seconds of measurement")
    bench.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    use_project_dds_profile()
    if argv and argv[0] == "launch":
        return _launch(None, argv[1:])
    args = build_parser().parse_args(argv)
    return {"say": _say, "demo": _demo, "bench": _bench}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
