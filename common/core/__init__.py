"""The pure core: the contract with an algorithm and the envs, the compiled chunk and its train state, the replay,
evaluation, and the layout over seeds and devices. Every function here is jittable or builds jitted functions; the
core imports nothing of common.envs or common.run."""
