"""Run records of the mdm_infogain backend: what the results JSON, the decode-stats file and the
request cache (--use_cache) say about a run.

Every effective setting, the versions, the per-task mean decode stats and every request's own land in
the results JSON (get_model_info); each request's stats are appended to the decode_stats JSONL file as
it finishes and kept with its cached answer; the settings that decide the answers guard the cache file.
"""

import dataclasses
import importlib.metadata
import json
from collections import Counter
from pathlib import Path

from lm_eval_infogain import __version__, request_cache
from lm_eval_infogain.models.registry import resolve_pretrained
from lm_eval_infogain.sampling.config import check
from lm_eval_infogain.sampling.modes import plugin_identity

# model_args that never change an answer: a --use_cache file filled with other values of them still
# answers this run. Every other model_arg is part of the settings the cache file records.
OUTPUT_NEUTRAL_KEYS = ("batch_size", "max_batch_size", "device", "decode_stats")


class RunRecords:
    """The run's records. Mixed into MDMInfoGainLM, whose settings, adapter and stats it reads."""

    def stats_path(self, path: str | None) -> Path | None:
        """Where per-request decode stats go, one JSONL file per process (rank suffix when several)."""
        if path is None:
            return None
        path = Path(path)
        check(path.parent.is_dir() and not path.is_dir(), "decode_stats", str(path),
              "a file (not a directory) in an existing directory")
        return path.with_name(f"{path.name}.rank{self.rank}") if self.world_size > 1 else path

    def cached_decode_stats(self, requests, decoded: list[dict]) -> list[dict]:
        """The decode stats that --use_cache kept with the answers of the requests not decoded now."""
        if self.cache_hook.dbdict is None:
            return []
        decoded_keys = {(row["task"], row["doc_id"], row["idx"], row["repeat"]) for row in decoded}
        rows, repeats = [], Counter()
        for instance in requests:
            key = (instance.task_name, instance.doc_id, instance.idx)
            request = dict(zip(("task", "doc_id", "idx", "repeat"), (*key, repeats[key])))
            repeats[key] += 1
            stored = request_cache.stored_stats(self.cache_hook.dbdict, instance.args)
            if (*key, request["repeat"]) not in decoded_keys and stored is not None:
                rows.append(stored | request)
        return rows

    def gather_decode_stats(self, rows: list[dict]) -> None:
        """Every process's stats of one generate_until call, kept by the first process for the results JSON.
        Each process calls generate_until once per request type, so all of them reach this gather; a
        request that lm-eval repeats on two processes to even out their shares is kept once."""
        gathered = self.gather_object(rows)
        if self.rank == 0:
            for row in (row for part in gathered for row in part):
                self.run_decode_stats[(row["task"], row["doc_id"], row["idx"], row["repeat"])] = row

    def set_cache_hook(self, cache_hook) -> None:
        """Called by lm-eval's CachingLM with the cache file: refuse one made with other settings."""
        if cache_hook.dbdict is not None:
            request_cache.guard(cache_hook.dbdict, self.output_settings())
        super().set_cache_hook(cache_hook)

    def output_settings(self) -> dict:
        """What decides the answers: every model_arg but OUTPUT_NEUTRAL_KEYS (sampler keys as fitted to the
        model, the seed as drawn), what they resolve to (model type, dtype, the checkpoint's and peft
        adapter's files) and the software versions."""
        given = {key: value for key, value in self.model_args.items() if key not in OUTPUT_NEUTRAL_KEYS}
        info = self.get_model_info()
        for key in ("decode_stats_mean", "decode_stats_per_request", "sampler_per_task", "batch_size_per_canvas",
                    "batch_size_auto", "pretrained_path", "device", "device_used"):
            info.pop(key)  # stats, what requests have run so far, where the checkpoint and the process live
        peft = self.model_args["peft"]
        identity = (request_cache.weights_identity(self.adapter.model) if self.built_model is not None
                    else request_cache.model_identity(resolve_pretrained(self.pretrained)))
        identities = {"model_identity": identity,
                      "peft_identity": None if peft is None else request_cache.model_identity(peft)}
        return given | info | identities | {"device_type": self.device.type,
                                            "lm_eval_version": importlib.metadata.version("lm_eval")}

    def commit_cache(self) -> None:
        """Make a finished batch's answers durable, so a run killed later keeps them."""
        if self.cache_hook.dbdict is not None:
            self.cache_hook.dbdict.commit()

    def get_model_info(self) -> dict:
        """Everything that decides the outputs, defaults included, for lm-eval's results JSON."""
        config = self.adapter.model.config
        return {
            "lm_eval_infogain_version": __version__,
            "pretrained": self.pretrained,
            "pretrained_path": resolve_pretrained(self.pretrained),
            "model_type": config.model_type,
            "model_dtype": str(self.adapter.dtype),
            "model_num_parameters": sum(p.numel() for p in self.adapter.model.parameters()),
            "attention_block": self.model_args["attention_block"],  # block-causal models: whose blocks
            "attention_block_size": self.adapter.spec.attention_block_size,
            "device": str(self.device),
            "seed": self.seed,
            "batch_size_per_canvas": self.batch_size_per_canvas,  # None until batch_size=auto has found it
            # True: batch_size_per_canvas is what batch_size=auto found (at most max_batch_size)
            "batch_size_auto": self.batch_size_is_auto,
            "mc_num": self.mc_num,
            "mc_batch_size": self.mc_batch_size,
            "sampler": dataclasses.asdict(self.sampler),
            # a user's strategy: import path, distribution, version and module file digest (its options are
            # sampler.strategy_options); {} for a built-in, which lm_eval_infogain_version names
            "strategy": {} if self.sampler.is_builtin else plugin_identity(self.sampler.mode),
            "sampler_per_task": self.sampler_per_task(),
            # lm-eval writes its own --device over "device" in the results; this is where the model ran
            "device_used": str(self.device),
            "decode_stats_mean": self.mean_decode_stats(),
            # per request, to join with lm-eval's samples by (task, doc_id, repeat): NFE, tokens forwarded,
            # cumulative entropy, bypass tokens, seconds
            "decode_stats_per_request": [row for _, row in sorted(self.run_decode_stats.items(), key=str)],
        }

    def sampler_per_task(self) -> dict:
        """The settings a task's gen_kwargs changed ({} when it ran with `sampler` as it is), the generation
        length a max_gen_toks cap left and the steps it runs included."""
        base = dataclasses.asdict(self.sampler)
        return {task: {key: value for key, value in settings.items() if base[key] != value}
                for task, settings in sorted(self.task_samplers.items())}

    def record_stats(self, rows: list[dict]) -> None:
        """Keep per-request stats, and append them to the JSONL file at once: a crash loses nothing."""
        self.decode_stats.extend(rows)
        if self.decode_stats_path is not None:
            with self.decode_stats_path.open("a") as stats_file:
                stats_file.writelines(json.dumps(row) + "\n" for row in rows)

    def mean_decode_stats(self) -> dict:
        """Per task: the mean of every numeric stat over its requests (those of every process)."""
        by_task: dict[str, list[dict]] = {}
        for row in self.run_decode_stats.values():
            by_task.setdefault(row["task"], []).append(row)
        numeric = ("nfe", "tokens_forwarded", "cumulative_entropy", "bypass_tokens", "seconds")
        return {task: {key: sum(row[key] for row in rows) / len(rows) for key in numeric} | {"requests": len(rows)}
                for task, rows in by_task.items()}
