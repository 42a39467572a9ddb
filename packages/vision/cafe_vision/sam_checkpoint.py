"""Where the official SAM checkpoints are found on this machine.

Weights are never downloaded at run time: a checkpoint is an explicit path, or a file name looked
up in `$CAFE_SAM_CHECKPOINT_DIR`. A missing file fails with the download command to run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cafe_vision.sam_model import SAM_VIT_B, SAM_VIT_H, SAM_VIT_L, SamArch

CHECKPOINT_DIR_ENV_VAR = "CAFE_SAM_CHECKPOINT_DIR"
DOWNLOAD_ROOT = "https://dl.fbaipublicfiles.com/segment_anything"


@dataclass(frozen=True)
class SamCheckpoint:
    """An official SAM checkpoint: its architecture and file name (as published)."""

    arch: SamArch
    file_name: str

    @property
    def download_url(self) -> str:
        return f"{DOWNLOAD_ROOT}/{self.file_name}"

    def resolve(self, path: str | Path | None = None) -> Path:
        """The checkpoint file: `path` when given, else `$CAFE_SAM_CHECKPOINT_DIR/<file_name>`.

        Raises FileNotFoundError naming where it looked and how to get the file.
        """
        if path is not None:
            candidate = Path(path).expanduser()
            looked = f"the given path {candidate}"
        else:
            folder = os.environ.get(CHECKPOINT_DIR_ENV_VAR)
            if not folder:
                raise FileNotFoundError(
                    f"SAM checkpoint {self.file_name} not found: {CHECKPOINT_DIR_ENV_VAR} is not set. "
                    f"Fix: download it (wget {self.download_url}) into a folder and set "
                    f"{CHECKPOINT_DIR_ENV_VAR}=<that folder>, or pass the file's path explicitly."
                )
            candidate = Path(folder).expanduser() / self.file_name
            looked = f"{CHECKPOINT_DIR_ENV_VAR}={folder}"
        if not candidate.is_file():
            raise FileNotFoundError(
                f"SAM checkpoint {self.file_name} not found at {candidate} (from {looked}). "
                f"Fix: wget {self.download_url} -O {candidate}"
            )
        return candidate


SAM_VIT_B_CHECKPOINT = SamCheckpoint(SAM_VIT_B, "sam_vit_b_01ec64.pth")
SAM_VIT_L_CHECKPOINT = SamCheckpoint(SAM_VIT_L, "sam_vit_l_0b3195.pth")
SAM_VIT_H_CHECKPOINT = SamCheckpoint(SAM_VIT_H, "sam_vit_h_4b8939.pth")
