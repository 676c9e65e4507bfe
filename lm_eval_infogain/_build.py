"""Build commands that also install `lm_eval_infogain.pth` at the root of site-packages.

Python runs the `import` line of every `.pth` file at start-up; ours installs lm_eval_hook, which
registers the backend and the task folder the moment lm_eval itself is imported. setuptools has no
declarative way to ship a file outside a package, so build_py (regular wheels) and editable_wheel
(`pip install -e .`) each add it.
"""

from pathlib import Path

from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

HOOK_FILE = "lm_eval_infogain.pth"
HOOK_LINE = "import lm_eval_infogain.lm_eval_hook\n"


def write_hook(directory) -> str:
    path = Path(directory, HOOK_FILE)
    path.write_text(HOOK_LINE)
    return str(path)


class BuildPyWithHook(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:
            self.outputs_with_hook = [write_hook(self.build_lib)]

    def get_outputs(self, *args, **kwargs):
        return super().get_outputs(*args, **kwargs) + getattr(self, "outputs_with_hook", [])


class EditableWheelWithHook(editable_wheel):
    def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
        files, mapping = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
        write_hook(unpacked_wheel)
        return files, mapping
