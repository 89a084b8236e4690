"""The device key, precision auto, and reads of device values through the one helper."""
from __future__ import annotations

import pytest
import torch

import tartan.training.device as device_module
from tartan.config import load_config
from tartan.errors import TartanError
from tartan.training.device import HostReads, make_accelerator, resolve_device, resolve_precision, to_host


def test_auto_is_the_cpu_on_a_machine_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_asking_for_a_gpu_that_is_not_there_is_one_line_naming_the_way_out(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TartanError, match=f"device={name}, but this machine has no CUDA device.*device=cpu"):
        resolve_device(name)


def test_a_gpu_index_past_the_last_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(TartanError, match="has 2 CUDA device"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("value", ["gpu", "cuda:x", "tpu", "cuda:"])
def test_the_device_key_is_checked_where_it_is_read(value):
    with pytest.raises(TartanError, match="device must be auto, cpu, cuda or cuda:N"):
        load_config(None, [f"device={value}"])


def test_precision_auto_is_bf16_only_where_the_device_has_it(monkeypatch, capsys):
    cpu = torch.device("cpu")
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"
    assert resolve_precision("fp32", cpu) == "fp32"
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"
    assert capsys.readouterr().err == ""  # auto falls back silently
    assert resolve_precision("bf16", cpu) == "fp32"  # asked for: said so
    assert "no native bf16" in capsys.readouterr().err


def test_a_cuda_device_without_bf16_trains_in_fp16(monkeypatch, capsys):
    # with the loss scaler (tests/training/test_loop.py checks it)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert resolve_precision("bf16", torch.device("cuda")) == "fp16"
    assert "training in fp16" in capsys.readouterr().err
    assert resolve_precision("fp32", torch.device("cuda")) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"


def test_the_accelerator_follows_the_device_and_precision_asked_for(monkeypatch):
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: True)
    accelerator = make_accelerator("auto", "cpu")
    assert accelerator.device == torch.device("cpu") and accelerator.mixed_precision == "bf16"
    accelerator = make_accelerator("fp32", "cpu")  # another precision in the same process
    assert accelerator.mixed_precision == "no"


def test_every_read_through_to_host_is_counted():
    before = HostReads.count
    value = to_host(torch.ones(3, requires_grad=True) * 2)
    assert value.device.type == "cpu" and not value.requires_grad and value.tolist() == [2.0, 2.0, 2.0]
    assert HostReads.count == before + 1


def test_the_process_group_is_destroyed_before_the_interpreter_tears_down(tmp_path):
    # an exit hook registered before tartan's runs after it (atexit is last in, first out): it
    # sees whether tartan destroyed the process group that torchrun's environment made
    import subprocess
    import sys
    script = tmp_path / "one_process.py"
    script.write_text(
        "import atexit, os, socket, torch\n"
        "atexit.register(lambda: print('initialized at exit:', torch.distributed.is_initialized()))\n"
        "with socket.socket() as s:\n"
        "    s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]\n"
        "os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK='0', WORLD_SIZE='1',\n"
        "                  LOCAL_RANK='0', LOCAL_WORLD_SIZE='1')\n"
        "from tartan.training.device import make_accelerator\n"
        "make_accelerator(precision='fp32', device='cpu')\n"
        "print('initialized in the run:', torch.distributed.is_initialized())\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "initialized in the run: True" in result.stdout
    assert "initialized at exit: False" in result.stdout
