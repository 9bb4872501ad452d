"""``data:`` sections: where a prompt, SFT or preference dataset comes from and how to read it."""

from __future__ import annotations

from dataclasses import dataclass, field

DATA_FORMATS = ("auto", "jsonl", "json", "csv", "parquet", "hf")
DIALOGUE_MODES = ("auto", "hh", "none")
CANONICAL_FIELDS = ("prompt", "response", "chosen", "rejected", "images", "audio", "video")


@dataclass
class DataConfig:
    """A dataset.

    ``path`` is a local file (``.jsonl``, ``.json``, ``.csv``, ``.parquet``), a local directory
    (written by ``datasets.save_to_disk``, or holding data files), a Hugging Face hub dataset name,
    or a bundled set such as ``bundled:text/prompts_train``. ``fields`` maps our field names
    (prompt, response, chosen, rejected, images, audio, video) to the dataset's column names.
    ``dialogue: auto`` splits Anthropic HH transcripts (``\\n\\nHuman:`` / ``\\n\\nAssistant:``
    turns) into prompt and response when the dataset has no prompt column.
    """

    path: str = field(default="", metadata={"nonempty": True})
    format: str = field(default="auto", metadata={"choices": DATA_FORMATS})
    split: str = "train"
    name: str | None = None  # hub dataset config name
    revision: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    dialogue: str = field(default="auto", metadata={"choices": DIALOGUE_MODES})
    skip_rows: int = field(default=0, metadata={"ge": 0})  # rows read and dropped first (held-out slices)
    max_rows: int | None = field(default=None, metadata={"ge": 1})
    media_root: str = ""  # base for relative media paths (default: the dataset file's folder)
    check_media: bool = True

    def validate(self) -> None:
        from mmalign.errors import ConfigError

        for key, column in self.fields.items():
            if key not in CANONICAL_FIELDS:
                raise ConfigError(key="fields", problem=f"unknown field '{key}' (known: {', '.join(CANONICAL_FIELDS)})")
            if not isinstance(column, str) or not column:
                raise ConfigError(key="fields", problem=f"the column for '{key}' must be a non-empty name")
