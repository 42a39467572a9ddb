"""File names of an evaluation set in DreamBooth's layout (read by `cafe_pipelines.evaluate`).

DIR/<subject>/*.png|*.jpg           the subject's images; the first by name is the reference
DIR/prompts_{kind}.txt              the prompt list of subjects of that kind (object, live)
DIR/subjects.json | subjects.txt    each subject's class phrase and kind

Here, apart from the reader, so that a writer of sets (`cafe data toy`) names them without
importing the evaluation's models.
"""

from __future__ import annotations

KINDS = ("object", "live")
SUBJECTS_JSON_NAME = "subjects.json"
SUBJECTS_TEXT_NAME = "subjects.txt"


def prompts_file_name(kind: str) -> str:
    """The prompt list of subjects of `kind` (one of KINDS): `prompts_object.txt`, `prompts_live.txt`."""
    return f"prompts_{kind}.txt"
