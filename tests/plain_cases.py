"""Plain torch files, as people have them: written by ``torch.save`` (3.11 with torch only).

``write_plain_files(folder)`` writes each of :data:`EXPECTED`'s files; the copies pinned in
``tests/data/plain/`` were written by it (torch 2.13.0, ``python -m tests.plain_cases tests/data/plain``)
and are what the interpreters without torch read. :data:`EXPECTED` is what ``validate`` says
each one is, checked against torch itself in tests/test_plain_files.py.
"""

from __future__ import annotations

import pathlib
import sys

__all__ = ["EXPECTED", "write_plain_files"]

EXPECTED: dict[str, str] = {
    "state_dict.pt": "a plain state dict of 4 tensors",
    "state_dict_legacy.pt": "a plain state dict of 4 tensors",
    "state_dict.bin": "a plain state dict of 4 tensors",
    "tensor.pt": "a single tensor (float32, shape [2, 3])",
    "linear.pt": "a pickled object of class torch.nn.modules.linear.Linear (2 tensors)",
    "training.pt": "a dict of 4 keys (16 tensors)",
    "loop.ckpt": "a dict of 5 keys (16 tensors)",
    "optimizer.pt": "an optimizer's state dict (state, param_groups) of 12 tensors",
    "scheduler.pt": "a dict of 8 keys (0 tensors)",
    "ds_named_tensors.pth": "a plain state dict of 2 tensors",
    "list.pt": "a list of 2 items (2 tensors)",
}


def write_plain_files(folder: pathlib.Path) -> None:
    """Write every file of :data:`EXPECTED` into ``folder`` (needs torch; the same bytes each time)."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    state = model.state_dict()
    torch.save(state, folder / "state_dict.pt")
    torch.save(state, folder / "state_dict_legacy.pt", _use_new_zipfile_serialization=False)
    torch.save(state, folder / "state_dict.bin")  # pytorch_model.bin
    torch.save(torch.arange(6.0).reshape(2, 3), folder / "tensor.pt")
    torch.save(torch.nn.Linear(2, 2), folder / "linear.pt")
    # PyTorch's tutorial's checkpoint: "optimizer_state_dict" is no DeepSpeed marker.
    torch.save(
        {"epoch": 3, "model_state_dict": state, "optimizer_state_dict": optimizer.state_dict(), "loss": 0.5},
        folder / "training.pt",
    )
    # A training loop's own: "optimizer" and "lr_scheduler" are DeepSpeed keys too, but generic.
    torch.save(
        {
            "model": state,
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(),
            "epoch": 3,
            "global_step": 12,
        },
        folder / "loop.ckpt",
    )
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")  # Trainer's optimizer.pt
    torch.save(scheduler.state_dict(), folder / "scheduler.pt")  # Trainer's scheduler.pt
    # Tensors named like DeepSpeed keys: a tensor value is never a DeepSpeed marker.
    torch.save({"ds_version": torch.zeros(1), "dp_world_size": torch.ones(2)}, folder / "ds_named_tensors.pth")
    torch.save([torch.zeros(2), torch.ones(3)], folder / "list.pt")


if __name__ == "__main__":
    write_plain_files(pathlib.Path(sys.argv[1]))
