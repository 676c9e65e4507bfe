"""A user's strategy: loaded by import path or entry point, checked against the contract, decoded by the same
loop as the built-ins (which are built through the same public path) and recorded by its identity."""

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch

from lm_eval_infogain.api import InfoGainSampler
from lm_eval_infogain.errors import UsageError
from lm_eval_infogain.examples import margin_lookahead
from lm_eval_infogain.sampling import modes
from lm_eval_infogain.sampling.config import SamplerConfig
from lm_eval_infogain.sampling.loop import make_strategy

EXAMPLE = "lm_eval_infogain.examples.margin_lookahead:MarginLookahead"

# A user's module: a copy of `original` written against the contract, and classes that break it.
USER_MODULE = '''
import torch
from lm_eval_infogain.sampling.contract import Option, Proposal, Strategy
from lm_eval_infogain.sampling.strategies import top_k_mask


class MostConfident(Strategy):
    options = {"scale": Option(1.0, float), "label": Option(None, str), "flag": Option(False, bool)}

    def __init__(self, scale, label, flag):
        self.scale = scale

    def propose(self, ctx):
        commit = top_k_mask(ctx.confidence * self.scale, ctx.masked, ctx.num_to_commit)[:, None]
        return Proposal(commit, ctx.tokens[:, None], torch.ones_like(commit[..., 0]))


class ReturnsDict(MostConfident):
    def propose(self, ctx):
        return {"commit": super().propose(ctx).commit}


class WrongTokens(MostConfident):
    def propose(self, ctx):
        proposal = super().propose(ctx)
        return Proposal(proposal.commit, proposal.tokens[:, 0].float(), proposal.valid)


class NoPropose:
    options = {}

    @classmethod
    def from_options(cls, options, spec, device):
        return cls()


class LooksAheadWithoutChoose(Strategy):
    needs_lookahead = True

    def propose(self, ctx):
        pass


class BadOptions(MostConfident):
    options = {"scale": 1.0}


class ChoosesFloats(Strategy):
    needs_lookahead = True

    def propose(self, ctx):
        masked = ctx.masked[:, None].expand(-1, 2, -1)
        commit = top_k_mask(ctx.confidence[:, None].expand_as(masked), masked, ctx.num_to_commit[:, None])
        commit[:, 1] = commit[:, 1] & False | top_k_mask(-ctx.confidence, ctx.masked, ctx.num_to_commit)
        return Proposal(commit, ctx.tokens[:, None].expand_as(commit), torch.ones_like(commit[..., 0]))

    def choose(self, ctx, proposal, next_entropy_mean):
        return next_entropy_mean.argmin(-1).float()


not_a_class = 3
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """user_rules.py on the import path; the mode lookups of earlier tests forgotten."""
    (tmp_path / "user_rules.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    modes.plugin_class.cache_clear()
    yield tmp_path / "user_rules.py"
    modes.plugin_class.cache_clear()


@pytest.fixture(scope="module")
def sudoku():
    sampler = InfoGainSampler.from_pretrained("tiny-llada-sudoku", device="cpu")
    prompts = [sampler.tokenizer(text)["input_ids"] for text in ("Solve 1 . . 4", "Solve . . 3 . 2 . . 1 . 4 .")]
    return sampler, prompts


def one_line(call) -> str:
    with pytest.raises(UsageError) as error:
        call()
    assert "\n" not in str(error.value)
    return str(error.value)


def test_builtin_options_are_sampler_config_fields_with_the_same_defaults():
    defaults = {field.name: field.default for field in dataclasses.fields(SamplerConfig)}
    declared = [(name, option) for cls in modes.BUILTIN_STRATEGIES.values() for name, option in cls.options.items()]
    assert len(declared) == 11
    assert all(option.default == defaults[name] for name, option in declared)


@pytest.mark.parametrize("mode", ["original", "random", "entropy", "margin", "fast_dllm", "eb_sampler", "info_gain"])
def test_every_builtin_mode_is_built_by_the_public_path(mode):
    strategy = make_strategy(SamplerConfig(mode=mode))
    assert isinstance(strategy, modes.Checked) and type(strategy.strategy) is modes.BUILTIN_STRATEGIES[mode]


@pytest.mark.parametrize("use_cache", ["none", "prefix", "dual"])
def test_a_user_copy_of_original_decodes_what_original_does(sudoku, user_module, use_cache):
    sampler, prompts = sudoku
    plain = sampler.sample(prompts, mode="original", use_cache=use_cache, steps=12, seed=[3, 4])
    user = sampler.sample(prompts, mode="user_rules:MostConfident", use_cache=use_cache, steps=12, seed=[3, 4])
    assert user.ids == plain.ids and [row["nfe"] for row in user.stats] == [row["nfe"] for row in plain.stats]


@pytest.mark.parametrize("options", [{"sampler.spread": 0.0}, {"sampler.candidates": 1}])
def test_the_example_without_candidates_is_margin_order(sudoku, options):
    sampler, prompts = sudoku
    plain = sampler.sample(prompts, mode="margin", steps=12, seed=[1, 2])
    example = sampler.sample(prompts, mode=EXAMPLE, steps=12, seed=[1, 2], **options)
    assert example.ids == plain.ids


@pytest.mark.parametrize("use_cache", ["none", "prefix", "dual"])
def test_the_example_looks_ahead_and_its_outputs_do_not_depend_on_the_batch(sudoku, use_cache):
    sampler, prompts = sudoku
    together = sampler.sample(prompts, mode=EXAMPLE, steps=12, seed=[5, 6], use_cache=use_cache)
    alone = [sampler.sample([prompt], mode=EXAMPLE, steps=12, seed=seed, use_cache=use_cache).ids[0]
             for prompt, seed in zip(prompts, (5, 6))]
    assert together.ids == alone
    margin = sampler.sample(prompts, mode="margin", steps=12, seed=[5, 6], use_cache=use_cache)
    assert together.ids != margin.ids  # the lookahead chose other positions than margin order somewhere


def test_options_are_checked_filled_and_converted(user_module):
    config = SamplerConfig(mode="user_rules:MostConfident", strategy_options={"scale": 2})
    assert config.strategy_options == {"scale": 2.0, "label": None, "flag": False}
    assert isinstance(config.strategy_options["scale"], float)
    assert dataclasses.replace(config, temperature=0.5).strategy_options == config.strategy_options


@pytest.mark.parametrize("mode, options, expected", [
    ("user_rules", {}, "mode='user_rules' is unknown; allowed: original"),
    ("user rules:X", {}, "mode='user rules:X' is not an import path; allowed: package.module:ClassName"),
    ("no_such_module:X", {}, "module 'no_such_module' cannot be imported (ModuleNotFoundError"),
    ("user_rules:Missing", {}, "module 'user_rules' has no 'Missing'"),
    ("user_rules:not_a_class", {}, "3 is not a class"),
    ("user_rules:NoPropose", {}, "NoPropose has no propose(ctx) method"),
    ("user_rules:LooksAheadWithoutChoose", {}, "sets needs_lookahead but has no choose"),
    ("user_rules:BadOptions", {}, "BadOptions.options is not a dict of lm_eval_infogain.sampling.contract.Option"),
    ("user_rules:MostConfident", {"alpha": 1}, "sampler.alpha: not an option of mode=user_rules:MostConfident; "
                                               "allowed: sampler.scale (float, default 1.0)"),
    ("user_rules:MostConfident", {"scale": "big"}, "sampler.scale='big' is invalid; allowed: a float"),
    ("user_rules:MostConfident", {"flag": 1}, "sampler.flag=1 is invalid; allowed: a bool"),
    ("user_rules:MostConfident", {"scale": None}, "sampler.scale=None is invalid; allowed: a float (an option"),
    ("original", {"scale": 1.0}, "sampler.scale=1.0 is invalid; allowed: none for the built-in mode=original"),
])
def test_a_bad_strategy_or_option_is_one_line_naming_it(user_module, mode, options, expected):
    assert expected in one_line(lambda: SamplerConfig(mode=mode, strategy_options=options))


def test_a_module_that_fails_to_import_is_one_line_with_its_cause(user_module):
    user_module.with_name("broken_rules.py").write_text("import torch\nraise RuntimeError('no GPU here')\n")
    message = one_line(lambda: SamplerConfig(mode="broken_rules:Rule"))
    assert "module 'broken_rules' cannot be imported (RuntimeError: no GPU here)" in message


@pytest.mark.parametrize("name, expected", [
    ("ReturnsDict", "propose returned dict, not a lm_eval_infogain.sampling.contract.Proposal"),
    ("WrongTokens", "Proposal.tokens must be a [2, 1, 24] torch.int64 tensor, got [2, 24] torch.float32"),
    ("ChoosesFloats", "choose's winner must be a [2] torch.int64 tensor, got [2] torch.float32"),
])
def test_a_wrong_return_is_one_line_at_the_first_step(sudoku, user_module, name, expected):
    sampler, prompts = sudoku
    message = one_line(lambda: sampler.sample(prompts, mode=f"user_rules:{name}", steps=12))
    assert message.startswith(f"mode=user_rules:{name}: ") and expected in message


def test_identity_names_the_import_path_version_and_file_digest(user_module):
    identity = modes.plugin_identity("user_rules:MostConfident")
    assert identity == {"import_path": "user_rules:MostConfident", "entry_point": None, "distribution": None,
                        "version": None, "file_sha256": hashlib.sha256(user_module.read_bytes()).hexdigest()}
    example = modes.plugin_identity(EXAMPLE)
    assert example["distribution"] == "lm_eval_infogain" and example["version"] is not None
    assert example["file_sha256"] == hashlib.sha256(open(margin_lookahead.__file__, "rb").read()).hexdigest()


def test_an_installed_package_registers_a_mode_by_entry_point(user_module):
    dist_info = user_module.parent / "user_rules_pkg-1.2.3.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: user_rules_pkg\nVersion: 1.2.3\n")
    (dist_info / "entry_points.txt").write_text(
        f"[{modes.ENTRY_POINT_GROUP}]\nmost_confident = user_rules:MostConfident\n")
    config = SamplerConfig(mode="most_confident", strategy_options={"scale": 3.0})
    assert config.mode == "most_confident" and config.strategy_options["scale"] == 3.0
    identity = modes.plugin_identity("most_confident")
    assert (identity["import_path"], identity["entry_point"]) == ("user_rules:MostConfident", "most_confident")
    assert (identity["distribution"], identity["version"]) == ("user_rules_pkg", "1.2.3")
    assert "most_confident" in one_line(lambda: SamplerConfig(mode="least_confident"))


def test_the_notebook_api_takes_options_both_ways(sudoku):
    sampler, prompts = sudoku
    prefixed = sampler.sample(prompts, mode=EXAMPLE, steps=12, **{"sampler.spread": 0.5})
    as_dict = sampler.sample(prompts, mode=EXAMPLE, steps=12, strategy_options={"spread": 0.5})
    assert prefixed.config.strategy_options == {"candidates": 4, "spread": 0.5} == as_dict.config.strategy_options
    assert prefixed.ids == as_dict.ids
    assert torch.equal(torch.tensor(prefixed.ids), torch.tensor(as_dict.ids))


class CopyOfTheExample(margin_lookahead.MarginLookahead):
    """A user's strategy class handed to the notebook API as an object (a subclass, so the same decodes)."""


def test_the_notebook_api_takes_a_strategy_class(sudoku):
    sampler, prompts = sudoku
    by_class = sampler.sample(prompts, mode=CopyOfTheExample, steps=12, seed=[1, 2], strategy_options={"spread": 0.5})
    by_path = sampler.sample(prompts, mode=EXAMPLE, steps=12, seed=[1, 2], strategy_options={"spread": 0.5})
    assert by_class.config.mode == f"{__name__}:CopyOfTheExample" and by_class.ids == by_path.ids

    class DefinedInAFunction(margin_lookahead.MarginLookahead):
        pass

    message = one_line(lambda: sampler.sample(prompts, mode=DefinedInAFunction, steps=12))
    assert message.startswith("mode='") and "<locals>" in message and "top level of a module or notebook" in message


def test_gen_kwargs_set_a_task_s_options_over_model_args_and_are_checked_before_decoding():
    from lm_eval_infogain.harness import MDMInfoGainLM

    lm = MDMInfoGainLM(pretrained="tiny-llada-sudoku", mode=EXAMPLE, device="cpu", **{"sampler.candidates": 2})
    assert lm.sampler.strategy_options == {"candidates": 2, "spread": 0.1}
    _, _, config = lm.request_sampler({"until": [], "sampler.spread": 0.3})
    assert config.strategy_options == {"candidates": 2, "spread": 0.3}
    message = one_line(lambda: lm.request_sampler({"until": [], "sampler.alpha": 1}))
    assert message.startswith(f"sampler.alpha: not an option of mode={EXAMPLE}; allowed: sampler.candidates")
    assert lm.get_model_info()["strategy"]["import_path"] == EXAMPLE
    assert "sampler.spread" in one_line(lambda: MDMInfoGainLM(pretrained="tiny-llada-sudoku", mode=EXAMPLE,
                                                               **{"sampler.spread": "wide"}))
    assert "sampler.<option>" in one_line(lambda: MDMInfoGainLM(pretrained="tiny-llada-sudoku", sampling=1))


def test_the_readme_shows_the_example_file_whose_runs_it_quotes():
    root = Path(__file__).parents[1]
    source = Path(margin_lookahead.__file__).read_text()
    assert source[source.index("import torch"):].rstrip() in (root / "README.md").read_text()
    digest = hashlib.sha256(source.encode()).hexdigest()
    runs = sorted((root / "results" / "runs-plugin").rglob("results_*.json"))
    quoted = [json.loads(path.read_text())["config"] for path in runs]
    assert len(quoted) == 4
    assert [config["strategy"].get("file_sha256") for config in quoted if config["strategy"]] == [digest, digest]
