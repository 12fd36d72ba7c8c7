"""Made tests/data/state_before_packed_pool.pkl, run at commit 446d0b1 (before the fresh-state pool was packed):
``python tests/data/make_state_before_packed_pool.py tests/data/state_before_packed_pool.pkl``. A leaf-by-leaf
state of CartpoleBalance x 4 with fresh initial states, taken after some episode ends, and the next steps' results."""
import pickle
import sys

import numpy as np
import playground_gym
from playground_gym import autoreset
autoreset.FUSE_LIMIT = 0  # leaf by leaf at 4 envs
envs = playground_gym.make_vec("CartpoleBalance", 4, device="cpu", array_type="numpy", episode_length=5)
envs.reset(seed=3)
act = np.full((4, 1), 0.3, np.float32)
for _ in range(7):  # episode ends at step 5: the pool was refilled and partly handed out
    envs.step(act)
envs.set_elapsed_steps(np.array([0, 1, 2, 3]))  # ends spread over the next steps
state = envs.state_dict()
assert any("#" in k for k in state["carry"])
rows = []
for _ in range(9):
    obs, reward, term, trunc, info = envs.step(act)
    rows.append((obs.copy(), reward.copy(), trunc.copy(), info["final_obs"].copy()))
with open(sys.argv[1], "wb") as f:
    pickle.dump({"commit": "446d0b1", "state": state, "steps": rows}, f)
print(len(state["carry"]), sum(v.nbytes for v in state["carry"].values()))
