"""Scripted experts: closed-loop waypoint controllers that read the simulator's true state.

Pick-based families (pick_place, stack, move_near) run reach -> descend -> grasp -> lift -> carry -> lower ->
release -> retreat, re-planning from the current object poses every step (and starting over if the object
slips). Push aligns the closed gripper behind the object and pushes it along the line to the target pad.
Optional Gaussian noise on the executed action diversifies demonstrations (labels stay clean); failed episodes
are filtered by the collector.
"""

from __future__ import annotations

import math

import numpy as np

from robovla.sim.env import TabletopEnv, wrap_angle
from robovla.sim.tasks import FIXTURE_TOP, FixtureSpec, ObjectSpec

HOVER = 0.08  # metres above the object's centre before descending
CARRY_Z = 0.13
PUSH_Z = 0.022
GRASP_STEPS = 3
RELEASE_STEPS = 2


class ScriptedExpert:
    """Produces the next action for the env's current episode; make one per episode (env.reset does)."""

    def __init__(self, env: TabletopEnv, noise: float = 0.0, rng: np.random.Generator | None = None) -> None:
        assert env.episode is not None, "reset the env first"
        self.env = env
        self.episode = env.episode
        self.noise = noise
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.phase = "align" if self.episode.family == "push" else "reach"
        self._timer = 0

    def act(self) -> np.ndarray:
        """The expert's action for the current state: what a dataset records as the label."""
        action = self._push() if self.episode.family == "push" else self._pick_and_place()
        return np.clip(action, [-1, -1, -1, -1, -1, -1, 0], 1).astype(np.float32)

    def perturb(self, action: np.ndarray) -> np.ndarray:
        """The action to execute: `action` plus Gaussian noise on dx, dy, dz and dyaw (none when noise is 0).

        Collection executes the perturbed action but records the clean one (DART-style): the data visits
        states off the expert's path, labelled with the expert's correction, and the labels carry no noise a
        policy would have to model.
        """
        if self.noise <= 0:
            return action
        noisy = action.copy()
        # roll and pitch stay level: tilts too small to see in the image would only add unlearnable labels
        noisy[[0, 1, 2, 5]] += self.rng.normal(0.0, self.noise, 4)
        return np.clip(noisy, [-1, -1, -1, -1, -1, -1, 0], 1).astype(np.float32)

    # --- shared -----------------------------------------------------------------------------------------------
    def _move(self, target: np.ndarray, yaw: float, gripper: float, speed: float = 1.0) -> np.ndarray:
        """Action that heads straight for `target` (at most `speed` of a full step) and turns to `yaw`."""
        emb = self.env.embodiment
        delta = (target - self.env.tcp_pos) / emb.pos_step
        delta /= max(1.0, float(np.max(np.abs(delta))) / speed)
        rpy = self.env.tcp_rpy
        turn = np.array([-rpy[0], -rpy[1], wrap_angle(yaw - rpy[2])]) / emb.rot_step
        return np.concatenate([delta, np.clip(turn, -1, 1), [gripper]])

    def _nearest_yaw(self, base: float, period: float) -> float:
        """The angle congruent to `base` modulo `period` closest to the gripper's current yaw."""
        yaw = self.env.tcp_rpy[2]
        return yaw + ((base - yaw + period / 2) % period - period / 2)

    def _close(self, target: np.ndarray, xy_tol: float = 0.006, z_tol: float = 0.006) -> bool:
        err = target - self.env.tcp_pos
        return bool(np.hypot(err[0], err[1]) < xy_tol and abs(err[2]) < z_tol)

    # --- pick-based families ----------------------------------------------------------------------------------
    def _place_point(self, obj: ObjectSpec) -> np.ndarray:
        goal = self.episode.entity(self.episode.goal)
        if isinstance(goal, FixtureSpec):
            return np.array([goal.x, goal.y, FIXTURE_TOP[goal.kind] + obj.half_height + 0.012])
        g = self.env.object_pos(goal.name)
        if self.episode.family == "stack":
            return np.array([g[0], g[1], g[2] + goal.half_height + obj.half_height + 0.012])
        dx, dy = self.episode.place_offset
        return np.array([g[0] + dx, g[1] + dy, obj.half_height + 0.01])

    def _pick_and_place(self) -> np.ndarray:
        obj = self.episode.target
        p = self.env.object_pos(obj.name)
        tcp = self.env.tcp_pos
        grasp_yaw = self._nearest_yaw(self.env.object_yaw(obj.name), math.pi / 2) if obj.shape == "cube" else self.env.tcp_rpy[2]
        holding_phases = ("lift", "carry", "lower")
        if self.phase in holding_phases and np.linalg.norm(p - tcp) > 0.05:
            self.phase = "reach"  # the object slipped: start over
        if self.phase == "reach":
            target = np.array([p[0], p[1], p[2] + HOVER])
            if self._close(target, 0.008, 0.03) and abs(wrap_angle(grasp_yaw - self.env.tcp_rpy[2])) < 0.05:
                self.phase = "descend"
            return self._move(target, grasp_yaw, 1.0)
        if self.phase == "descend":
            target = np.array([p[0], p[1], max(p[2], 0.014)])
            if self._close(target, 0.008, 0.005):
                self.phase, self._timer = "grasp", 0
            return self._move(target, grasp_yaw, 1.0)
        if self.phase == "grasp":
            self._timer += 1
            if self._timer >= GRASP_STEPS:
                self.phase = "lift"
            return self._move(tcp, self.env.tcp_rpy[2], 0.0)
        place = self._place_point(obj)
        carry_z = max(CARRY_Z, place[2] + 0.05)
        yaw = self.env.tcp_rpy[2]
        if self.phase == "lift":
            target = np.array([tcp[0], tcp[1], carry_z])
            if tcp[2] > carry_z - 0.01:
                self.phase = "carry"
            return self._move(target, yaw, 0.0)
        if self.phase == "carry":
            target = np.array([place[0], place[1], carry_z])
            if self._close(target, 0.008, 0.02):
                self.phase = "lower"
            return self._move(target, yaw, 0.0)
        if self.phase == "lower":
            if self._close(place, 0.008, 0.005):
                self.phase, self._timer = "release", 0
            return self._move(place, yaw, 0.0)
        if self.phase == "release":
            self._timer += 1
            if self._timer >= RELEASE_STEPS:
                self.phase = "retreat"
            return self._move(tcp, yaw, 1.0)
        return self._move(np.array([tcp[0], tcp[1], carry_z]), yaw, 1.0)  # retreat, then hold still

    # --- push --------------------------------------------------------------------------------------------------
    def _push(self) -> np.ndarray:
        obj = self.episode.target
        pad = self.episode.entity(self.episode.goal)
        p = self.env.object_pos(obj.name)
        tcp = self.env.tcp_pos
        to_goal = np.array([pad.x - p[0], pad.y - p[1]])
        direction = to_goal / max(float(np.linalg.norm(to_goal)), 1e-6)
        yaw = self._nearest_yaw(math.atan2(direction[1], direction[0]), math.pi)
        standoff = obj.size / 2 + 2 * self.env.embodiment.finger_size[0] + 0.02
        behind = p[:2] - direction * standoff
        rel = tcp[:2] - p[:2]
        lateral = rel - direction * float(np.dot(rel, direction))
        if self.phase == "push" and (np.linalg.norm(lateral) > 0.025 or np.dot(rel, direction) > -0.01):
            self.phase = "align"  # lost the object: go round again
        if self.phase == "align":
            if tcp[2] < HOVER - 0.01 and np.linalg.norm(tcp[:2] - behind) > 0.02:
                return self._move(np.array([tcp[0], tcp[1], HOVER]), yaw, 0.0)
            target = np.array([behind[0], behind[1], HOVER])
            if self._close(target, 0.008, 0.03) and abs(wrap_angle(yaw - self.env.tcp_rpy[2])) < 0.05:
                self.phase = "lower"
            return self._move(target, yaw, 0.0)
        if self.phase == "lower":
            target = np.array([behind[0], behind[1], PUSH_Z])
            if self._close(target, 0.01, 0.005):
                self.phase = "push"
            return self._move(target, yaw, 0.0)
        step = direction * 0.5 * self.env.embodiment.pos_step
        target = np.array([*(tcp[:2] + step - lateral), PUSH_Z])
        return self._move(target, yaw, 0.0, speed=0.6)


def scripted_expert(env: TabletopEnv, noise: float = 0.0, rng: np.random.Generator | None = None):
    """A fresh expert for the env's current episode, for collection (`act` labels, `perturb` explores): the
    tabletop's `ScriptedExpert`, or the expert an env brings of its own (Meta-World's scripted policies)."""
    if not isinstance(env, TabletopEnv):
        return env.scripted_expert(noise, rng)
    return ScriptedExpert(env, noise=noise, rng=rng)


def expert_action(env: TabletopEnv) -> np.ndarray:
    """The noise-free scripted expert's next action for the env's current episode (its expert is made at the
    first call after a reset and kept on the env: it remembers the episode's phase). An env of another
    simulator (`MetaWorldEnv`) answers with its own expert."""
    if not isinstance(env, TabletopEnv):
        return env.expert_action()
    if env.episode is None:
        raise RuntimeError("call env.reset() before expert_action(env)")
    if env.expert is None or env.expert.episode is not env.episode:
        env.expert = ScriptedExpert(env)
    return env.expert.act()
