"""Refuse a compute device that does not exist here, before any work (never fall back quietly)."""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A device name torch does not know, or a device this machine does not have."""


def check_device_name(device: str | None) -> None:
    """The name parses as a torch device (``cpu``, ``cuda``, ``cuda:1``, ``mps``, ...)."""
    if device is None:
        return
    try:
        torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None


def check_device(device: str | None) -> None:
    """The device exists on this machine (``None``: the library's own choice, always fine)."""
    if device is None:
        return
    check_device_name(device)
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} asked for, but no CUDA GPU is visible here "
                              f"(torch.cuda.is_available() is False); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r} asked for, but this machine has "
                              f"{torch.cuda.device_count()} CUDA GPU(s) (cuda:0 ..)")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError(f"device {device!r} asked for, but MPS is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise DeviceError(f"device {device!r} is not supported here; use cpu, cuda, cuda:N or mps")


__all__ = ["DeviceError", "check_device", "check_device_name"]
