"""LLaMA-Factory trains on `tfpack export --to llamafactory` through its own entry point (`run_exp`, the README's
recipe.yaml as written plus a tiny model and CPU settings), and the batches it feeds the model hold the packs
unchanged. Needs the `llamafactory` extra (`make test-trainers` builds its venv); skipped without it."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.export_checks import BatchRecorder, check_batches, save_tiny_model, shard_rows
from tfpack.cli import app

pytest.importorskip("llamafactory")


def import_tuner() -> types.ModuleType:
    """`llamafactory.train.tuner`. LLaMA-Factory 0.9.5 imports torchaudio at module level (for audio inputs only);
    torchaudio's last release, 2.11, cannot load its C library against the torch 2.13 CPU wheel CI installs, so where
    it fails to import, an empty module stands in for it: text SFT never calls it."""
    try:
        importlib.import_module("torchaudio")
    except OSError:
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    return importlib.import_module("llamafactory.train.tuner")


@pytest.mark.parametrize("mode", ["segment", "pack"])
def test_llamafactory_trains_on_the_export(mode: str, packed: Path, packed_default: Path, tmp_path: Path) -> None:
    from transformers import TrainerCallback

    tuner = import_tuner()
    out = packed if mode == "segment" else packed_default
    dest = tmp_path / "export"
    result = CliRunner().invoke(app, ["export", str(out), "--to", "llamafactory", "-o", str(dest)])
    assert result.exit_code == 0, result.stderr
    config = yaml.safe_load((dest / "recipe.yaml").read_text())
    assert config["tokenized_path"] == str(dest.resolve())
    config |= {
        "model_name_or_path": str(save_tiny_model(tmp_path / "model")),
        "output_dir": str(tmp_path / "ckpt"),
        "per_device_train_batch_size": 2,
        "num_train_epochs": 1,
        "learning_rate": 1e-3,
        "report_to": "none",
        "logging_steps": 1,
        "save_strategy": "no",
        "use_cpu": True,
        "overwrite_output_dir": True,
    }
    recorder = BatchRecorder()
    losses: list[float] = []

    class Record(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
            model.register_forward_pre_hook(recorder, with_kwargs=True)

        def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    tuner.run_exp(config, callbacks=[Record()])
    packs = shard_rows(out)
    assert len(recorder.batches) == (len(packs) + 1) // 2 and len(losses) > 0
    # segment: LLaMA-Factory turns the segment ids into a 4D block mask; pack: a 2D mask, one causal context
    assert {b["attention_mask"].dim() for b in recorder.batches} == {4 if mode == "segment" else 2}
    check_batches(recorder.batches, packs, pad_id=0)
