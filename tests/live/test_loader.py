"""The fast loader builds exactly the model that ``from_pretrained`` builds, and fails clearly on bad files."""

from __future__ import annotations

import json
import shutil
import struct
import threading

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from live.loader import CheckpointError, load_model, parameters_on_meta, read_checkpoint, to_device


def _assert_same_model(ours: nn.Module, reference: nn.Module) -> None:
    ours_sd, ref_sd = ours.state_dict(), reference.state_dict()
    assert ours_sd.keys() == ref_sd.keys()
    for key, ref in ref_sd.items():
        assert ours_sd[key].dtype == ref.dtype, key
        assert torch.equal(ours_sd[key].cpu(), ref.cpu()), key
    # Non-persistent buffers (rotary frequencies) are not in the state dict; they must match too.
    ref_buffers = dict(reference.named_buffers())
    for key, buf in ours.named_buffers():
        assert torch.equal(buf.cpu(), ref_buffers[key].cpu()), key
    assert not any(p.is_meta for p in ours.parameters())
    assert not ours.training and not reference.training


def _logits(model: nn.Module, device: str = "cpu") -> torch.Tensor:
    ids = torch.tensor([[1, 17, 230, 45, 99, 3, 512]], device=device)
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("arch", ["opt", "llama", "gpt2"])
def test_same_weights_and_logits_as_from_pretrained(tiny_model_factory, arch):
    folder = tiny_model_factory(arch)
    ours = load_model(folder)
    reference = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    _assert_same_model(ours, reference)
    assert torch.equal(_logits(ours), _logits(reference))
    tied = ours.config.tie_word_embeddings
    assert (ours.get_output_embeddings().weight is ours.get_input_embeddings().weight) == tied


def test_dtype_conversion_matches_from_pretrained(tiny_llama_dir):
    ours = load_model(tiny_llama_dir, dtype=torch.bfloat16)
    reference = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.bfloat16, local_files_only=True)
    _assert_same_model(ours, reference)
    assert ours.dtype == torch.bfloat16


def test_sharded_checkpoint(tiny_model_dir, tmp_path):
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(tmp_path, max_shard_size="200KB")
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    assert (tmp_path / "model.safetensors.index.json").exists()
    _assert_same_model(load_model(tmp_path), load_model(tiny_model_dir))


def test_tensors_are_views_of_one_reused_buffer(tiny_model_dir):
    buffer = torch.empty(8 * 1024**2, dtype=torch.uint8)
    first = read_checkpoint(tiny_model_dir, allocate=lambda n: buffer)
    start, end = buffer.data_ptr(), buffer.data_ptr() + buffer.numel()
    for t in first.tensors.values():
        assert start <= t.data_ptr() and t.data_ptr() + t.numel() * t.element_size() <= end
    # The same buffer serves the next load, and a device copy owns its own memory.
    again = read_checkpoint(tiny_model_dir, allocate=lambda n: buffer)
    assert again.buffer is buffer
    copied = to_device(again, "cpu")
    name = next(iter(copied))
    assert torch.equal(copied[name], again.tensors[name])
    assert copied[name].data_ptr() != again.tensors[name].data_ptr()


def test_parameters_on_meta_is_local_to_its_thread():
    inside = threading.Event()
    release = threading.Event()
    seen = {}

    def build_elsewhere():
        inside.wait()
        seen["other_thread"] = nn.Linear(4, 4).weight.device.type
        release.set()

    other = threading.Thread(target=build_elsewhere)
    other.start()
    with parameters_on_meta():
        inside.set()
        release.wait(5)
        seen["this_thread"] = nn.Linear(4, 4).weight.device.type
        seen["buffer"] = nn.BatchNorm1d(4).running_mean.device.type
    other.join()
    assert seen == {"other_thread": "cpu", "this_thread": "meta", "buffer": "cpu"}
    assert nn.Linear(4, 4).weight.device.type == "cpu"


# --- corrupt checkpoints ---------------------------------------------------------------------------------

@pytest.fixture
def copy_of_tiny(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    return folder


def test_truncated_file_is_a_clear_error(copy_of_tiny):
    weights = copy_of_tiny / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*(truncated|does not fit)"):
        load_model(copy_of_tiny)


def test_garbage_header_is_a_clear_error(copy_of_tiny):
    weights = copy_of_tiny / "model.safetensors"
    data = bytearray(weights.read_bytes())
    (header_len,) = struct.unpack("<Q", data[:8])
    data[8:8 + header_len] = b"x" * header_len
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        load_model(copy_of_tiny)
    weights.write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match="too short"):
        load_model(copy_of_tiny)


def test_missing_weights_and_config_mismatch(copy_of_tiny):
    config = json.loads((copy_of_tiny / "config.json").read_text())
    config["hidden_size"] *= 2
    config["word_embed_proj_dim"] *= 2
    (copy_of_tiny / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not match config.json"):
        load_model(copy_of_tiny)
    (copy_of_tiny / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no .safetensors files"):
        load_model(copy_of_tiny)


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["opt", "llama"])
def test_cuda_load_from_pinned_buffer(tiny_model_factory, arch):
    folder = tiny_model_factory(arch)
    pinned = {}

    def allocate(nbytes):
        pinned["buffer"] = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        return pinned["buffer"]

    ckpt = read_checkpoint(folder, allocate)
    assert ckpt.buffer.is_pinned()
    ours = load_model(folder, device="cuda", allocate=allocate)
    assert all(p.device.type == "cuda" for p in ours.parameters())
    assert all(b.device.type == "cuda" for b in ours.buffers())
    reference = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).to("cuda").eval()
    _assert_same_model(ours, reference)
    assert torch.equal(_logits(ours, "cuda"), _logits(reference, "cuda"))
