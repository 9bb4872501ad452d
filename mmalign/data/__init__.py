"""Datasets: prompt, SFT and preference sets from local files or HF datasets, the HH dialogue
format, multimodal records and the bundled synthetic tasks."""

from mmalign.data.hh import hh_messages, hh_turns, split_hh
from mmalign.data.loaders import load_preferences, load_prompts, load_sft
from mmalign.data.readers import read_rows
from mmalign.data.records import PreferenceRecord, PromptRecord, SFTRecord
from mmalign.data.tasks import bundled_path, resolve_path

__all__ = [
    "PreferenceRecord", "PromptRecord", "SFTRecord", "bundled_path", "hh_messages", "hh_turns",
    "load_preferences", "load_prompts", "load_sft", "read_rows", "resolve_path", "split_hh",
]
