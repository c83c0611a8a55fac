"""Fault injection for tests, kept out of library code: with this directory first on PYTHONPATH and
WEBTEXT_TEST_KILL_AT_STEP=N in the environment, rank 0 of every training process that environment reaches
(torchrun ranks, Ray Train workers on any node) is SIGKILLed once it has finished step N, before step N+1 starts:
what a lost node looks like to the rest of the run. `tests/helpers.py: kill_at_step` sets both."""

import os
import sys

_KILL_AT = os.environ.get("WEBTEXT_TEST_KILL_AT_STEP")


class _KillAfterStep:
    """Patches `training.loop.Stepper.step` as the module is first imported."""

    def find_spec(self, name, path, target=None):
        if name != "training.loop":
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        if spec is None:
            return None
        exec_module = spec.loader.exec_module

        def patched(module):
            exec_module(module)
            step = module.Stepper.step

            def step_or_die(self, done: int):
                if done == int(_KILL_AT) and self.d.rank == 0:
                    import signal

                    os.kill(os.getpid(), signal.SIGKILL)
                return step(self, done)

            module.Stepper.step = step_or_die

        spec.loader.exec_module = patched
        return spec


if _KILL_AT is not None:
    sys.meta_path.insert(0, _KillAfterStep())
