"""`ros-vla calibrate`: hand-eye calibration of the robot's cameras.

  ros-vla calibrate --sim [--camera camera|side|wrist|all] [--poses N] [--output calibration/]
      The simulated robot poses a ChArUco board for each camera (held by the gripper for
      the head and side cameras, on the table for the wrist camera), calibrates from the
      images and the measured joint positions, compares the result with the camera mount in
      the scene file, and writes calibration/sim_<camera>.yaml. Exits 1 if a camera misses
      the accuracy bound (5 mm, 0.5 deg).

  ros-vla calibrate --images DIR --intrinsics K.yaml [--poses-file F] [--output calibration/]
      The same solver on views recorded on the robot: images in DIR and the gripper pose or
      joint positions at each (DIR/poses.yaml unless --poses-file; the format is in
      ros_vla/perception/calibration.py, read_dataset). K.yaml: a calibration file of ours or
      `ros2 topic echo --once /camera/camera/color/camera_info > K.yaml`. Writes
      calibration/<camera>.yaml. (Capturing live from ROS topics is not there yet: record
      the images and joint states, or use --sim --save-dataset to see the layout.)
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from ros_vla.paths import config_file
from ros_vla.perception.calibration import (
    EYE_TO_HAND,
    CalibrationError,
    CameraCalibration,
    Dataset,
    HandEyeResult,
    Intrinsics,
    calibrate_dataset,
    pose_difference,
    read_dataset,
    read_intrinsics,
    write_calibration,
    write_dataset,
)
from ros_vla.robot.kinematics import link_frames, xyz_rpy_from_pose
from ros_vla.sim.scene import CameraSpec, SceneConfig, load_scene

# The bound on the calibrated mount against the simulator's.
MAX_TRANSLATION_ERROR_M = 0.005
MAX_ROTATION_ERROR_RAD = math.radians(0.5)
GRIPPER_FRAME = "fr3_hand"


@dataclass
class SimCalibration:
    dataset: Dataset
    joint_positions: list[np.ndarray]
    arm_mount: np.ndarray  # fr3_link0 in the dataset's base frame
    intrinsics: Intrinsics
    result: HandEyeResult
    true_pose: np.ndarray  # the scene file's mount: simulator ground truth

    @property
    def error(self) -> tuple[float, float]:
        return pose_difference(self.result.camera_pose, self.true_pose)

    @property
    def within_bound(self) -> bool:
        translation, rotation = self.error
        return translation <= MAX_TRANSLATION_ERROR_M and rotation <= MAX_ROTATION_ERROR_RAD


def calibrate_sim_camera(scene: SceneConfig, cam: CameraSpec, views: int, seed: int = 0, supersampling: int = 2,
                         progress: Callable[[], None] | None = None) -> SimCalibration:
    """Capture `views` views in simulation and calibrate `cam` from them."""
    # Imported here: --images on the robot needs neither PyBullet nor the simulated world.
    from ros_vla.sim.calibration_scene import CalibrationSim, arm_mount_in, setup_for

    setup = setup_for(cam)
    # Gripper poses are expressed where the camera (eye-to-hand) or the board (eye-in-hand) is fixed.
    base_frame = cam.parent if setup == EYE_TO_HAND else "fr3_link0"
    sim = CalibrationSim(scene, cam, seed=seed, supersampling=supersampling)
    try:
        captured = sim.capture(views, progress)
        board = sim.board
    finally:
        sim.close()
    # As on the robot: the gripper pose is forward kinematics of the measured joints, put in
    # the base frame by the static arm mount and, for map, the odometry. The base stays still.
    arm_mount = arm_mount_in(base_frame, scene, captured[0].base_pose)
    joints = [v.joint_positions for v in captured]
    dataset = Dataset(setup, cam.namespace, cam.color_frame, base_frame, GRIPPER_FRAME, board,
                      [v.image for v in captured], [f"view_{i:03d}.png" for i in range(len(captured))],
                      [arm_mount_in(base_frame, scene, v.base_pose) @ link_frames(v.joint_positions)[GRIPPER_FRAME]
                       for v in captured])
    intrinsics = Intrinsics(cam.intrinsics, np.zeros(5), cam.width, cam.height)
    result = calibrate_dataset(dataset, intrinsics)
    return SimCalibration(dataset, joints, arm_mount, intrinsics, result, cam.mount_pose())


def _calibration_record(dataset: Dataset, intrinsics: Intrinsics, result: HandEyeResult, source: str,
                        extra: dict | None = None) -> CameraCalibration:
    info = {
        "setup": result.setup, "source": source, "board": dataset.board.to_dict(),
        "gripper_frame": dataset.gripper_frame, "base_frame": dataset.base_frame,
        "views_used": len(result.views_used), "views_total": len(dataset.images),
        "reprojection_rms_px": round(result.reprojection_rms_px, 4),
        "view_rms_px": {dataset.image_names[i]: round(rms, 4) for i, rms in zip(result.views_used, result.view_rms_px)},
        **(extra or {}),
        "notes": result.notes,
    }
    return CameraCalibration(dataset.camera, dataset.camera_frame, intrinsics, dataset.camera_parent_frame,
                             result.camera_pose, info)


def _table(rows: list[dict]) -> str:
    header = ["camera", "setup", "parent", "views", "reproj px", "x y z (m)", "roll pitch yaw (deg)",
              "err mm", "err deg"]
    lines = [[r["camera"], r["setup"], r["parent"], r["views"], r["reproj"], r["xyz"], r["rpy"],
              r.get("err_mm", "-"), r.get("err_deg", "-")] for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*map(str, line)) for line in [header, *lines])


def _row(dataset: Dataset, result: HandEyeResult) -> dict:
    xyz, rpy = xyz_rpy_from_pose(result.camera_pose)
    return {"camera": dataset.camera, "setup": result.setup, "parent": dataset.camera_parent_frame,
            "views": f"{len(result.views_used)}/{len(dataset.images)}", "reproj": f"{result.reprojection_rms_px:.3f}",
            "xyz": " ".join(f"{v:+.4f}" for v in xyz), "rpy": " ".join(f"{math.degrees(v):+.2f}" for v in rpy)}


def _print_notes(result: HandEyeResult):
    for note in result.notes:
        print(f"  note: {note}")


def run_sim(args) -> int:
    scene = load_scene(args.scene or config_file("scene_tabletop.yaml"))
    names = [c.namespace for c in scene.cameras] if args.camera == "all" else [args.camera]
    rows, all_within = [], True
    for name in names:
        cam = scene.camera(name)
        with tqdm(total=args.poses, desc=f"{name}: views", unit="view", file=sys.stderr) as bar:
            sim = calibrate_sim_camera(scene, cam, args.poses, args.seed, args.supersampling, bar.update)
        result, dataset = sim.result, sim.dataset
        translation, rotation = sim.error
        closed = pose_difference(result.closed_form_camera_pose, sim.true_pose)
        extra = {"error_vs_simulator": {"translation_mm": round(translation * 1000, 3),
                                        "rotation_deg": round(math.degrees(rotation), 4),
                                        "closed_form_translation_mm": round(closed[0] * 1000, 3),
                                        "closed_form_rotation_deg": round(math.degrees(closed[1]), 4)},
                 "seed": args.seed}
        path = write_calibration(Path(args.output) / f"sim_{name}.yaml",
                                 _calibration_record(dataset, sim.intrinsics, result, "simulation", extra))
        if args.save_dataset:
            write_dataset(Path(args.save_dataset) / name, dataset, sim.joint_positions, sim.arm_mount)
        _print_notes(result)
        print(f"  wrote {path}")
        rows.append({**_row(dataset, result), "err_mm": f"{translation * 1000:.2f}",
                     "err_deg": f"{math.degrees(rotation):.3f}"})
        all_within &= sim.within_bound
    print(_table(rows))
    print(f"bound: {MAX_TRANSLATION_ERROR_M * 1000:.0f} mm, {math.degrees(MAX_ROTATION_ERROR_RAD):.1f} deg against "
          f"the scene file's mounts: {'all within' if all_within else 'MISSED'}")
    return 0 if all_within else 1


def run_images(args) -> int:
    if not args.intrinsics:
        print("--images needs --intrinsics K.yaml", file=sys.stderr)
        return 2
    dataset = read_dataset(args.images, args.poses_file)
    intrinsics = read_intrinsics(args.intrinsics)
    result = calibrate_dataset(dataset, intrinsics)
    record = _calibration_record(dataset, intrinsics, result, f"images {Path(args.images).resolve()}")
    path = write_calibration(Path(args.output) / f"{dataset.camera}.yaml", record)
    _print_notes(result)
    print(f"  wrote {path}")
    print(_table([_row(dataset, result)]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ros-vla calibrate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--sim", action="store_true", help="calibrate the simulated cameras")
    source.add_argument("--images", metavar="DIR", help="calibrate from recorded images and poses")
    parser.add_argument("--camera", default="all", help="--sim: a camera namespace of the scene file, or all")
    parser.add_argument("--poses", type=int, default=20, help="--sim: number of arm poses (views) per camera")
    parser.add_argument("--seed", type=int, default=0, help="--sim: seed of the planned views")
    parser.add_argument("--supersampling", type=int, default=2, help="--sim: render at this many times the "
                        "resolution per axis and average down (anti-aliasing)")
    parser.add_argument("--scene", help="--sim: scene file (default config/scene_tabletop.yaml)")
    parser.add_argument("--save-dataset", metavar="DIR", help="--sim: also write the views as DIR/<camera>/ "
                        "(images + poses.yaml), in the format --images reads")
    parser.add_argument("--poses-file", help="--images: poses file (default DIR/poses.yaml)")
    parser.add_argument("--intrinsics", help="--images: the camera's intrinsics (YAML)")
    parser.add_argument("--output", default="calibration", help="folder for the calibration YAML files")
    return parser


def calibrate_main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run_sim(args) if args.sim else run_images(args)
    except (CalibrationError, ValueError, KeyError, OSError) as err:
        print(f"calibration failed: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(calibrate_main())
