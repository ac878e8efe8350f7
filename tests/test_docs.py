"""The README's code is what runs: its TRL and Hugging Face Trainer recipes are executed as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import tiny_llama

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(marker: str) -> list[str]:
    """The README's ```python blocks that contain `marker`."""
    return [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S) if marker in b]


def test_readme_trl_recipe_runs_as_written(
    packed_default: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The TRL block, executed exactly as the README prints it, in a directory where `packed/` is a `tfpack pack`
    output, with `model` and `tokenizer` bound (a tiny random Llama; the packaged tokenizer). The test budget (2 steps
    on the CPU, no reporting, no checkpoint) comes from the `SFTConfig` the block imports, not from edited text."""
    trl = pytest.importorskip("trl")
    from tfpack.packing.tokenizer import load_tokenizer

    class BudgetedConfig(trl.SFTConfig):  # type: ignore[misc]
        def __post_init__(self) -> None:
            self.max_steps, self.report_to, self.use_cpu, self.save_strategy = 2, [], True, "no"
            super().__post_init__()

    [block] = python_blocks("SFTTrainer")
    assert "from trl import SFTConfig" in block
    monkeypatch.setattr(trl, "SFTConfig", BudgetedConfig)
    os.symlink(packed_default, tmp_path / "packed")
    monkeypatch.chdir(tmp_path)
    namespace = {"model": tiny_llama(), "tokenizer": load_tokenizer("packaged-minilm", None).hf}
    exec(compile(block, str(README), "exec"), namespace)
    trainer = namespace["trainer"]
    assert isinstance(trainer.args, BudgetedConfig) and trainer.args.padding_free
    assert trainer.state.global_step == 2 and np.isfinite(trainer.state.log_history[-1]["train_loss"])


def test_readme_hf_trainer_recipe_runs_as_written(
    packed_default: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Hugging Face `Trainer` block, executed as the README prints it, with `model` bound; the same test budget
    through the `TrainingArguments` it imports, and its `Trainer` recorded to check the steps ran."""
    import transformers

    class BudgetedArguments(transformers.TrainingArguments):
        def __post_init__(self) -> None:
            self.max_steps, self.report_to, self.use_cpu, self.save_strategy = 2, [], True, "no"
            super().__post_init__()

    trainers: list[transformers.Trainer] = []

    class RecordedTrainer(transformers.Trainer):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            trainers.append(self)

    [block] = python_blocks("PackedCollator")
    assert "from transformers import Trainer, TrainingArguments" in block
    monkeypatch.setattr(transformers, "TrainingArguments", BudgetedArguments)
    monkeypatch.setattr(transformers, "Trainer", RecordedTrainer)
    os.symlink(packed_default, tmp_path / "packed")
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(README), "exec"), {"model": tiny_llama()})
    [trainer] = trainers
    assert trainer.state.global_step == 2 and np.isfinite(trainer.state.log_history[-1]["train_loss"])
