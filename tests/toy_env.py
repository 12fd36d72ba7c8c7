"""A tiny test-only MjxEnv: dict observations, early termination and on-demand NaN physics.

A slider joint driven by a motor. Episode ends (``done``) when |qpos| > 0.5; an action above 0.99 on the
second action dim poisons the velocity with NaN, so NaN handling is testable without Humanoid blow-ups.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
from ml_collections import config_dict
from mujoco import mjx
from mujoco_playground._src import mjx_env

XML = """
<mujoco>
  <option timestep="0.01"/>
  <worldbody>
    <body name="slider">
      <joint name="x" type="slide" axis="1 0 0" damping="0.1"/>
      <geom type="box" size="0.05 0.05 0.05" mass="1"/>
    </body>
  </worldbody>
  <actuator><motor joint="x" gear="100"/></actuator>
</mujoco>
"""

TERMINATION_RADIUS = 0.5


def default_config() -> config_dict.ConfigDict:
    return config_dict.create(ctrl_dt=0.02, sim_dt=0.01, episode_length=40, action_repeat=1)


class ToyDictEnv(mjx_env.MjxEnv):
    """obs = {"state": [qpos, qvel], "privileged_state": [qpos, qvel, t]}; 2 action dims (push, poison)."""

    def __init__(self, config: config_dict.ConfigDict | None = None) -> None:
        super().__init__(config or default_config())
        self._mj_model = mujoco.MjModel.from_xml_string(XML)
        self._mjx_model = mjx.put_model(self._mj_model, impl="jax")

    def _obs(self, data: mjx.Data) -> dict[str, jax.Array]:
        state = jnp.concatenate([data.qpos, data.qvel])
        return {"state": state, "privileged_state": jnp.concatenate([state, data.time[None]])}

    def reset(self, rng: jax.Array) -> mjx_env.State:
        qpos = jax.random.uniform(rng, (1,), minval=-0.1, maxval=0.1)
        data = mjx_env.make_data(self._mj_model, qpos=qpos, impl="jax")
        data = mjx.forward(self._mjx_model, data)
        return mjx_env.State(data, self._obs(data), jnp.zeros(()), jnp.zeros(()), {}, {})

    def step(self, state: mjx_env.State, action: jax.Array) -> mjx_env.State:
        data = mjx_env.step(self._mjx_model, state.data, action[:1], self.n_substeps)
        data = data.replace(qvel=jnp.where(action[1] > 0.99, jnp.nan, data.qvel))
        reward = 1.0 - jnp.abs(data.qpos[0])
        done = (jnp.abs(data.qpos[0]) > TERMINATION_RADIUS).astype(jnp.float32)
        return state.replace(data=data, obs=self._obs(data), reward=reward, done=done)

    @property
    def xml_path(self) -> str:
        return "<toy>"

    @property
    def action_size(self) -> int:
        return 2

    @property
    def mj_model(self) -> mujoco.MjModel:
        return self._mj_model

    @property
    def mjx_model(self) -> mjx.Model:
        return self._mjx_model
