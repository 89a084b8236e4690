"""Where a run computes and in what precision, and the one way a value leaves the device.

`device`: auto (CUDA where present, else the CPU), cpu, cuda, cuda:N. `precision`: auto (bf16
where the device computes it natively, else fp16 on a GPU, else fp32), bf16, fp16, fp32. Everything else in tartan takes the
accelerator this module makes and never asks which device it is on.

Every read of a device value on the host inside training goes through `to_host`, which counts its
calls: on a GPU each read waits for the queued kernels to finish, so the loop reads only at log
steps and META-TARTAN one small vector per weight update. A test counts reads per step through it."""
from __future__ import annotations

import atexit
import re
import sys

import torch

from ..errors import TartanError

DEVICE_FORMAT = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device `name` stands for on this machine; a device that is not here is an error."""
    name = str(name).strip().lower()
    if not DEVICE_FORMAT.match(name):
        raise TartanError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TartanError(f"device={name}, but this machine has no CUDA device that torch can use "
                              f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); "
                              "device=cpu or device=auto trains on the CPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise TartanError(f"device={name}, but this machine has {torch.cuda.device_count()} CUDA device(s) "
                              f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return device


def has_bf16(device: torch.device) -> bool:
    """Whether the device computes bf16 natively (autocast would otherwise emulate it, slowly)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return cpu_has_bf16()


def cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device, warn: bool = True) -> str:
    """bf16, fp16 or fp32. `auto`: bf16 where the device computes it natively, else fp16 (with a
    gradient scaler) on a GPU, else fp32. An explicit bf16 on a device without it trains as auto
    would, with a warning (emulated bf16 is slower than fp32 and no more accurate)."""
    if precision in ("fp32", "fp16"):
        return precision
    if has_bf16(device):
        return "bf16"
    fallback = "fp16" if device.type == "cuda" else "fp32"
    if precision == "bf16" and warn:
        print(f"warning: {device.type} here has no native bf16 support; training in {fallback} "
              "(precision=auto silences this)", file=sys.stderr)
    return fallback


def make_accelerator(precision: str = "auto", device: str | torch.device = "auto"):
    """The accelerate Accelerator for a stage: its device, processes and autocast."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    target = device if isinstance(device, torch.device) else resolve_device(device)
    # silent: a run's precision is resolved (and a bf16 without hardware said) before it trains, and
    # evaluating a bf16 run on a machine without bf16 is no mistake of the user's
    mixed_precision = {"bf16": "bf16", "fp16": "fp16"}.get(resolve_precision(precision, target, warn=False), "no")
    cpu = target.type == "cpu"
    if not cpu and target.index is not None:
        # accelerate places a single process on the current CUDA device
        torch.cuda.set_device(target.index)
    # accelerate keeps one global state per process; a second run in the same process (tests, the
    # speed benchmark) may ask for another precision or device: drop the old state, keep the process group
    if AcceleratorState._shared_state:
        state = AcceleratorState()
        if state.mixed_precision != mixed_precision or (state.device.type == "cpu") != cpu:
            AcceleratorState._reset_state(reset_partial_state=(state.device.type == "cpu") != cpu)
    accelerator = Accelerator(cpu=cpu, mixed_precision=mixed_precision)
    end_process_group_at_exit()
    return accelerator


def gradient_scaler(accelerator) -> torch.amp.GradScaler:
    """The loss scaler fp16 needs (its small range would flush small gradients to zero); a
    pass-through for every other precision. Powers of two: scaling and unscaling change no bit."""
    return torch.amp.GradScaler(accelerator.device.type, enabled=accelerator.mixed_precision == "fp16")


def processes(device: str | torch.device = "auto"):
    """accelerate's PartialState (process index, barriers) for the device."""
    from accelerate import PartialState

    target = device if isinstance(device, torch.device) else resolve_device(device)
    state = PartialState(cpu=target.type == "cpu")
    end_process_group_at_exit()
    return state


def end_process_group_at_exit() -> None:
    """Destroy the process group (torchrun's) while the interpreter is still whole. Left to
    interpreter teardown, gloo's worker threads may release tensors after Python is gone and the
    process aborts ("terminate called without an active exception", SIGABRT) after a run that
    succeeded (seen once in CI, 3 processes on gloo)."""
    global _ending_registered
    if _ending_registered or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    _ending_registered = True
    atexit.register(_destroy_process_group)


_ending_registered = False


def _destroy_process_group() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


class HostReads:
    """How many device values training has read on the host (each a synchronisation on a GPU)."""

    count = 0


def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` on the CPU: the one read of device values inside training."""
    HostReads.count += 1
    return tensor.detach().to("cpu")
