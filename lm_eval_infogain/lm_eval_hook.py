"""Make the stock `lm_eval` CLI find the `mdm_infogain` backend and the project's task folder.

lm-eval 0.4.13 discovers neither models nor tasks through entry points. This module is imported at
interpreter start by `lm_eval_infogain.pth` and only installs an import hook (no torch, no lm_eval):
- after `lm_eval.models` runs (it fills the model registry), register the lazy placeholder
  `mdm_infogain -> lm_eval_infogain.harness:MDMInfoGainLM`;
- after `lm_eval.tasks.manager` runs, make every TaskManager that includes lm-eval's default tasks
  also index this package's task_configs/ (before any --include_path, so user folders still win);
- after `lm_eval.api.model` runs, have lm-eval's request cache (CachingLM) claim its file first when it
  wraps our model: locked against a second run, refused in one line when damaged (request_cache.claim);
  tell our generate_until every request of the call, so that it reports the decode stats kept with the
  cached answers too, and call it even when all of a process's requests were cached (CachingLM skips the
  call then): it reports their stats, and under `accelerate launch` the other ranks wait for every rank
  in its gathers;
- after `lm_eval.evaluator` runs, have simple_evaluate check the sandbox before it loads the model
  when the tasks name one of this package's code tasks (lm-eval builds the tasks after the model);
- after `lm_eval._cli.harness` runs, make the CLI print a UsageError (a bad input of ours) as the one
  line `mdm_infogain: <message>` and exit with status 2; any other exception keeps its traceback.
"""

import functools
import importlib.abc
import importlib.util
import sys

from lm_eval_infogain.errors import USAGE_EXIT_STATUS, UsageError

MODEL_NAME = "mdm_infogain"
MODEL_TARGET = "lm_eval_infogain.harness:MDMInfoGainLM"


def task_configs_dir() -> str:
    spec = importlib.util.find_spec("lm_eval_infogain.task_configs")
    return list(spec.submodule_search_locations)[0]


def register_model(models_module) -> None:
    registry = sys.modules["lm_eval.api.registry"].model_registry
    if MODEL_NAME not in registry:
        registry.register(MODEL_NAME, target=MODEL_TARGET)


def add_task_folder(manager_module) -> None:
    task_manager_cls = manager_module.TaskManager
    original_init = task_manager_cls.__init__

    def init_with_project_tasks(self, verbosity=None, include_path=None, include_defaults=True, metadata=None):
        if include_defaults:
            user_paths = [] if include_path is None else include_path
            if not isinstance(user_paths, (list, tuple)):
                user_paths = [user_paths]
            include_path = [task_configs_dir(), *user_paths]
        original_init(self, verbosity, include_path, include_defaults, metadata)

    task_manager_cls.__init__ = init_with_project_tasks


def claim_request_cache(model_module) -> None:
    caching_lm_cls = model_module.CachingLM
    original_init = caching_lm_cls.__init__

    def init_after_claim(self, lm, cache_db):
        harness = sys.modules.get("lm_eval_infogain.harness")  # not imported: the model is not ours
        if harness is not None and isinstance(lm, harness.MDMInfoGainLM):
            from lm_eval_infogain.request_cache import claim

            claim(cache_db)
        original_init(self, lm, cache_db)

    caching_lm_cls.__init__ = init_after_claim
    original_getattr = caching_lm_cls.__getattr__

    def getattr_joining_every_rank(self, attr):
        method = original_getattr(self, attr)
        harness = sys.modules.get("lm_eval_infogain.harness")
        if attr != "generate_until" or harness is None or not isinstance(self.lm, harness.MDMInfoGainLM):
            return method

        def generate_until(requests):
            calls = self.lm.generate_until_calls
            self.lm.requests_of_call = requests  # so that it reports the decode stats kept with cached answers
            answers = method(requests)
            if self.lm.generate_until_calls == calls:
                self.lm.generate_until([])  # all cached here: report their stats, join the other ranks' gathers
            return answers

        return generate_until

    caching_lm_cls.__getattr__ = getattr_joining_every_rank


def usage_errors_in_one_line(cli_module) -> None:
    cli_cls = cli_module.HarnessCLI
    original_execute = cli_cls.execute

    def execute(self, args):
        try:
            original_execute(self, args)
        except UsageError as error:
            print(f"{MODEL_NAME}: {error}", file=sys.stderr)
            sys.exit(USAGE_EXIT_STATUS)

    cli_cls.execute = execute


def check_sandbox_first(evaluator_module) -> None:
    original_simple_evaluate = evaluator_module.simple_evaluate

    @functools.wraps(original_simple_evaluate)
    def simple_evaluate(*args, **kwargs):
        from lm_eval_infogain.tasks.offline import check_sandbox_for

        check_sandbox_for(kwargs.get("tasks"))
        return original_simple_evaluate(*args, **kwargs)

    evaluator_module.simple_evaluate = simple_evaluate


AFTER_IMPORT = {"lm_eval.models": register_model, "lm_eval.tasks.manager": add_task_folder,
                "lm_eval.api.model": claim_request_cache, "lm_eval._cli.harness": usage_errors_in_one_line,
                "lm_eval.evaluator": check_sandbox_first}


class LoaderThenHook(importlib.abc.Loader):
    """Runs the real loader, then our hook on the freshly executed module."""

    def __init__(self, loader, hook):
        self.loader = loader
        self.hook = hook

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        self.hook(module)


class AfterImportFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        hook = AFTER_IMPORT.get(name)
        if hook is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                spec.loader = LoaderThenHook(spec.loader, hook)
                return spec
        return None


def install() -> None:
    if not any(isinstance(finder, AfterImportFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, AfterImportFinder())
    # Already imported (e.g. the hook installed by hand after lm_eval): apply now.
    for name, hook in AFTER_IMPORT.items():
        if name in sys.modules:
            hook(sys.modules[name])


install()
