"""`oracle-sudoku`: the uniform distribution over the valid 4x4 grids consistent with every visible digit.

It reads `sudoku_4x4`'s prompts unchanged (the tokenizer is tiny-llada-sudoku's): the puzzle is the grid of
four lines of four digits before the prompt's last line ("Write the solved grid ... </answer>.\n"), found
as that line's last occurrence in the canvas, and the answer is what follows it: `<answer>`, the 16 digits,
`</answer>`, then EOS at every later position (the tokens of `doc_to_target`). Every answer token but the
digits is certain. A digit's marginal is the share of the 288 valid grids, among those that keep every
given and every visible answer digit, that hold it there (enumeration: one [R, 288] match).

A canvas with no consistent grid (two visible digits that contradict each other, or a given) has a defined
output: uniform over 1-4 at every masked digit cell (the rest of the answer stays certain). That is what
lets a lookahead see a contradiction coming: it is the highest entropy a digit cell can have.
"""

import itertools
import math

import torch

from lm_eval_infogain.models.oracle import Distribution, check_answer_prompt
from lm_eval_infogain.tasks import sudoku

DIGITS = "1234"


def valid_grids() -> torch.Tensor:
    """The 288 valid 4x4 grids [288, 16], digits 1-4: every row filled with a permutation, kept when the
    columns and boxes hold each digit once too."""
    rows = list(itertools.permutations(range(1, 5)))
    grids = [sum(choice, ()) for choice in itertools.product(rows, repeat=4)]
    return torch.tensor([grid for grid in grids if sudoku.is_solved_grid(list(grid))], dtype=torch.long)


class SudokuOracle(Distribution):
    def __init__(self, tokenizer):
        super().__init__("oracle_sudoku")
        encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        self.vocab_size = len(tokenizer)
        self.eos_id, self.mask_id = tokenizer.eos_token_id, tokenizer.mask_token_id
        blank = {"Puzzle": "0" * sudoku.CELLS, "Solution": "1" * sudoku.CELLS}
        prompt = sudoku.doc_to_text(blank)
        self.tail = torch.tensor(encode(prompt.split(sudoku.grid_lines(blank["Puzzle"]) + "\n", 1)[1]))  # [L]
        grid_ids = encode(sudoku.grid_lines(blank["Puzzle"]) + "\n")
        self.given_offsets = torch.tensor([i - len(grid_ids) for i, t in enumerate(grid_ids) if t == grid_ids[0]])
        self.template = torch.tensor(encode(sudoku.doc_to_target(blank)))  # [A] the answer's tokens
        self.digit_ids = torch.tensor(encode(DIGITS))  # [4] token ids of 1-4
        self.digit_slots = (self.template == self.digit_ids[0]).nonzero().squeeze(1)  # [16]
        self.alphabet = self.digit_ids.tolist()
        digit_of = torch.full((self.vocab_size,), -1, dtype=torch.long)  # token -> digit (0 for '0'; -1: no digit)
        digit_of[encode("0")[0]] = 0
        digit_of[self.digit_ids] = torch.arange(1, 5)
        self.digit_of = digit_of
        self.grids = valid_grids()  # [288, 16]
        self.grid_digits = torch.nn.functional.one_hot(self.grids - 1, 4).float()  # [288, 16, 4]
        assert len(self.given_offsets) == sudoku.CELLS and len(self.digit_slots) == sudoku.CELLS

    def answer_start(self, canvas: torch.Tensor) -> torch.Tensor:
        """[R] canvas index right after the last occurrence of the prompt's last line in each row."""
        windows = canvas.unfold(1, len(self.tail), 1)  # [R, T - L + 1, L]
        hits = (windows == self.tail.to(canvas.device)).all(-1)  # [R, T - L + 1]
        check_answer_prompt(hits.any(-1), "the prompts of sudoku_4x4 (a 4x4 grid, then 'Write the solved grid "
                                          "as 16 digits, ... </answer>.')")
        index = torch.arange(hits.shape[1], device=canvas.device)
        return torch.where(hits, index, -1).max(-1).values + len(self.tail)  # [R]

    def read(self, canvas: torch.Tensor):
        """(canvas positions of the answer's tokens [R, A], which of them lie inside the canvas [R, A], which of
        the 288 grids are consistent with the givens and the visible answer [R, 288]; none when a visible
        answer token breaks the template)."""
        total = canvas.shape[1]
        start = self.answer_start(canvas)  # [R]
        givens = canvas.gather(1, (start - len(self.tail))[:, None] + self.given_offsets)  # [R, 16]
        given_digits = self.digit_of[givens]  # [R, 16]
        check_answer_prompt((given_digits >= 0).all(-1), "a sudoku_4x4 prompt whose grid holds digits 0-4")
        positions = start[:, None] + torch.arange(len(self.template))  # [R, A]
        inside = positions < total
        tokens = torch.where(inside, canvas.gather(1, positions.clamp(max=total - 1)), -1)  # [R, A]
        answer = tokens[:, self.digit_slots]  # [R, 16]
        answer_digit = torch.where(answer == self.mask_id, 0, self.digit_of[answer.clamp(min=0)])
        answer_digit = torch.where(answer < 0, 0, answer_digit)  # past the canvas: not visible
        fixed = torch.ones(len(self.template), dtype=torch.bool)
        fixed[self.digit_slots] = False  # the template's own digits are placeholders
        template_ok = ((tokens == self.template) | (tokens == self.mask_id) | (tokens < 0))[:, fixed].all(-1)  # [R]
        # past the answer: EOS (or still masked)
        after = torch.arange(total)[None] >= (start + len(self.template))[:, None]  # [R, T]
        tail_ok = (~after | (canvas == self.eos_id) | (canvas == self.mask_id)).all(-1)  # [R]
        # a grid is consistent when no cell holds a digit that a given or a visible answer digit forbids there
        forbidden = (self.forbids(given_digits) + self.forbids(answer_digit)).flatten(1)  # [R, 64]
        match = forbidden @ self.grid_digits.flatten(1).T == 0  # [R, 288]
        match &= ((answer_digit >= 1) | (answer == self.mask_id) | (answer < 0)).all(-1, keepdim=True)
        match &= (template_ok & tail_ok)[:, None]
        return positions, inside, match

    @staticmethod
    def forbids(digits: torch.Tensor) -> torch.Tensor:
        """[R, 16, 4] 1 where a cell's digit (1-4; 0: none) rules that digit out there."""
        shown = torch.nn.functional.one_hot(digits.clamp(min=0), 5)[..., 1:].float()  # [R, 16, 4]
        return (digits > 0)[..., None] * (1 - shown)

    def log_marginals(self, canvas: torch.Tensor, start: int = 0) -> torch.Tensor:
        canvas = canvas.cpu()
        rows, total = canvas.shape
        positions, inside, match = self.read(canvas)
        counts = match.sum(-1, keepdim=True)  # [R, 1]
        share = (match.float() @ self.grid_digits.flatten(1)).view(rows, -1, 4) / counts.clamp(min=1)[..., None]
        share = torch.where(counts[..., None] > 0, share, 0.25)  # no consistent grid: uniform over 1-4
        masked = canvas == self.mask_id  # [R, T]
        # certain tokens first: each position's own token if visible, the template's or EOS if masked
        expected = torch.full((rows, total), self.eos_id, dtype=torch.long)  # [R, T]
        before = torch.arange(total)[None] < positions[:, :1]  # [R, T] the prompt
        expected = torch.where(before, canvas, expected)
        row_index = torch.arange(rows)[:, None].expand_as(positions)
        expected[row_index[inside], positions[inside]] = self.template.expand_as(positions)[inside]
        expected = torch.where(masked, expected, canvas)
        log_probs = torch.full((rows, total - start, self.vocab_size), -math.inf)  # [R, W, V]
        log_probs.scatter_(2, expected[:, start:, None], 0.0)
        slots = positions[:, self.digit_slots]  # [R, 16]
        slot_inside = inside[:, self.digit_slots] & (slots >= start)
        slot_masked = slot_inside & masked.gather(1, slots.clamp(max=total - 1))  # [R, 16]
        r, c = slot_masked.nonzero(as_tuple=True)
        cells = torch.full((len(r), self.vocab_size), -math.inf)
        cells[:, self.digit_ids] = share[r, c].log()
        log_probs[r, slots[r, c] - start] = cells
        return log_probs

    def log_evidence(self, canvas: torch.Tensor) -> torch.Tensor:
        """[R] log of the number of valid grids consistent with the canvas (the uniform distribution's
        probability of the visible tokens, up to a constant); -inf when none is."""
        return self.read(canvas.cpu())[2].sum(-1).double().log()

    def best_log_probs(self, prompts: torch.Tensor, answer_length: int) -> list[float]:
        """Every completion of a puzzle is equally likely: -log(their number), per prompt [R, P]."""
        return (-self.log_evidence(prompts)).tolist()
