"""top_k/top_p filter the drawn tokens only (filter_scope=draw, the Info-Gain paper's pipeline): Info-Gain's
C, H_next and bypass test come from the model's unfiltered logits. Checked against a hand computation of one
step on tiny-random-dream with top_k=50, the paper's Dream setting."""

import torch

from lm_eval_infogain.models.registry import load
from lm_eval_infogain.sampling.config import SamplerConfig
from lm_eval_infogain.sampling.loop import Decoder, build_canvas

GEN = 8


def entropy64(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in float64 of logits [..., V], written out: -sum p log p over the kept tokens."""
    log_probs = logits.double().log_softmax(-1)
    return -(log_probs.exp() * log_probs.nan_to_num(neginf=0.0)).sum(-1)


def test_info_gain_scores_candidates_with_the_unfiltered_entropies_under_top_k():
    adapter, tokenizer = load("tiny-random-dream", dtype="float32", device="cpu")
    prompt = tokenizer("Solve: 1 2 3 4", add_special_tokens=False)["input_ids"]
    config = SamplerConfig(mode="info_gain", top_k=50, gen_length=GEN, steps=GEN, block_length=GEN, use_cache="none",
                           candidate_number=4, position_temperature=1.0, threshold=0.9, early_stop=False)
    canvas = build_canvas([prompt], GEN, adapter.spec, "cpu")
    start, end = canvas.prompt_length, canvas.prompt_length + GEN
    decoder = Decoder(adapter, config, canvas, [torch.Generator().manual_seed(3)])
    logits = decoder.start_block(start, end, torch.tensor([True]))  # [1, G, V]
    ctx = decoder.step_context(logits.clone(), start, end, torch.tensor([1]))

    @torch.inference_mode()
    def model_logits(ids: torch.Tensor) -> torch.Tensor:  # [1, T] -> [G, V], as the model gives them
        return adapter.forward(ids, canvas.positions, canvas.key_mask, None, 0, start, end)[0]

    now = model_logits(canvas.ids)  # [G, V]
    kth = now.topk(50, dim=-1).values[:, -1:]
    filtered_entropy = entropy64(now.masked_fill(now < kth, float("-inf")))
    torch.testing.assert_close(ctx.entropy[0].double(), entropy64(now), atol=1e-5, rtol=0)
    assert (ctx.entropy[0].double() - filtered_entropy).abs().max() > 0.1  # the filtered ones differ
    torch.testing.assert_close(ctx.probs[0].amax(-1), now.softmax(-1).amax(-1))  # the bypass test's probability

    proposal = decoder.strategy.propose(ctx)
    valid = proposal.valid[0].nonzero().flatten().tolist()
    assert len(valid) > 1 and not proposal.bypass[0]  # a real lookahead
    recorded = {}
    choose = decoder.strategy.choose
    decoder.strategy.choose = lambda ctx, proposal, next_entropy: recorded.setdefault("h", next_entropy) is not None \
        and choose(ctx, proposal, next_entropy)
    winner, _ = decoder.evaluate(ctx, proposal, logits, start, end)

    objective = {}
    for candidate in valid:
        commit, tokens = proposal.commit[0, candidate], proposal.tokens[0, candidate]  # [G]
        ids = canvas.ids.clone()
        ids[0, start:end] = torch.where(commit, tokens, ids[0, start:end])
        still_masked = ids[0, start:end] == adapter.spec.mask_id  # [G]
        h_next = entropy64(model_logits(ids))[still_masked].mean()
        torch.testing.assert_close(recorded["h"][0, candidate].double(), h_next, atol=1e-4, rtol=0)
        objective[candidate] = float(-entropy64(now)[commit].sum() - h_next)  # J = -C - H_next
    assert int(winner[0]) == max(objective, key=objective.get)
