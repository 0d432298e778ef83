import os

# MuJoCo picks its OpenGL backend when first imported, and its default (GLFW) needs a display: headless machines
# render evaluation videos through EGL unless MUJOCO_GL says otherwise (common.run.video).
os.environ.setdefault("MUJOCO_GL", "egl")
