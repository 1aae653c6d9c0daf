from __future__ import annotations

import itertools
from dataclasses import asdict

import pytest

from training.recipe import Recipe


def test_cosine_schedule_warms_up_then_decays_to_zero() -> None:
    recipe = Recipe(lr=0.01, schedule="cosine", warmup_epochs=1.0)
    spe, total = 10, 100
    lrs = [recipe.lr_at(s, total, spe) for s in range(total)]
    assert lrs[0] == pytest.approx(0.001)  # 1/10 of the way up
    assert lrs[9] == pytest.approx(0.01)  # peak at the end of the warm-up
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:])), "monotone decay after the warm-up"
    assert lrs[-1] < 0.01 * 1e-2
    assert Recipe(lr=0.01, schedule="constant").lr_at(57, total, spe) == 0.01


def test_warmup_is_capped_for_short_runs() -> None:
    recipe = Recipe(lr=0.01, warmup_epochs=5.0)
    lrs = [recipe.lr_at(s, 20, 20) for s in range(20)]  # one epoch: warm-up would be the whole run
    assert max(lrs) == pytest.approx(0.01) and lrs.index(max(lrs)) == 3  # capped at a fifth


def test_problems_name_every_bad_value_by_its_flag() -> None:
    assert Recipe().problems() == []
    assert Recipe(precision="bf16", schedule="constant", limit=10).problems() == []
    bad = Recipe(epochs=0, batch_size=-1, lr=0.0, limit=0, warmup_epochs=-1, schedule="step", precision="fp16")
    assert bad.problems() == [
        "--epochs must be positive",
        "--batch-size must be positive",
        "--lr must be positive",
        "--limit must be positive",
        "--warmup-epochs must be >= 0",
        "--schedule must be one of cosine, constant",
        "--precision must be one of fp32, bf16",
    ]


def test_a_recipe_saved_before_precision_existed_reads_back_as_fp32() -> None:
    saved = {k: v for k, v in asdict(Recipe(seed=3)).items() if k != "precision"}
    assert Recipe(**saved) == Recipe(seed=3, precision="fp32")
