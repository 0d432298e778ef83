"""The kill -9 soak at a small size: two SIGKILLs at random moments and their resumes end exactly where an
uninterrupted run ends (benchmarks/soak_kill_resume.py runs the long version on MJX cartpole).

It trains FlowRL with its default held x₀ through the harness's command line on tests/toy_env.py's point masses
(tests/toy_cli.py): what a kill can break (a checkpoint or a log cut short, the held x₀ mid-block, the replay, the
keys) does not depend on the physics, and each of the four processes would otherwise build MJX cartpole and load its
chunk. MJX's env state resumes exactly in tests/test_resume.py."""

from benchmarks import soak_kill_resume


def test_kills_and_resumes_end_exactly_like_an_uninterrupted_run(tmp_path):
    args = soak_kill_resume.Args(kills=2, max_delay=3.0, total_steps=160, seed=1, work_dir=str(tmp_path),
                                 module=["tests.toy_cli", "flowrl"])
    result = soak_kill_resume.soak(args)
    assert result["kills"] == 2 and result["resumes"] >= 2
    assert result["differences"] == []
