"""MJCF for one episode: table, lights, cameras, the mocap gripper, objects and fixtures.

Rendering settings for software GL are part of the model (no shadows, no multisampling, no reflections), so
they hold before the first frame is drawn.
"""

from __future__ import annotations

import math

from robovla.sim import variations as V
from robovla.sim.embodiments import Embodiment, camera_axes
from robovla.sim.tasks import FIXTURE_RADIUS, FIXTURE_TOP, EpisodeSpec, FixtureSpec, ObjectSpec

TIMESTEP = 0.004
TABLE_HALF = (0.32, 0.24)
GRIPPER_START = (0.0, -0.02, 0.18)
FINGER_KP = 300.0


def lookat_xyaxes(pos: tuple[float, float, float], target: tuple[float, float, float]) -> str:
    """MJCF `xyaxes` of a camera at `pos` looking at `target` with world z up."""
    right, up, _ = camera_axes(pos, target)
    return " ".join(f"{v:.5f}" for v in (*right, *up))


def _rgba(color: str, shade: float = 1.0) -> str:
    r, g, b = (shade * c for c in V.COLORS[color])
    return f"{r:.3f} {g:.3f} {b:.3f} 1"


def _object_xml(obj: ObjectSpec) -> str:
    h = obj.half_height
    geom = {
        "cube": f'type="box" size="{obj.size / 2} {obj.size / 2} {h}"',
        "cylinder": f'type="cylinder" size="{obj.size / 2} {h}"',
        "ball": f'type="sphere" size="{obj.size / 2}"',
        "disc": f'type="cylinder" size="{obj.size * 0.6} {h}"',
    }[obj.shape]
    return (
        f'<body name="{obj.name}" pos="{obj.x} {obj.y} {h + 0.001}" euler="0 0 {obj.yaw}"><freejoint/>'
        f'<geom name="{obj.name}" {geom} rgba="{_rgba(obj.color)}" density="300" friction="1.5 0.02 0.001" condim="4"/></body>'
    )


def _walls(count: int, radius: float, half_len: float, top: float, rgba: str) -> list[str]:
    """`count` thin wall boxes standing on a ring (bowl) or square (bin) of the given radius."""
    wall_h = 0.018
    walls = []
    for k in range(count):
        a = 2 * math.pi * k / count
        walls.append(
            f'<geom type="box" size="0.004 {half_len:.4f} {wall_h}" pos="{radius * math.cos(a):.4f} {radius * math.sin(a):.4f} {top + wall_h}" '
            f'euler="0 0 {a:.4f}" rgba="{rgba}"/>'
        )
    return walls


def _fixture_xml(fix: FixtureSpec) -> str:
    rgba = _rgba(fix.color)
    top, radius = FIXTURE_TOP[fix.kind], FIXTURE_RADIUS[fix.kind]
    base = {"pad": "box", "bin": "box"}.get(fix.kind, "cylinder")
    size = f"{radius} {radius} {top / 2}" if base == "box" else f"{radius} {top / 2}"
    no_contact = ' contype="0" conaffinity="0"' if fix.kind == "pad" else ""  # pads are painted on the table
    floor = _rgba(fix.color, 0.6) if fix.kind in ("bowl", "bin") else rgba  # a darker inside reads as a container
    parts = [f'<body name="{fix.name}" pos="{fix.x} {fix.y} 0">', f'<geom type="{base}" size="{size}" pos="0 0 {top / 2}" rgba="{floor}"{no_contact}/>']
    if fix.kind == "bowl":
        parts += _walls(12, radius, math.pi * radius / 12 + 0.002, top, rgba)
    elif fix.kind == "bin":
        parts += _walls(4, radius, radius + 0.004, top, rgba)
    parts.append("</body>")
    return "".join(parts)


def build_mjcf(spec: EpisodeSpec, embodiment: Embodiment, image_size: int) -> str:
    """The complete MJCF document for one episode."""
    light_dir, diffuse, ambient = V.LIGHTING[spec.lighting]
    table = V.TABLES[spec.table]
    camera_pos, camera_target = embodiment.camera_pos, embodiment.camera_target
    if spec.look is not None:  # a randomized scene: its own table colour, light and camera pose
        look = spec.look
        light_dir, diffuse, ambient = look.light_dir, (look.light_diffuse,) * 3, (look.ambient,) * 3
        table = 'builtin="flat" rgb1="{0} {1} {2}" rgb2="{0} {1} {2}"'.format(*look.table_rgb)
        camera_pos = tuple(float(a + b) for a, b in zip(camera_pos, look.camera_offset))
        camera_target = tuple(float(a + b) for a, b in zip(camera_target, look.target_offset))
    fx, fy, fz = embodiment.finger_size
    open_max = embodiment.finger_half_open
    finger_rgba = " ".join(str(v) for v in embodiment.finger_rgba)
    fingers = "".join(
        f'<body name="finger_{side}" gravcomp="1"><joint name="finger_{side}" type="slide" axis="{sign} 0 0" range="0 {open_max}" damping="3"/>'
        f'<geom type="box" size="{fx} {fy} {fz}" pos="{sign * fx} 0 {fz - 0.01}" rgba="{finger_rgba}" mass="0.05" friction="1.5 0.02 0.001" condim="4"/></body>'
        for side, sign in (("l", -1), ("r", 1))
    )
    actuators = "".join(
        f'<position name="finger_{side}" joint="finger_{side}" kp="{FINGER_KP}" ctrlrange="0 {open_max}" forcerange="-12 12" forcelimited="true"/>'
        for side in ("l", "r")
    )
    palm_w = open_max + 2 * fx
    return f"""<mujoco model="tabletop">
  <compiler angle="radian"/>
  <option timestep="{TIMESTEP}" integrator="implicitfast" cone="elliptic" impratio="5">
    <flag multiccd="enable"/>
  </option>
  <visual>
    <global offwidth="{image_size}" offheight="{image_size}"/>
    <quality shadowsize="0" offsamples="0"/>
    <headlight ambient="{' '.join(map(str, ambient))}" diffuse="0.15 0.15 0.15" specular="0 0 0"/>
  </visual>
  <asset>
    <texture name="table" type="2d" {table} width="128" height="128"/>
    <material name="table" texture="table" texrepeat="3 3" reflectance="0" specular="0" shininess="0"/>
  </asset>
  <worldbody>
    <light directional="true" dir="{' '.join(map(str, light_dir))}" diffuse="{' '.join(map(str, diffuse))}" specular="0 0 0" castshadow="false" pos="0 0 1"/>
    <geom name="floor" type="plane" pos="0 0 -0.5" size="3 3 0.1" rgba="0.25 0.25 0.28 1"/>
    <geom name="table" type="box" pos="0 0 -0.02" size="{TABLE_HALF[0]} {TABLE_HALF[1]} 0.02" material="table"/>
    <camera name="front" pos="{' '.join(map(str, camera_pos))}" xyaxes="{lookat_xyaxes(camera_pos, camera_target)}" fovy="{embodiment.camera_fovy}"/>
    <body name="gripper_target" mocap="true" pos="{' '.join(map(str, GRIPPER_START))}"/>
    <body name="gripper" pos="{' '.join(map(str, GRIPPER_START))}" gravcomp="1">
      <freejoint name="gripper"/>
      <site name="tcp" size="0.005" rgba="0 0 0 0"/>
      <geom type="box" size="{palm_w} {fy + 0.004} 0.012" pos="0 0 {2 * fz - 0.01 + 0.012}" rgba="{finger_rgba}" contype="0" conaffinity="0" mass="0.4"/>
      <camera name="wrist" pos="0 -0.075 {2 * fz + 0.02}" xyaxes="1 0 0 0 0.8 0.6" fovy="70"/>
      {fingers}
    </body>
    {''.join(_fixture_xml(f) for f in spec.fixtures)}
    {''.join(_object_xml(o) for o in spec.objects)}
  </worldbody>
  <contact><exclude body1="finger_l" body2="finger_r"/></contact>
  <equality><weld body1="gripper_target" body2="gripper" relpose="0 0 0 1 0 0 0" solref="0.01 1"/></equality>
  <actuator>{actuators}</actuator>
</mujoco>"""
