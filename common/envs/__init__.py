"""The envs: the literal task table, name resolution across the four backends, Playground's MJX envs and the host
envs (dm_control, Gymnasium, MyoSuite) stepped from inside the compiled chunk. Imports only common.core.contract."""
